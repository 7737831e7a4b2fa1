/* An IO buffer module: reads {"line": "..."} and returns
 * {"output":"..."} with the line in upper case.
 *
 * Only ASCII letters change case; other characters, including non-ASCII
 * letters, are copied unchanged. Keys other than "line" may hold any JSON
 * value and are ignored. Invalid JSON, a missing "line" or a "line" that is
 * not a string makes handle_buffer return 0, which reports failure. */

#include <stddef.h>

#define BUFFER_SIZE 65536
#define MAX_DEPTH 64

static unsigned char buffer[BUFFER_SIZE];
static unsigned char line[BUFFER_SIZE];

/* A cursor over the input; every parse function returns 0 on invalid JSON. */
typedef struct {
  const unsigned char *at;
  const unsigned char *end;
} cursor;

__attribute__((export_name("get_io_buffer_ptr"))) unsigned char *
get_io_buffer_ptr(void) {
  return buffer;
}

static void skip_space(cursor *c) {
  while (c->at < c->end &&
         (*c->at == ' ' || *c->at == '\t' || *c->at == '\n' || *c->at == '\r')) {
    c->at++;
  }
}

static int expect(cursor *c, unsigned char ch) {
  skip_space(c);
  if (c->at >= c->end || *c->at != ch) {
    return 0;
  }
  c->at++;
  return 1;
}

