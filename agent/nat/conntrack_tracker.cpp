#include "nat/conntrack_tracker.h"

#include <linux/filter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>

#include <fcntl.h>
#include <sched.h>

#include <cerrno>
#include <cstring>
#include <limits>

#include "common/log.h"

namespace netmon {
namespace {

constexpr size_t kBufferBytes = 64 * 1024;  // a datagram of the event groups is far smaller
constexpr size_t kDrainBudget = 4096;       // messages per call of drain_locked()
constexpr auto kDumpTimeout = std::chrono::seconds(10);
constexpr int kPollMs = 500;  // the reader's longest sleep: purges and re-dumps happen after it
// Once a message is there, the reader lets more come for this long and reads them in one go: a
// wakeup per message cost the agent 5-25 us each on a VM (docs/performance.md). Nothing waits
// for it: a lookup that misses reads the socket itself.
constexpr int kBatchMs = 5;

uint64_t boot_now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_BOOTTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

std::string errno_text(int err) { return std::strerror(err); }

Result<UniqueFd> netfilter_socket() {
  UniqueFd fd(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_NETFILTER));
  if (!fd.valid()) return fail("netlink socket: " + errno_text(errno), errno);
  sockaddr_nl local{};
  local.nl_family = AF_NETLINK;
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&local), sizeof local) != 0) {
    return fail("netlink bind: " + errno_text(errno), errno);
  }
  return fd;
}

// An IPv4-mapped IPv6 address (::ffff:a.b.c.d) as the IPv4 address conntrack tracks.
IpAddress unmapped(const IpAddress& a) {
  if (a.family != IpAddress::Family::kV6) return a;
  static constexpr uint8_t kPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::memcmp(a.bytes.data(), kPrefix, sizeof kPrefix) != 0) return a;
  IpAddress v4;
  v4.family = IpAddress::Family::kV4;
  std::memcpy(v4.bytes.data(), a.bytes.data() + 12, 4);
  return v4;
}

struct Sockets {
  UniqueFd events;
  UniqueFd dumps;
};

Result<Sockets> make_sockets() {
  auto events = netfilter_socket();
  if (!events) return tl::unexpected(events.error());
  auto dumps = netfilter_socket();
  if (!dumps) return tl::unexpected(dumps.error());
  return Sockets{std::move(*events), std::move(*dumps)};
}

// The sockets, made in the network namespace at `path` ("": this one). A socket stays in the
// namespace it was made in; only a thread of our own enters the other one, and ends there.
Result<Sockets> make_sockets_in(const std::string& path) {
  if (path.empty()) return make_sockets();
  Result<Sockets> made = fail("not made");
  std::thread([&] {
    UniqueFd ns(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!ns.valid()) {
      made = fail("nat.netns " + path + ": " + errno_text(errno), errno);
      return;
    }
    if (::setns(ns.get(), CLONE_NEWNET) != 0) {
      made = fail("nat.netns " + path + ": entering it: " + errno_text(errno) +
                      (errno == EPERM ? " (needs CAP_SYS_ADMIN)" : ""),
                  errno);
      return;
    }
    made = make_sockets();
  }).join();
  return made;
}

}  // namespace

Result<std::unique_ptr<ConntrackTracker>> ConntrackTracker::open(const Settings& settings) {
  auto sockets = make_sockets_in(settings.netns_path);
  if (!sockets) return tl::unexpected(sockets.error());
  const int fd = sockets->events.get();
  // The filter first, so that no untranslated message is ever queued.
  const auto program = translated_entries_filter();
  sock_fprog fprog{};
  fprog.len = static_cast<unsigned short>(program.size());
  fprog.filter = const_cast<sock_filter*>(program.data());
  if (::setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &fprog, sizeof fprog) != 0) {
    return fail("conntrack socket filter: " + errno_text(errno), errno);
  }
  int bytes = settings.receive_buffer_bytes;
  if (::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof bytes) != 0) {
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);  // capped by rmem_max
  }
  for (int group : {NFNLGRP_CONNTRACK_NEW, NFNLGRP_CONNTRACK_DESTROY}) {
    if (::setsockopt(fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &group, sizeof group) != 0) {
      return fail("conntrack event group " + std::to_string(group) + ": " + errno_text(errno),
                  errno);
    }
  }
  std::unique_ptr<ConntrackTracker> tracker(
      new ConntrackTracker(std::move(sockets->events), std::move(sockets->dumps), settings));
  // Subscribed before the dump: an entry created meanwhile is in one or the other (or both).
  if (auto dumped = tracker->dump(); !dumped) return tl::unexpected(dumped.error());
  std::lock_guard lock(tracker->mutex_);
  tracker->drain_locked(std::numeric_limits<size_t>::max());
  return tracker;
}

