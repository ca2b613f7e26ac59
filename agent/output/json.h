// JSON encoding of events: one object per line, appended to a caller-owned buffer so that the
// hot path reuses its allocation.
#pragma once

#include <string>
#include <string_view>

#include "common/clock.h"
#include "events/event.h"
#include "process/process.h"

namespace netmon {

// Appends `s` as a JSON string literal (quotes included). Control characters and invalid UTF-8
// bytes are escaped (\u00XX), so any byte sequence yields valid JSON on one line.
void append_json_string(std::string& out, std::string_view s);

// The `network_event.type` value: "TcpConnectionEstablish", "TcpConnectionAccept",
// "TcpConnectionClose" or "TcpConnectionFailed".
std::string_view event_type_name(ConnKind kind);

// What an event line is made of besides the kernel record.
struct EventContext {
  const ProcessObject* process = nullptr;  // null: written as an object with what the record has
  const ProcessObject* parent = nullptr;   // null: "parent": null
};

// Appends one event as a JSON object followed by '\n'.
void append_event_line(std::string& out, const ConnectionEvent& event, const EventContext& context,
                       const BootClock& clock);

}  // namespace netmon
