// netmon-agent: wires the modules together; see app/agent.cpp for the run loop.
#include <cstdio>
#include <string>
#include <vector>

#include "app/agent.h"
#include "cli/options.h"
#include "common/log.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  auto options = netmon::parse_options(args, netmon::process_environment());
  if (!options) {
    netmon::log::error("configuration error: " + options.error().message);
    return 2;
  }
  if (options->show_help) {
    std::fputs(netmon::usage_text().c_str(), stdout);
    return 0;
  }
  if (options->show_version) {
    std::printf("netmon-agent %s\n", NETMON_VERSION_STRING);
    return 0;
  }
  if (options->print_config || options->check_config) {
    // The same validation as a start, short of the host and the kernel (run_agent()).
    if (auto valid = netmon::validate_config(*options); !valid) {
      netmon::log::error("configuration error: " + valid.error().message);
      return 2;
    }
    if (options->print_config) {
      std::fputs(netmon::render_config(*options).c_str(), stdout);
    } else {
      std::fputs("configuration is valid\n", stdout);
    }
    return 0;
  }
  netmon::log::set_level(options->log_level);
  return netmon::run_agent(*options);
}
