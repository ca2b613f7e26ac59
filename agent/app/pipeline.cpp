#include "app/pipeline.h"

#include "common/log.h"
#include "events/decode.h"
#include "output/json.h"

namespace netmon {

Pipeline::Pipeline(LineWriter& writer, size_t batch_bytes)
    : writer_(writer), batch_bytes_(batch_bytes) {
  batch_.reserve(batch_bytes_ + 4096);
}

void Pipeline::on_record(std::span<const std::byte> record) noexcept {
  ++stats_.records;
  Result<ConnectionEvent> event = decode_record(record);
  if (!event) {
    ++stats_.decode_errors;
    // A bad record means a BPF/agent mismatch: say so, but not once per record.
    if (decode_errors_logged_ < 5) {
      ++decode_errors_logged_;
      log::error("dropping a malformed kernel record: " + event.error().message);
    }
    return;
  }
  ++stats_.events_by_kind[static_cast<size_t>(event->kind)];
  if (!event->owner_known) ++stats_.events_without_process;
  try {
    append_event_line(batch_, *event, EventContext{}, clock_);
    ++batch_lines_;
    if (batch_.size() >= batch_bytes_) flush();
  } catch (const std::bad_alloc&) {
    ++stats_.decode_errors;
  }
}

void Pipeline::flush() {
  if (batch_lines_ == 0) return;
  writer_.submit(batch_, batch_lines_);
  batch_lines_ = 0;
}

}  // namespace netmon
