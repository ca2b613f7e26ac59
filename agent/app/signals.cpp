#include "app/signals.h"

#include <signal.h>

namespace netmon {
namespace {

std::atomic<bool> g_stop{false};
std::atomic<int> g_stop_signal{0};     // the signal that set g_stop
std::atomic<bool> g_status{false};     // SIGUSR1: log a status line
std::atomic<int> g_ignored_signal{0};  // the last ignored signal, to log once

static_assert(std::atomic<int>::is_always_lock_free && std::atomic<bool>::is_always_lock_free,
              "signal handlers only store to lock-free atomics");

void on_stop_signal(int sig) {
  g_stop_signal.store(sig);
  g_stop.store(true);
}
void on_status_signal(int) { g_status.store(true); }
void on_ignored_signal(int sig) { g_ignored_signal.store(sig); }

void handle_signal(int sig, void (*handler)(int), int flags) {
  struct sigaction sa {};
  sa.sa_handler = handler;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = flags;
  sigaction(sig, &sa, nullptr);
}

}  // namespace

void install_signal_handlers() {
  for (const int sig : {SIGTERM, SIGINT, SIGHUP}) {
    handle_signal(sig, on_stop_signal, 0);  // no SA_RESTART: the poll wakes up with EINTR
  }
  // SA_RESTART: the agent keeps running; other threads' system calls should not see EINTR.
  handle_signal(SIGUSR1, on_status_signal, SA_RESTART);
  for (const int sig : {SIGUSR2, SIGALRM, SIGVTALRM, SIGPROF, SIGIO, SIGPWR}) {
    handle_signal(sig, on_ignored_signal, SA_RESTART);
  }
  signal(SIGPIPE, SIG_IGN);
}

const std::atomic<bool>& stop_flag() { return g_stop; }
int stop_signal() { return g_stop_signal.load(); }
bool take_status_request() { return g_status.exchange(false); }
int take_ignored_signal() { return g_ignored_signal.exchange(0); }

std::string signal_name(int sig) {
  switch (sig) {
    case SIGTERM:
      return "SIGTERM";
    case SIGINT:
      return "SIGINT";
    case SIGHUP:
      return "SIGHUP";
    case SIGUSR2:
      return "SIGUSR2";
    case SIGALRM:
      return "SIGALRM";
    case SIGVTALRM:
      return "SIGVTALRM";
    case SIGPROF:
      return "SIGPROF";
    case SIGIO:
      return "SIGIO";
    case SIGPWR:
      return "SIGPWR";
    default:
      return "signal " + std::to_string(sig);
  }
}

}  // namespace netmon
