// Result<T>: the return type of everything that can fail at run time.
#pragma once

#include <string>
#include <utility>

#include <tl/expected.hpp>

namespace netmon {

// A failure with a message fit for a log line or a one-line start-up error.
struct Error {
  std::string message;
  int code = 0;  // the errno behind it, when there is one
};

template <typename T>
using Result = tl::expected<T, Error>;

inline tl::unexpected<Error> fail(std::string message, int code = 0) {
  return tl::unexpected<Error>(Error{std::move(message), code});
}

}  // namespace netmon
