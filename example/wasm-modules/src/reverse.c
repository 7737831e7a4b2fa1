/* An IO buffer module: handle_buffer reverses its UTF-8 input code point by
 * code point, so multi-byte characters stay intact. */

#define BUFFER_SIZE 65536

static unsigned char buffer[BUFFER_SIZE];
static unsigned char reversed[BUFFER_SIZE];

__attribute__((export_name("get_io_buffer_ptr"))) unsigned char *
get_io_buffer_ptr(void) {
  return buffer;
}

/* Returns the output length, which equals the input length, or 0 when the
 * length is outside the buffer (or the input is empty). */
__attribute__((export_name("handle_buffer"))) int handle_buffer(int length) {
  if (length <= 0 || length > BUFFER_SIZE) {
    return 0;
  }
  int out = 0;
  int end = length;
  while (end > 0) {
    int start = end - 1;
    /* Continuation bytes of a UTF-8 sequence look like 10xxxxxx. */
    while (start > 0 && (buffer[start] & 0xC0) == 0x80) {
      start--;
    }
    for (int i = start; i < end; i++) {
      reversed[out++] = buffer[i];
    }
    end = start;
  }
  for (int i = 0; i < length; i++) {
    buffer[i] = reversed[i];
  }
  return length;
}