ConntrackTracker::ConntrackTracker(UniqueFd events, UniqueFd dumps, const Settings& settings)
    : settings_(settings),
      events_(std::move(events)),
      dumps_(std::move(dumps)),
      table_(settings.max_entries),
      buffer_(kBufferBytes),
      wake_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}

ConntrackTracker::~ConntrackTracker() { stop(); }

void ConntrackTracker::start() {
  if (reader_.joinable()) return;
  reader_ = std::thread([this] { run(); });
}

void ConntrackTracker::stop() {
  stop_.store(true);
  if (wake_.valid()) {
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_.get(), &one, sizeof one);
  }
  if (reader_.joinable()) reader_.join();
}

bool ConntrackTracker::drain_locked(size_t budget) {
  const uint64_t started = boot_now_ns();
  for (size_t read = 0; read < budget; ++read) {
    const ssize_t n = ::recv(events_.get(), buffer_.data(), buffer_.size(), MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        drained_from_ns_ = started;
        return true;
      }
      if (errno == ENOBUFS) {
        // Messages were lost since the last complete read: what opened since then and is not
        // found is uncertain until the re-dump (the reader thread's) has read the table again.
        ++stats_.overflows;
        if (!resync_due_) {
          if (uncertain_to_ns_ < drained_from_ns_) uncertain_from_ns_ = drained_from_ns_;
          resync_due_ = true;
        }
        uncertain_to_ns_ = std::numeric_limits<uint64_t>::max();
        continue;
      }
      return false;  // unexpected: leave the state as it is, the reader thread tries again
    }
    const auto datagram = std::span<const std::byte>(buffer_.data(), static_cast<size_t>(n));
    const uint64_t now = boot_now_ns();
    auto walked = for_each_netlink_message(datagram, [&](std::span<const std::byte> message) {
      auto entry = parse_conntrack_message(message);
      if (!entry) {
        ++stats_.malformed;
        return true;
      }
      if (entry->kind == ConntrackMessageKind::kOther) return true;
      ++stats_.messages;
      if (!table_.apply(*entry, now)) {
        // Full: a miss can no longer be told from a refused entry.
        if (!resync_due_) {
          if (uncertain_to_ns_ < drained_from_ns_) uncertain_from_ns_ = drained_from_ns_;
          uncertain_to_ns_ = now;
        }
      }
      return true;
    });
    if (!walked) ++stats_.malformed;
  }
  return false;
}

Result<void> ConntrackTracker::dump() {
  const int fd = dumps_.get();
  std::vector<std::byte> buffer(kBufferBytes * 4);
  // What an earlier dump that gave up left unread.
  for (int stale = 0; stale < 1 << 16; ++stale) {
    if (::recv(fd, buffer.data(), buffer.size(), MSG_DONTWAIT) < 0 && errno != EINTR) break;
  }
  const uint32_t sequence = static_cast<uint32_t>(boot_now_ns());
  const auto request = conntrack_dump_request(sequence);
  const uint64_t started = boot_now_ns();
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (::sendto(fd, request.data(), request.size(), 0, reinterpret_cast<sockaddr*>(&kernel),
               sizeof kernel) < 0) {
    return fail("conntrack dump request: " + errno_text(errno), errno);
  }
  const auto deadline = std::chrono::steady_clock::now() + kDumpTimeout;
  std::vector<ConntrackEntry> translated;
  uint64_t read_entries = 0;
  uint64_t malformed = 0;
  bool done = false;
  while (!done) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return fail("conntrack dump: no end after 10 s");
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) < 0 && errno != EINTR) {
      return fail("conntrack dump: poll: " + errno_text(errno), errno);
    }
    const ssize_t n = ::recv(fd, buffer.data(), buffer.size(), MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) continue;
      return fail("conntrack dump: " + errno_text(errno), errno);
    }
    std::string error;
    auto walked = for_each_netlink_message(
        std::span<const std::byte>(buffer.data(), static_cast<size_t>(n)),
        [&](std::span<const std::byte> message) {
          nlmsghdr header;
          std::memcpy(&header, message.data(), sizeof header);
          if (header.nlmsg_seq != sequence) return true;  // an earlier dump's
          if (header.nlmsg_type == NLMSG_DONE) {
            done = true;
            return false;
          }
          if (header.nlmsg_type == NLMSG_ERROR) {
            int code = 0;
            if (message.size() >= sizeof header + sizeof code) {
              std::memcpy(&code, message.data() + sizeof header, sizeof code);
            }
            error = code == 0 ? "an empty error" : errno_text(-code);
            return false;
          }
          auto entry = parse_conntrack_message(message);
          if (!entry) {
            ++malformed;
            return true;
          }
          if (entry->kind != ConntrackMessageKind::kNew) return true;
          ++read_entries;
          if ((entry->source_translated() || entry->destination_translated()) && entry->zone == 0 &&
              translated.size() < settings_.max_entries) {
            translated.push_back(*entry);
          }
          return true;
        });
    if (!error.empty()) return fail("conntrack dump: " + error);
    if (!walked) return fail("conntrack dump: " + walked.error().message);
  }
  std::lock_guard lock(mutex_);
  const uint64_t now = boot_now_ns();
  for (const ConntrackEntry& entry : translated) table_.apply(entry, now);
  stats_.messages += read_entries;
  stats_.malformed += malformed;
  ++stats_.dumps;
  if (resync_due_) {
    // Everything that existed when the dump began is in; what opened before and is missing now
    // stays uncertain.
    resync_due_ = false;
    uncertain_to_ns_ = started;
  }
  return {};
}

