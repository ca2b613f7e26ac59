// libbpf's messages: they go to the debug log, and the verifier's reason for rejecting a program
// is kept for the one-line error that says why a load (or a variant) failed.
#pragma once

#include <string>
#include <string_view>

namespace netmon {

// Routes libbpf's messages to log::debug (warnings too: start-up failures are reported as one
// clear line; --log-level debug shows the detail). libbpf keeps one print callback for the
// process; installing it again changes nothing.
void install_libbpf_print();

// The verifier's reason in one libbpf warning: a verifier log ends
// "...\nREASON\n-- END PROG LOAD LOG --", and the reason is its last line that is not one of the
// verifier's statistics ("processed ...", "verification time ..."). Empty when `message` is not
// a verifier log.
std::string_view verifier_reason(std::string_view message);

// Collects the verifier's reason for the last program it rejected while this object lives, on
// the thread that made it: one per load. libbpf_set_print() takes no context pointer, so the
// print callback finds its collector through a thread_local pointer that this object sets for
// its lifetime (and puts back on destruction): no namespace-scope state outlives the load, and
// a load on another thread would have its own.
class VerifierReasons {
 public:
  VerifierReasons();
  ~VerifierReasons();
  VerifierReasons(const VerifierReasons&) = delete;
  VerifierReasons& operator=(const VerifierReasons&) = delete;

  // The reason of the last verifier log seen since the last clear(); empty when none.
  const std::string& last() const { return last_; }
  // `: the verifier says "REASON"` for the last reason, to end an error with; empty when none.
  std::string said() const {
    return last_.empty() ? std::string() : ": the verifier says \"" + last_ + "\"";
  }
  void clear() { last_.clear(); }
  // One libbpf warning (called by the print callback; public for tests).
  void note(std::string_view message);

 private:
  std::string last_;
  VerifierReasons* previous_;
};

}  // namespace netmon
