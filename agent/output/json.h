// JSON encoding of events: one object per line, appended to a caller-owned buffer so that the
// hot path reuses its allocation.
#pragma once

#include <string>
#include <string_view>

#include "common/clock.h"
#include "events/event.h"
#include "k8s/pods.h"  // Attribution: plain types, no kubelet client
#include "process/process.h"

namespace netmon {

// Appends `s` as a JSON string literal (quotes included), so that any byte sequence yields valid
// JSON on one line. Valid UTF-8 is copied; control characters are escaped (\n, \t, \r, \u00XX);
// each byte that is not part of valid UTF-8 becomes the four characters \xHH (lowercase hex;
// "\\xHH" in the JSON), as Python's bytes.decode("utf-8", "backslashreplace") gives: never a
// character the bytes do not hold (docs/events.md). Allocates only when `out` grows.
void append_json_string(std::string& out, std::string_view s);

// The `network_event.type` value: "TcpConnectionEstablish", "TcpConnectionAccept",
// "TcpConnectionClose" or "TcpConnectionFailed".
std::string_view event_type_name(ConnKind kind);

// The kind of an event line append_event_line() wrote, from its network_event.type (the first
// one in the line); kEstablish for a line that has none. For counting, not for parsing.
ConnKind event_kind_of_line(std::string_view line);

// What an event line is made of besides the kernel record.
struct EventContext {
  // The owner's entry in the process table; null: the object carries what the record knows
  // (ids, credentials, command name, start time, exec_id). Ids, credentials and capabilities
  // always come from the record (their values when the connection was opened).
  const ProcessEntry* process = nullptr;
  const ProcessEntry* parent = nullptr;  // null: "parent": null
  int last_cap = 40;                     // the kernel's cap_last_cap, for ANY_CAPS
  // The owner's container and pod: process.container_id and the `pod` object. May be null.
  const Attribution* attribution = nullptr;
  std::string_view node_name{};  // "": no node_name field
  std::string_view rule{};       // the matching rule's name; "": no rule field
  bool pod_labels = true;        // false: the pod's labels are written as {}
};

// Appends one event as a JSON object followed by '\n'.
void append_event_line(std::string& out, const ConnectionEvent& event, const EventContext& context,
                       const BootClock& clock);

}  // namespace netmon
