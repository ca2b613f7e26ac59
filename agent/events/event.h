// Typed C++ forms of the kernel's records (bpf/netmon_events.h), as decode_record() yields them.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>
#include <variant>

namespace netmon {

enum class ConnKind : uint8_t { kEstablish, kAccept, kClose, kFailed };
enum class Direction : uint8_t { kOutbound, kInbound };

// A task's credentials and capabilities: the one C++ declaration of these fields (the kernel's is
// struct nm_task). TaskInfo, ProcessEntry (process/process.h) and the JSON writer's process
// identity derive from it, so that they are copied as one value.
struct Credentials {
  uint32_t uid = 0;  // real uid
  uint32_t euid = 0;
  uint32_t gid = 0;
  uint32_t egid = 0;
  uint32_t auid = 0xffffffff;  // login uid; 4294967295 when unset or unknown
  uint64_t cap_effective = 0;  // capability bit sets
  uint64_t cap_permitted = 0;
  uint64_t cap_inheritable = 0;

  bool operator==(const Credentials&) const = default;
};

// The task that opened or accepted a connection, as the kernel saw it then.
struct TaskInfo : Credentials {
  uint32_t pid = 0;  // thread group id
  uint32_t tid = 0;
  uint32_t ppid = 0;
  uint64_t start_ns = 0;  // thread group leader's start, CLOCK_BOOTTIME
  uint64_t cgroup_id = 0;
  std::array<char, 16> comm{};  // NUL padded

  std::string_view comm_view() const;
};

struct IpAddress {
  enum class Family : uint8_t { kV4, kV6 };
  Family family = Family::kV4;
  std::array<uint8_t, 16> bytes{};  // network order; IPv4 in the first 4 bytes
};

enum class ClosedBy : uint8_t { kUnknown, kLocal, kRemote };

// What the kernel knew about a connection when it closed (Close events only).
struct CloseStats {
  uint64_t open_boot_ns = 0;  // when it was reported open (Establish/Accept)
  uint64_t bytes_sent = 0;    // payload bytes acknowledged by the peer
  uint64_t bytes_received = 0;
  uint32_t srtt_us = 0;
  uint32_t retransmits = 0;
  ClosedBy closed_by = ClosedBy::kUnknown;
  bool reset = false;
};

struct ConnectionEvent {
  uint64_t boot_ns = 0;  // CLOCK_BOOTTIME of the event
  ConnKind kind = ConnKind::kEstablish;
  Direction direction = Direction::kOutbound;
  bool owner_known = false;  // task is valid
  TaskInfo task;
  uint64_t cookie = 0;
  IpAddress saddr;  // local end
  IpAddress daddr;  // remote end
  uint16_t sport = 0;
  uint16_t dport = 0;
  int32_t error = 0;  // kFailed: positive errno, 0 when the connect was given up locally
  // kClose; and on a preexisting open event, the statistics so far and when the socket was made
  // (open_boot_ns; closed_by and reset unused).
  CloseStats close;
  // An open event (kEstablish/kAccept) of the start-up snapshot: the connection existed before
  // the agent attached (issue #21).
  bool preexisting = false;
  // The kernel did not say when the connection opened: open_boot_ns is the agent's start (a
  // preexisting open event, and its Close).
  bool open_from_agent = false;
  // kAccept read by the accept() tracepoints without a cookie: the accepted descriptor + 1 in
  // the owner's process (0: none), for the pipeline to have the cookie made.
  uint32_t accepted_fd = 0;

  // Milliseconds from open to close (kClose).
  uint64_t duration_ms() const {
    return boot_ns > close.open_boot_ns ? (boot_ns - close.open_boot_ns) / 1'000'000 : 0;
  }
};

// How an exec changed privileges (flags; see enum nm_secureexec).
enum SecureExec : uint32_t {
  kSecureExecSetuid = 1u << 0,
  kSecureExecSetgid = 1u << 1,
  kSecureExecFileCaps = 1u << 2,
  kSecureExecFileless = 1u << 3,
};

// A process image started. The views point into the ring buffer and are valid only while the
// record is being handled.
struct ExecEvent {
  uint64_t boot_ns = 0;  // exec time: the new image's start time
  TaskInfo task;
  uint32_t secureexec = 0;
  std::string_view binary_path;
  std::string_view raw_args;  // NUL-separated argv, argv[0] included
  bool path_truncated = false;
  bool args_truncated = false;
};

// A new process (not a thread).
struct ForkEvent {
  uint64_t boot_ns = 0;
  TaskInfo child;  // child.ppid: the forking process; child.start_ns: the child's start
  uint64_t parent_start_ns = 0;
};

// The last thread of a process exited.
struct ExitEvent {
  uint64_t boot_ns = 0;
  uint32_t pid = 0;
  uint64_t start_ns = 0;
};

using KernelEvent = std::variant<ConnectionEvent, ExecEvent, ForkEvent, ExitEvent>;

}  // namespace netmon