static int hex_digit(unsigned char ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

static int read_hex4(cursor *c, unsigned *value) {
  if (c->end - c->at < 4) return 0;
  *value = 0;
  for (int i = 0; i < 4; i++) {
    int digit = hex_digit(*c->at++);
    if (digit < 0) return 0;
    *value = *value * 16 + (unsigned)digit;
  }
  return 1;
}

/* Appends code point cp as UTF-8; returns the new length or -1 if full. */
static int put_utf8(unsigned char *out, int length, int capacity, unsigned cp) {
  unsigned char bytes[4];
  int count;
  if (cp < 0x80) {
    bytes[0] = (unsigned char)cp;
    count = 1;
  } else if (cp < 0x800) {
    bytes[0] = (unsigned char)(0xC0 | (cp >> 6));
    bytes[1] = (unsigned char)(0x80 | (cp & 0x3F));
    count = 2;
  } else if (cp < 0x10000) {
    bytes[0] = (unsigned char)(0xE0 | (cp >> 12));
    bytes[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    bytes[2] = (unsigned char)(0x80 | (cp & 0x3F));
    count = 3;
  } else {
    bytes[0] = (unsigned char)(0xF0 | (cp >> 18));
    bytes[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    bytes[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    bytes[3] = (unsigned char)(0x80 | (cp & 0x3F));
    count = 4;
  }
  if (length + count > capacity) return -1;
  for (int i = 0; i < count; i++) out[length + i] = bytes[i];
  return length + count;
}

static int read_escape(cursor *c, unsigned *cp) {
  if (c->at >= c->end) return 0;
  unsigned char ch = *c->at++;
  switch (ch) {
    case '"': *cp = '"'; return 1;
    case '\\': *cp = '\\'; return 1;
    case '/': *cp = '/'; return 1;
    case 'b': *cp = '\b'; return 1;
    case 'f': *cp = '\f'; return 1;
    case 'n': *cp = '\n'; return 1;
    case 'r': *cp = '\r'; return 1;
    case 't': *cp = '\t'; return 1;
    case 'u': break;
    default: return 0;
  }
  if (!read_hex4(c, cp)) return 0;
  if (*cp >= 0xD800 && *cp < 0xDC00) {
    /* A high surrogate must be followed by an escaped low surrogate. */
    unsigned low;
    if (c->end - c->at < 2 || c->at[0] != '\\' || c->at[1] != 'u') return 0;
    c->at += 2;
    if (!read_hex4(c, &low) || low < 0xDC00 || low > 0xDFFF) return 0;
    *cp = 0x10000 + ((*cp - 0xD800) << 10) + (low - 0xDC00);
  } else if (*cp >= 0xDC00 && *cp <= 0xDFFF) {
    return 0;
  }
  return 1;
}

/* Parses a JSON string into out (may be NULL to skip); returns its length
 * or -1 when the string is invalid or does not fit. */
static int read_string(cursor *c, unsigned char *out, int capacity) {
  if (!expect(c, '"')) return -1;
  int length = 0;
  while (c->at < c->end && *c->at != '"') {
    unsigned cp = *c->at++;
    int escaped = cp == '\\';
    if (cp < 0x20) return -1;
    if (escaped && !read_escape(c, &cp)) return -1;
    if (out == NULL) continue;
    if (escaped) {
      length = put_utf8(out, length, capacity, cp);
      if (length < 0) return -1;
    } else {
      /* Raw bytes, including UTF-8 sequences, are copied as they are. */
      if (length >= capacity) return -1;
      out[length++] = (unsigned char)cp;
    }
  }
  if (c->at >= c->end) return -1;
  c->at++;
  return length;
}

static int skip_value(cursor *c, int depth);

static int skip_container(cursor *c, unsigned char close, int depth) {
  c->at++;
  if (expect(c, close)) return 1;
  do {
    if (close == '}') {
      if (read_string(c, NULL, 0) < 0 || !expect(c, ':')) return 0;
    }
    if (!skip_value(c, depth + 1)) return 0;
  } while (expect(c, ','));
  return expect(c, close);
}

static int skip_literal(cursor *c) {
  const unsigned char *start = c->at;
  while (c->at < c->end &&
         ((*c->at >= '0' && *c->at <= '9') || (*c->at >= 'a' && *c->at <= 'z') ||
          *c->at == '-' || *c->at == '+' || *c->at == '.' || *c->at == 'E')) {
    c->at++;
  }
  return c->at > start;
}

/* Skips any JSON value; numbers and literals are only checked loosely. */
static int skip_value(cursor *c, int depth) {
  skip_space(c);
  if (c->at >= c->end || depth > MAX_DEPTH) return 0;
  if (*c->at == '"') return read_string(c, NULL, 0) >= 0;
  if (*c->at == '{') return skip_container(c, '}', depth);
  if (*c->at == '[') return skip_container(c, ']', depth);
  return skip_literal(c);
}

static int is_line_key(const unsigned char *key, int length) {
  return length == 4 && key[0] == 'l' && key[1] == 'i' && key[2] == 'n' &&
         key[3] == 'e';
}

/* Parses the object and stores the decoded "line" in `line`; returns its
 * length, or -1 when the input is invalid or has no string "line". */
static int parse_line(int length) {
  cursor c = {buffer, buffer + length};
  unsigned char key[8];
  int line_length = -1;
  if (!expect(&c, '{')) return -1;
  if (expect(&c, '}')) return -1;
  do {
    cursor key_start = c;
    int key_length = read_string(&c, key, sizeof key);
    if (key_length < 0) {
      /* Keys longer than the buffer cannot be "line"; skip them. */
      c = key_start;
      if (read_string(&c, NULL, 0) < 0) return -1;
    }
    if (!expect(&c, ':')) return -1;
    if (key_length >= 0 && is_line_key(key, key_length)) {
      line_length = read_string(&c, line, BUFFER_SIZE);
      if (line_length < 0) return -1;
    } else if (!skip_value(&c, 0)) {
      return -1;
    }
  } while (expect(&c, ','));
  if (!expect(&c, '}')) return -1;
  skip_space(&c);
  return c.at == c.end ? line_length : -1;
}

static int put_text(int length, const char *text) {
  while (*text != '\0') {
    if (length >= BUFFER_SIZE) return -1;
    buffer[length++] = (unsigned char)*text++;
  }
  return length;
}

static int put_escaped(int length, unsigned char ch) {
  static const char hex[] = "0123456789abcdef";
  char escape[7] = {'\\', 0, 0, 0, 0, 0, 0};
  if (ch == '"' || ch == '\\') {
    escape[1] = (char)ch;
  } else if (ch == '\n') {
    escape[1] = 'n';
  } else if (ch == '\t') {
    escape[1] = 't';
  } else if (ch == '\r') {
    escape[1] = 'r';
  } else if (ch < 0x20) {
    escape[1] = 'u';
    escape[2] = '0';
    escape[3] = '0';
    escape[4] = hex[ch >> 4];
    escape[5] = hex[ch & 0xF];
  } else {
    if (ch >= 'a' && ch <= 'z') ch = (unsigned char)(ch - 'a' + 'A');
    if (length >= BUFFER_SIZE) return -1;
    buffer[length] = ch;
    return length + 1;
  }
  return put_text(length, escape);
}

/* Returns the output length, or 0 on invalid input or output too long. */
__attribute__((export_name("handle_buffer"))) int handle_buffer(int length) {
  if (length <= 0 || length > BUFFER_SIZE) return 0;
  int line_length = parse_line(length);
  if (line_length < 0) return 0;
  int out = put_text(0, "{\"output\":\"");
  for (int i = 0; i < line_length && out >= 0; i++) {
    out = put_escaped(out, line[i]);
  }
  if (out >= 0) out = put_text(out, "\"}");
  return out < 0 ? 0 : out;
}
