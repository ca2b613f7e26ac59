// What the record decoders share (decode.cpp, connection_decode.cpp, process_decode.cpp): the
// header check, the "records grow at their end" rule, and the task block. Internal to events/.
#pragma once

#include <cstddef>
#include <cstring>
#include <span>
#include <string>

#include "common/result.h"
#include "events/event.h"

extern "C" {
#include "netmon_events.h"
}

namespace netmon::records {

// The header of `record`: fails when the buffer is shorter than a header or the header's size is
// not the buffer's.
Result<nm_header> read_header(std::span<const std::byte> record);

// The part of `record` this build knows as `Rec`: fails when the record is shorter; bytes past
// sizeof(Rec) (fields a newer BPF side appended) are ignored.
template <typename Rec>
Result<Rec> read_known_prefix(std::span<const std::byte> record, const char* what) {
  if (record.size() < sizeof(Rec)) {
    return fail(std::string(what) + " record of " + std::to_string(record.size()) +
                " bytes is shorter than " + std::to_string(sizeof(Rec)));
  }
  Rec r{};
  std::memcpy(&r, record.data(), sizeof(r));
  return r;
}

TaskInfo to_task(const nm_task& t);

// The per-sensor decoders; `record` has passed read_header() and is of their type.
Result<ConnectionEvent> decode_connection(std::span<const std::byte> record);
Result<ExecEvent> decode_exec(std::span<const std::byte> record);
Result<ForkEvent> decode_fork(std::span<const std::byte> record);
Result<ExitEvent> decode_exit(std::span<const std::byte> record);

}  // namespace netmon::records
