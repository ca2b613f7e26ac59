#include "process/proc_reader.h"

#include <dirent.h>
#include <unistd.h>

#include <charconv>
#include <cstdlib>

#include "common/files.h"
#include "events/event.h"

namespace netmon {
namespace {

// The first `limit` bytes of a (small) proc file; nullopt when it cannot be opened or is not a
// regular file (a --proc-root copy could hold a FIFO or a device).
std::optional<std::string> read_file(const std::string& path, size_t limit = 65536) {
  auto text = read_regular_file_prefix(path, limit);
  if (!text) return std::nullopt;
  return std::move(*text);
}

template <typename T>
bool parse_number(std::string_view text, T& value, int base = 10) {
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value, base);
  return ec == std::errc() && end == text.data() + text.size();
}

// Splits on runs of spaces and tabs.
std::vector<std::string_view> split_fields(std::string_view text) {
  std::vector<std::string_view> fields;
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && (text[i] == ' ' || text[i] == '\t')) ++i;
    size_t j = i;
    while (j < text.size() && text[j] != ' ' && text[j] != '\t') ++j;
    if (j > i) fields.push_back(text.substr(i, j - i));
    i = j;
  }
  return fields;
}

}  // namespace

std::optional<ProcStat> parse_proc_stat(std::string_view text) {
  const size_t open = text.find('(');
  const size_t close = text.rfind(')');
  if (open == std::string_view::npos || close == std::string_view::npos || close < open) {
    return std::nullopt;
  }
  ProcStat st;
  st.comm = std::string(text.substr(open + 1, close - open - 1));
  // After ") ": field 3 (state) is fields[0], ppid (4) fields[1], starttime (22) fields[19].
  auto fields = split_fields(text.substr(close + 1));
  if (fields.size() < 20) return std::nullopt;
  if (!parse_number(fields[1], st.ppid)) return std::nullopt;
  if (!parse_number(fields[19], st.start_ticks)) return std::nullopt;
  return st;
}

bool parse_proc_status(std::string_view text, ProcessEntry& e) {
  int found = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string_view::npos) eol = text.size();
    std::string_view line = text.substr(pos, eol - pos);
    pos = eol + 1;
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    const std::string_view key = line.substr(0, colon);
    auto values = split_fields(line.substr(colon + 1));
    if (key == "Uid" || key == "Gid") {
      if (values.size() < 2) return false;
      uint32_t real = 0;
      uint32_t effective = 0;
      if (!parse_number(values[0], real) || !parse_number(values[1], effective)) return false;
      (key == "Uid" ? e.uid : e.gid) = real;
      (key == "Uid" ? e.euid : e.egid) = effective;
      ++found;
    } else if (key == "CapInh" || key == "CapPrm" || key == "CapEff") {
      if (values.size() != 1) return false;
      uint64_t caps = 0;
      if (!parse_number(values[0], caps, 16)) return false;
      (key == "CapInh"   ? e.cap_inheritable
       : key == "CapPrm" ? e.cap_permitted
                         : e.cap_effective) = caps;
      ++found;
    }
  }
  return found == 5;
}

ProcReader::ProcReader(std::string proc_root) : root_(std::move(proc_root)) {
  const long hz = sysconf(_SC_CLK_TCK);
  ns_per_tick_ = hz > 0 ? 1'000'000'000ull / static_cast<uint64_t>(hz) : 10'000'000ull;
}

std::optional<ProcessEntry> ProcReader::read(uint32_t pid) const {
  const std::string dir = root_ + "/" + std::to_string(pid);
  auto stat_text = read_file(dir + "/stat");
  if (!stat_text) return std::nullopt;
  auto st = parse_proc_stat(*stat_text);
  if (!st) return std::nullopt;

  ProcessEntry e;
  e.pid = pid;
  e.ppid = st->ppid;
  e.fork_start_ns = st->start_ticks * ns_per_tick_;
  e.image_start_ns = e.fork_start_ns;
  if (auto status = read_file(dir + "/status")) parse_proc_status(*status, e);
  if (auto loginuid = read_file(dir + "/loginuid")) {
    uint32_t auid = 0;
    std::string_view text = *loginuid;
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.remove_suffix(1);
    if (parse_number(text, auid)) e.auid = auid;
  }

  char target[4096];
  const ssize_t n = ::readlink((dir + "/exe").c_str(), target, sizeof(target) - 1);
  if (n > 0) {
    std::string_view path(target, static_cast<size_t>(n));
    constexpr std::string_view kDeleted = " (deleted)";
    if (path.size() > kDeleted.size() && path.substr(path.size() - kDeleted.size()) == kDeleted) {
      path.remove_suffix(kDeleted.size());
      e.secureexec |= kSecureExecFileless;
    }
    if (path.substr(0, 7) == "/memfd:") e.secureexec |= kSecureExecFileless;
    e.binary_path = std::string(path);
    e.filename = std::string(path_basename(path));
  } else {
    e.filename = st->comm;
  }
  if (e.euid != e.uid) e.secureexec |= kSecureExecSetuid;
  if (e.egid != e.gid) e.secureexec |= kSecureExecSetgid;
  if (auto cmdline = read_file(dir + "/cmdline", kArgsMaxBytes + 1)) {
    e.args = join_args(*cmdline, false);
  }
  e.exec_id = make_exec_id(pid, e.image_start_ns);
  return e;
}

void ProcReader::scan(const std::function<void(ProcessEntry&&)>& visit) const {
  DIR* dir = ::opendir(root_.c_str());
  if (!dir) return;
  while (dirent* ent = ::readdir(dir)) {
    uint32_t pid = 0;
    if (!parse_number(std::string_view(ent->d_name), pid) || pid == 0) continue;
    if (auto e = read(pid)) visit(std::move(*e));
  }
  ::closedir(dir);
}

}  // namespace netmon
