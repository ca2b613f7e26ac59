#include "common/socket_cookie.h"

#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace netmon {

UniqueFd open_process(uint32_t pid) {
  return UniqueFd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
}

uint64_t socket_cookie(const UniqueFd& process, uint32_t fd) {
  if (!process.valid()) return 0;
  const UniqueFd copy(static_cast<int>(::syscall(SYS_pidfd_getfd, process.get(), fd, 0)));
  if (!copy.valid()) return 0;
  uint64_t cookie = 0;
  socklen_t size = sizeof cookie;
  if (::getsockopt(copy.get(), SOL_SOCKET, SO_COOKIE, &cookie, &size) != 0) return 0;
  return cookie;
}

}  // namespace netmon
