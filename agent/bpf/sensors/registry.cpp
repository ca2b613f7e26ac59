#include "bpf/sensors/accept.h"
#include "bpf/sensors/connection_state.h"
#include "bpf/sensors/process.h"
#include "bpf/sensors/sensor.h"

namespace netmon {
namespace {

constexpr const Sensor* kSensors[] = {
    &kConnectionStateSensor,
    &kAcceptSensor,
    &kProcessSensor,
};

}  // namespace

std::span<const Sensor* const> sensors() { return kSensors; }

std::vector<SensorProgram> chosen_programs(const Sensor& sensor, const HookVariants& variants,
                                           const KernelFacts& facts) {
  return sensor.programs(variants.*(sensor.field), facts);
}

}  // namespace netmon