void ConntrackTracker::run() {
  auto last_purge = std::chrono::steady_clock::now();
  bool dump_failed_logged = false;
  while (!stop_.load()) {
    pollfd fds[2] = {{events_.get(), POLLIN, 0}, {wake_.get(), POLLIN, 0}};
    if (::poll(fds, 2, kPollMs) > 0 && (fds[0].revents & POLLIN) != 0) {
      pollfd wake{wake_.get(), POLLIN, 0};
      ::poll(&wake, 1, kBatchMs);  // a stop ends the wait
    }
    if (stop_.load()) break;
    bool resync = false;
    {
      std::lock_guard lock(mutex_);
      drain_locked(kDrainBudget);
      resync = resync_due_;
    }
    if (resync) {
      if (auto dumped = dump(); !dumped && !dump_failed_logged) {
        dump_failed_logged = true;
        log::warn("conntrack: re-reading the table after lost messages failed (" +
                  dumped.error().message + "); translations stay uncertain until it works");
      }
    }
    const auto now = std::chrono::steady_clock::now();
    if (now - last_purge >= std::chrono::seconds(1)) {
      last_purge = now;
      const uint64_t grace = std::chrono::nanoseconds(kDestroyedGrace).count();
      const uint64_t boot = boot_now_ns();
      std::lock_guard lock(mutex_);
      table_.purge_destroyed(boot > grace ? boot - grace : 0);
    }
  }
}

NatResult ConntrackTracker::translate(const ConnectionEvent& e, NatTranslation& out) noexcept {
  ConntrackTuple tuple;
  tuple.src = unmapped(e.saddr);
  tuple.dst = unmapped(e.daddr);
  tuple.sport = e.sport;
  tuple.dport = e.dport;
  const bool outbound = e.direction == Direction::kOutbound;
  // The entry appeared before the connection was reported open: look up by the open time.
  uint64_t opened_ns = e.boot_ns;
  if (e.kind == ConnKind::kClose && e.close.open_boot_ns != 0) opened_ns = e.close.open_boot_ns;

  std::lock_guard lock(mutex_);
  auto found = table_.find(tuple, outbound);
  if (!found && opened_ns >= drained_from_ns_) {
    drain_locked(kDrainBudget);
    found = table_.find(tuple, outbound);
  }
  NatResult result = NatResult::kNotTranslated;
  if (found) {
    out = *found;
    result = NatResult::kTranslated;
    if (e.kind == ConnKind::kClose) table_.closed(tuple, outbound);
  } else if (opened_ns >= drained_from_ns_ ||
             (uncertain_to_ns_ != 0 && opened_ns >= uncertain_from_ns_ &&
              opened_ns <= uncertain_to_ns_)) {
    result = NatResult::kLost;  // could not read far enough, or messages were lost
  }
  ++stats_.lookups[static_cast<size_t>(result)];
  return result;
}

ConntrackStats ConntrackTracker::stats() const {
  std::lock_guard lock(mutex_);
  ConntrackStats s = stats_;
  s.entries = table_.size();
  s.refused = table_.refused();
  return s;
}

}  // namespace netmon
