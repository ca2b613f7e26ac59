#include "bpf/libbpf_log.h"

#include <bpf/libbpf.h>

#include <cstdarg>
#include <cstdio>

#include "common/log.h"

namespace netmon {
namespace {

// The collector of the load running on this thread, if any (see VerifierReasons).
thread_local VerifierReasons* t_reasons = nullptr;

int libbpf_print(enum libbpf_print_level level, const char* format, va_list args) noexcept {
  if (!log::enabled(log::Level::kDebug) && level != LIBBPF_WARN) return 0;
  // Verifier logs arrive as one message of up to megabytes: size the buffer to fit.
  va_list copy;
  va_copy(copy, args);
  const int n = vsnprintf(nullptr, 0, format, copy);
  va_end(copy);
  if (n <= 0) return 0;
  std::string line(static_cast<size_t>(n) + 1, '\0');
  vsnprintf(line.data(), line.size(), format, args);
  line.resize(static_cast<size_t>(n));
  if (level == LIBBPF_WARN && t_reasons) t_reasons->note(line);
  while (!line.empty() && line.back() == '\n') line.pop_back();
  log::debug("libbpf: " + line);
  return 0;
}

}  // namespace

void install_libbpf_print() { libbpf_set_print(libbpf_print); }

std::string_view verifier_reason(std::string_view text) {
  const size_t end = text.find("-- END PROG LOAD LOG --");
  if (end == std::string_view::npos) return {};
  text = text.substr(0, end);
  // The last line that is not one of the verifier's statistics.
  while (!text.empty()) {
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.remove_suffix(1);
    const size_t nl = text.rfind('\n');
    const std::string_view line = nl == std::string_view::npos ? text : text.substr(nl + 1);
    if (!line.starts_with("processed ") && !line.starts_with("verification time")) return line;
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(0, nl);
  }
  return {};
}

VerifierReasons::VerifierReasons() : previous_(t_reasons) { t_reasons = this; }

VerifierReasons::~VerifierReasons() { t_reasons = previous_; }

void VerifierReasons::note(std::string_view message) {
  if (const std::string_view reason = verifier_reason(message); !reason.empty()) {
    last_ = std::string(reason);
  }
}

}  // namespace netmon
