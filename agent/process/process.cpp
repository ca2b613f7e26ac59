#include "process/process.h"

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

std::string make_exec_id(uint32_t pid, uint64_t start_boot_ns) {
  const uint64_t truncated = start_boot_ns / kExecIdTickNs * kExecIdTickNs;
  return base64_encode(std::to_string(pid) + ":" + std::to_string(truncated));
}

ProcessObject process_from_task(const TaskInfo& task) {
  ProcessObject p;
  p.pid = task.pid;
  p.tid = task.tid;
  p.ppid = task.ppid;
  p.uid = task.uid;
  p.euid = task.euid;
  p.gid = task.gid;
  p.egid = task.egid;
  p.auid = task.auid;
  p.start_ns = task.start_ns;
  p.filename = std::string(task.comm_view());
  p.exec_id = make_exec_id(task.pid, task.start_ns);
  return p;
}

}  // namespace netmon
