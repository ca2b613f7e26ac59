// A socket's cookie read through another process's descriptor, made by the kernel if it had none
// yet: getsockopt(SO_COOKIE) on a copy of the descriptor (pidfd_getfd(), Linux 5.6,
// CAP_SYS_PTRACE). The start-up snapshot (bpf/snapshot.cpp) and the pipeline (an Accept without a
// cookie) use it so that every event of a connection carries the cookie its Close will.
#pragma once

#include <cstdint>

#include "common/unique_fd.h"

namespace netmon {

// A pidfd of `pid`; invalid when the process is gone.
UniqueFd open_process(uint32_t pid);

// The cookie of the socket at descriptor `fd` of `process` (a pidfd); 0 when the descriptor is
// gone or is not a socket.
uint64_t socket_cookie(const UniqueFd& process, uint32_t fd);

}  // namespace netmon
