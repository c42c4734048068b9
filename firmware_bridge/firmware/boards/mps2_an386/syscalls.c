// The few system calls newlib's C library may reach. There is no heap: _sbrk refuses, so
// a malloc anywhere returns NULL instead of silently taking RAM the figures do not show.

#include <errno.h>
#include <sys/stat.h>

#include "board.h"

void* _sbrk(int increment) {
  (void)increment;
  errno = ENOMEM;
  return (void*)-1;
}

int _write(int fd, const char* data, int len) {
  (void)fd;
  uart_write(data, (size_t)len);
  return len;
}

int _read(int fd, char* data, int len) {
  (void)fd;
  (void)data;
  (void)len;
  errno = EIO;
  return -1;
}

int _close(int fd) {
  (void)fd;
  return -1;
}

int _fstat(int fd, struct stat* st) {
  (void)fd;
  st->st_mode = S_IFCHR;
  return 0;
}

int _isatty(int fd) {
  (void)fd;
  return 1;
}

int _lseek(int fd, int offset, int whence) {
  (void)fd;
  (void)offset;
  (void)whence;
  return 0;
}

int _getpid(void) { return 1; }

int _kill(int pid, int sig) {
  (void)pid;
  (void)sig;
  board_reset();
}

void _exit(int code) {
  (void)code;
  board_reset();
}
