/* A WASI command that shows what the driver's sandbox allows.
 *
 * It greets $HELLO_NAME on stdout, prints its argv, writes a line to stderr,
 * then prints the first line of the file named by argv[1] (or $HELLO_FILE).
 * A file it cannot open is reported on stderr and ends the program with exit
 * code 3. Otherwise it exits with $HELLO_EXIT_CODE, or 0. */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void print_first_line(const char *path) {
  FILE *file = fopen(path, "r");
  if (file == NULL) {
    fprintf(stderr, "cannot open %s: %s\n", path, strerror(errno));
    exit(3);
  }
  char line[256];
  if (fgets(line, sizeof line, file) == NULL) {
    line[0] = '\0';
  }
  line[strcspn(line, "\n")] = '\0';
  printf("%s: %s\n", path, line);
  fclose(file);
}

int main(int argc, char **argv) {
  const char *name = getenv("HELLO_NAME");
  printf("hello, %s\n", name != NULL ? name : "world");

  printf("argv:");
  for (int i = 0; i < argc; i++) {
    printf(" %s", argv[i]);
  }
  printf("\n");
  fflush(stdout);

  fprintf(stderr, "hello_wasi: this line goes to stderr\n");

  const char *path = argc > 1 ? argv[1] : getenv("HELLO_FILE");
  if (path != NULL) {
    print_first_line(path);
  }

  const char *code = getenv("HELLO_EXIT_CODE");
  fflush(stdout);
  exit(code != NULL ? atoi(code) : 0);
}
