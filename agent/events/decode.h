// Decoding of ring-buffer records. Pure functions (no state, no I/O). A record that decodes
// allocates nothing: the events are plain values, and an ExecEvent's views point into the record.
// A rejected record allocates its error message (Error::message, a std::string).
//
// Sizes: bpf/netmon_events.h promises that a record only grows at its end and states its size in
// its header. So the header's size must equal the buffer's; a record shorter than the struct this
// build knows for its type is rejected; a longer one (written by a newer BPF side) is read up to
// what this build knows and its tail is ignored. An exec record is a fixed part followed by the
// path and the args, whose lengths are in the fixed part: it grows at the end of its fixed part,
// which is hdr.size - path_len - args_len bytes, must be at least sizeof(nm_exec_record) and a
// whole number of 8-byte words (as every struct of the header), and is followed by the path.
#pragma once

#include <cstddef>
#include <span>

#include "common/result.h"
#include "events/event.h"

namespace netmon {

// Decodes one NM_REC_CONNECTION record (the connection sensor's decoder, connection_decode.cpp).
// Fails, without reading past `record`, when the record is shorter than its header or than the
// connection record this build knows, is of another type, states a size other than the buffer's,
// or holds out-of-range enum values.
Result<ConnectionEvent> decode_record(std::span<const std::byte> record);

// Decodes any record by the type in its header, with the same checks; the process records (exec,
// fork, exit) are the process sensor's (process_decode.cpp). An exec record's path and args
// lengths must each be within its bound and fit the record as described above. Views in an
// ExecEvent point into `record`.
Result<KernelEvent> decode(std::span<const std::byte> record);

}  // namespace netmon
