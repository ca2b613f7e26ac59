// The agent's signals (docs/deployment.md). Stop (drain, summary, exit 0): SIGTERM (the kubelet,
// systemd), SIGINT (Ctrl-C) and SIGHUP (a closed terminal, or `kill -HUP` meant as "reload": the
// configuration is read at start only, so a restart is the reload). SIGUSR1 asks for a status
// line. SIGUSR2, and the signals whose default action would end the agent without a summary but
// that nobody sends it on purpose, are ignored and logged. SIGQUIT keeps its default (a core
// dump, for a hung agent). SIGPIPE is ignored: a closed stdout is a write error (EPIPE).
//
// The handlers only store to lock-free atomics; the run loop reads them.
#pragma once

#include <atomic>
#include <string>

namespace netmon {

// Installs the handlers; call first, so that a stop signal during the start-up is not lost.
void install_signal_handlers();

// Set by a stop signal, never cleared.
const std::atomic<bool>& stop_flag();
// The signal that set stop_flag(); 0 when none did.
int stop_signal();
// Whether SIGUSR1 arrived since the last call.
bool take_status_request();
// The last ignored signal since the last call (to log it once); 0 when none.
int take_ignored_signal();

// "SIGTERM", ...; "signal N" for one without a name here.
std::string signal_name(int sig);

}  // namespace netmon
