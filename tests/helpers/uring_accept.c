/*
 * netmon-uring-accept: accepts one TCP connection through io_uring (IORING_OP_ACCEPT), for the
 * integration test of accepts that bypass the accept syscalls.
 *
 *   netmon-uring-accept [ADDRESS]   (default 127.0.0.1)
 *
 * Listens on ADDRESS with an ephemeral port, prints "port N" on stdout, accepts one connection
 * within 20 s, prints "accepted FD", closes it and exits 0. Exits 1 with a message on any error
 * (77 when io_uring is unavailable here, e.g. disabled by kernel.io_uring_disabled).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int fail(const char* what, int err) {
  fprintf(stderr, "netmon-uring-accept: %s: %s\n", what, strerror(err));
  return 1;
}

int main(int argc, char** argv) {
  const char* address = argc > 1 ? argv[1] : "127.0.0.1";
  struct sockaddr_in addr = {.sin_family = AF_INET};
  socklen_t len = sizeof(addr);
  struct __kernel_timespec timeout = {.tv_sec = 20};
  struct io_uring ring;
  struct io_uring_cqe* cqe;
  struct io_uring_sqe* sqe;
  int listener, ret, fd;

  if (inet_pton(AF_INET, address, &addr.sin_addr) != 1) {
    fprintf(stderr, "netmon-uring-accept: not an IPv4 address: %s\n", address);
    return 1;
  }
  listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener < 0) return fail("socket", errno);
  if (bind(listener, (struct sockaddr*)&addr, sizeof(addr)) || listen(listener, 8) ||
      getsockname(listener, (struct sockaddr*)&addr, &len))
    return fail("listen", errno);

  ret = io_uring_queue_init(4, &ring, 0);
  if (ret < 0) {
    fprintf(stderr, "netmon-uring-accept: io_uring unavailable: %s\n", strerror(-ret));
    return 77;
  }
  sqe = io_uring_get_sqe(&ring);
  io_uring_prep_accept(sqe, listener, NULL, NULL, SOCK_CLOEXEC);
  ret = io_uring_submit(&ring);
  if (ret != 1) return fail("io_uring_submit", ret < 0 ? -ret : EIO);

  printf("port %u\n", ntohs(addr.sin_port));
  fflush(stdout);

  ret = io_uring_wait_cqe_timeout(&ring, &cqe, &timeout);
  if (ret < 0) return fail("waiting for the accept", -ret);
  fd = cqe->res;
  io_uring_cqe_seen(&ring, cqe);
  if (fd < 0) return fail("accept", -fd);
  printf("accepted %d\n", fd);
  fflush(stdout);
  close(fd);
  io_uring_queue_exit(&ring);
  close(listener);
  return 0;
}
