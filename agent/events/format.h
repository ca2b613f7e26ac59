// Text forms of event fields.
#pragma once

#include <string>
#include <string_view>

#include "events/event.h"

namespace netmon {

// "127.0.0.1", "::1", "2001:db8::1" (inet_ntop forms). IPv4-mapped IPv6 addresses are
// written as plain IPv4 ("::ffff:10.0.0.1" -> "10.0.0.1").
void append_address(std::string& out, const IpAddress& address);
std::string format_address(const IpAddress& address);

// The symbolic name of a connect error: "ECONNREFUSED", "ETIMEDOUT", ...; "ECONNABORTED" for 0
// (the connecting process gave up first); "E<number>" for a value without a name.
std::string connect_error_name(int error);

}  // namespace netmon
