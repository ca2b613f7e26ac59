#include "bpf/probe.h"

#include <malloc.h>

#include <algorithm>
#include <string>
#include <vector>

#include "bpf/kernel_features.h"
#include "bpf/libbpf_log.h"
#include "bpf/loader.h"
#include "bpf/ring_reader.h"
#include "bpf/sensors/sensor.h"
#include "common/text.h"

namespace netmon {

struct Probe::Impl {
  std::unique_ptr<LoadedProgram> program;
  std::unique_ptr<RingReader> ring;  // reads program's ring buffer map
};

std::string_view hook_variant_name(HookVariant variant) {
  switch (variant) {
    case HookVariant::kAuto:
      return "auto";
    case HookVariant::kTpBtf:
      return "tp_btf";
    case HookVariant::kTracepoint:
      return "tracepoint";
    case HookVariant::kFexit:
      return "fexit";
    case HookVariant::kRawTp:
      return "raw_tp";
  }
  return "?";
}

namespace {

std::string variant_list(const Sensor& h) {
  std::string out = std::string("auto, ") + std::string(hook_variant_name(h.preferred)) + ", " +
                    std::string(hook_variant_name(h.fallback));
  if (h.last_resort != HookVariant::kAuto)
    out += ", " + std::string(hook_variant_name(h.last_resort));
  return out;
}

}  // namespace

Result<HookVariants> parse_hook_variants(std::string_view text) {
  HookVariants v;
  if (text == "auto") return v;
  if (text == "tp_btf" || text == "tracepoint") {  // the state hook, as before per-hook choice
    v.state = text == "tp_btf" ? HookVariant::kTpBtf : HookVariant::kTracepoint;
    return v;
  }
  std::vector<std::string_view> seen(sensors().size());  // the item that set each hook
  for (size_t pos = 0, comma = 0; comma != std::string_view::npos; pos = comma + 1) {
    comma = text.find(',', pos);
    const std::string_view item = text.substr(pos, comma == text.npos ? text.npos : comma - pos);
    const size_t eq = item.find('=');
    const std::string_view hook = item.substr(0, eq);
    size_t index = sensors().size();
    for (size_t i = 0; i < sensors().size(); ++i) {
      if (hook == sensors()[i]->name) index = i;
    }
    const Sensor* spec = index < sensors().size() ? sensors()[index] : nullptr;
    if (eq == std::string_view::npos || !spec) {
      return fail(quoted(item) +
                  " is not one of auto, tp_btf, tracepoint or HOOK=VARIANT,... with HOOK one "
                  "of state, accept, process");
    }
    const std::string_view name = item.substr(eq + 1);
    HookVariant chosen;
    if (name == "auto") {
      chosen = HookVariant::kAuto;
    } else if (name == hook_variant_name(spec->preferred)) {
      chosen = spec->preferred;
    } else if (name == hook_variant_name(spec->fallback)) {
      chosen = spec->fallback;
    } else if (spec->last_resort != HookVariant::kAuto &&
               name == hook_variant_name(spec->last_resort)) {
      chosen = spec->last_resort;
    } else {
      return fail(quoted(name) + " is not a variant of the " + std::string(spec->name) + " hook (" +
                  variant_list(*spec) + ")");
    }
    std::string_view& before = seen[index];
    if (!before.empty()) {
      return fail("the " + std::string(spec->name) + " hook is given twice (" + quoted(before) +
                  ", " + quoted(item) + ")");
    }
    before = item;
    v.*(spec->field) = chosen;
  }
  return v;
}

std::string hook_variants_text(const HookVariants& variants) {
  std::string out;
  for (const Sensor* h : sensors()) {
    const HookVariant v = variants.*(h->field);
    if (v == HookVariant::kAuto) continue;
    if (!out.empty()) out += ',';
    out += std::string(h->name) + "=" + std::string(hook_variant_name(v));
  }
  return out.empty() ? "auto" : out;
}

Result<uint32_t> parse_fault_skip_state(std::string_view text) {
  uint32_t bits = 0;
  if (text.empty()) return bits;
  for (size_t start = 0; start <= text.size();) {
    const size_t comma = std::min(text.find(',', start), text.size());
    const std::string_view word = text.substr(start, comma - start);
    if (word == "open") {
      bits |= NM_FAULT_OPEN;
    } else if (word == "end") {
      bits |= NM_FAULT_END;
    } else {
      return fail("NETMON_FAULT_SKIP_STATE: '" + std::string(word) +
                  "' is not a change class (open, end)");
    }
    start = comma + 1;
  }
  return bits;
}

Probe::Probe(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Probe::~Probe() {
  if (!impl_) return;
  impl_->ring.reset();     // before the maps it reads
  impl_->program.reset();  // detaches every program, frees every map
}

Result<std::unique_ptr<Probe>> Probe::start(const ProbeOptions& options, RecordSink& sink) {
  install_libbpf_print();
  if (!kernel_btf_present()) {
    return fail(
        "kernel BTF not found at /sys/kernel/btf/vmlinux: netmon needs a kernel built with "
        "CONFIG_DEBUG_INFO_BTF=y");
  }
  ensure_tracefs();
  if (std::vector<std::string> missing = missing_kernel_features(); !missing.empty()) {
    return fail(unsupported_kernel_message(kernel_release(), missing));
  }
  auto impl = std::make_unique<Impl>();
  auto program = load_sensors(options, read_kernel_facts());
  if (!program) return fail(program.error().message);
  impl->program = std::move(*program);
  if (options.snapshot) impl->program->load_snapshot(options);

  // Loading parsed the kernel's BTF (megabytes, more than once when variants were probed) and
  // freed it, but the allocator keeps freed heap resident: hand it back before the ring buffer
  // (mapped twice, 8 MiB of RSS by default) is mapped on top, or the start-up peak adds both.
  ::malloc_trim(0);
  auto ring = RingReader::open(impl->program->events_fd(), impl->program->events_bytes(), sink);
  if (!ring) return fail(ring.error().message);
  impl->ring = std::move(*ring);
  return std::unique_ptr<Probe>(new Probe(std::move(impl)));
}

Result<int> Probe::poll(int timeout_ms) { return impl_->ring->poll(timeout_ms); }

RingFill Probe::ring_fill() const { return impl_->ring->fill(); }

KernelCounters Probe::counters() const { return impl_->program->counters(); }

Result<SnapshotStats> Probe::snapshot(const std::function<bool()>& room) {
  return impl_->program->snapshot(room);
}

bool Probe::check_observer() { return impl_->program->check_observer(); }

const std::vector<AttachedHook>& Probe::hooks() const { return impl_->program->hooks(); }

const std::vector<ChosenVariant>& Probe::variants() const { return impl_->program->variants(); }

std::vector<MapMemory> Probe::map_memory() const { return impl_->program->map_memory(); }

}  // namespace netmon
