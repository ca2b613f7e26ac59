#include "process/process.h"

#include <array>
#include <charconv>
#include <string_view>

#include "common/files.h"
#include "events/event.h"

namespace netmon {

std::string base64_encode(std::string_view data) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((data.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= data.size(); i += 3) {
    const uint32_t v = (static_cast<uint8_t>(data[i]) << 16) |
                       (static_cast<uint8_t>(data[i + 1]) << 8) | static_cast<uint8_t>(data[i + 2]);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  const size_t rest = data.size() - i;
  if (rest > 0) {
    uint32_t v = static_cast<uint8_t>(data[i]) << 16;
    if (rest == 2) v |= static_cast<uint8_t>(data[i + 1]) << 8;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += rest == 2 ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string make_exec_id(uint32_t pid, uint64_t image_start_ns) {
  return base64_encode(std::to_string(pid) + ":" + std::to_string(image_start_ns));
}

std::string join_args(std::string_view raw, bool truncated) {
  if (raw.size() > kArgsMaxBytes) {
    raw = raw.substr(0, kArgsMaxBytes);
    truncated = true;
  }
  // Drop a trailing NUL (argv's terminator), then argv[0].
  if (!raw.empty() && raw.back() == '\0') raw.remove_suffix(1);
  const size_t first = raw.find('\0');
  std::string out;
  if (first != std::string_view::npos) {
    out.assign(raw.substr(first + 1));
    for (char& c : out) {
      if (c == '\0') c = ' ';
    }
  }
  if (truncated) out += kArgsTruncatedMarker;
  return out;
}

std::string_view path_basename(std::string_view path) {
  const size_t slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

namespace {

constexpr std::array<std::string_view, 41> kCapNames = {
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
};

}  // namespace

void append_capabilities(std::string& out, uint64_t caps, int last_cap) {
  if (caps == 0) return;
  if (last_cap >= 0 && last_cap < 64) {
    const uint64_t all = last_cap == 63 ? ~0ull : (1ull << (last_cap + 1)) - 1;
    if ((caps & all) == all) {
      out += "ANY_CAPS";
      return;
    }
  }
  bool first = true;
  for (int bit = 0; bit < 64; ++bit) {
    if (!(caps & (1ull << bit))) continue;
    if (!first) out += " | ";
    first = false;
    if (bit < static_cast<int>(kCapNames.size())) {
      out += kCapNames[static_cast<size_t>(bit)];
    } else {
      out += "CAP_" + std::to_string(bit);
    }
  }
}

std::string format_capabilities(uint64_t caps, int last_cap) {
  std::string out;
  append_capabilities(out, caps, last_cap);
  return out;
}

void append_secureexec(std::string& out, uint32_t flags) {
  static constexpr std::pair<uint32_t, std::string_view> kNames[] = {
      {kSecureExecSetuid, "SETUID"},
      {kSecureExecSetgid, "SETGID"},
      {kSecureExecFileCaps, "FILE_CAPS"},
      {kSecureExecFileless, "FILELESS_EXEC"},
  };
  bool first = true;
  for (const auto& [flag, name] : kNames) {
    if (!(flags & flag)) continue;
    if (!first) out += " | ";
    first = false;
    out += name;
  }
}

std::string format_secureexec(uint32_t flags) {
  std::string out;
  append_secureexec(out, flags);
  return out;
}

int read_last_cap(const std::string& proc_root) {
  const int fallback = static_cast<int>(kCapNames.size()) - 1;
  auto text = read_regular_file(proc_root + "/sys/kernel/cap_last_cap", 64);
  if (!text) return fallback;
  std::string_view digits = *text;
  while (!digits.empty() && (digits.back() == '\n' || digits.back() == ' '))
    digits.remove_suffix(1);
  int value = -1;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (ec == std::errc() && end == digits.data() + digits.size() && value >= 0 && value < 64) {
    return value;
  }
  return fallback;
}

}  // namespace netmon
