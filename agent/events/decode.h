// Decoding of ring-buffer records. Pure functions (no state, no I/O). A record that decodes
// allocates nothing: the events are plain values, and an ExecEvent's views point into the record.
// A rejected record allocates its error message (Error::message, a std::string).
#pragma once

#include <cstddef>
#include <span>

#include "common/result.h"
#include "events/event.h"

namespace netmon {

// Decodes one NM_REC_CONNECTION record. Fails, without reading past `record`, when the record is
// shorter than its header, is of another type, states a size other than the buffer's or the
// struct's, or holds out-of-range enum values.
Result<ConnectionEvent> decode_record(std::span<const std::byte> record);

// Decodes any record by the type in its header, with the same checks; an exec record's size must
// equal its fixed part plus its stated path and args lengths, each within its bound. Views in an
// ExecEvent point into `record`.
Result<KernelEvent> decode(std::span<const std::byte> record);

}  // namespace netmon
