// The cost of one syscall round trip, for the accept hook's sys_exit variant (a BPF program at
// every syscall exit of the machine, docs/performance.md): N getppid() calls in a tight loop on
// one thread, the nanoseconds per call on stdout. getppid() does almost nothing in the kernel,
// so what a program at sys_exit adds is most of the difference between two runs.
//
//   netmon-syscall-cost [CALLS]     default 5000000, at most 1000000000
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

int main(int argc, char** argv) {
  long calls = argc > 1 ? strtol(argv[1], NULL, 10) : 5000000;
  if (calls <= 0 || calls > 1000000000) {
    fprintf(stderr, "usage: %s [CALLS] (1 to 1000000000)\n", argv[0]);
    return 2;
  }
  const double start = now_ns();
  for (long i = 0; i < calls; ++i) syscall(SYS_getppid);  // not the libc wrapper: no caching
  const double end = now_ns();
  printf("%.1f\n", (end - start) / (double)calls);
  return 0;
}
