// The connect errors the metrics count with a series of their own
// (netmon_connections_failed_total, netmon_edge_connection_failures_total): one list for both.
#pragma once

#include <array>
#include <cstddef>
#include <string>
#include <string_view>

#include "events/format.h"

namespace netmon {

// Connect errors with a series of their own (netmon_connections_failed_total,
// netmon_edge_connection_failures_total); any other is "other".
inline constexpr std::array<std::string_view, 10> kConnectErrors = {
    "ECONNREFUSED", "ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH", "ECONNRESET",
    "ECONNABORTED", "EACCES",    "EPERM",        "ENETDOWN",    "EHOSTDOWN"};
inline constexpr size_t kConnectErrorSlots = kConnectErrors.size() + 1;  // + "other"

// The slot of `error` (a positive errno) in kConnectErrors, kConnectErrors.size() for "other".
inline size_t connect_error_slot(int error) {
  const std::string name = connect_error_name(error);
  for (size_t i = 0; i < kConnectErrors.size(); ++i) {
    if (kConnectErrors[i] == name) return i;
  }
  return kConnectErrors.size();
}

// The `error` label's value of a slot.
inline std::string connect_error_label(size_t slot) {
  return slot < kConnectErrors.size() ? std::string(kConnectErrors[slot]) : "other";
}

}  // namespace netmon
