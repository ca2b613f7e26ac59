// The process sensor: sched_process_exec/fork/exit (tp_btf or raw_tp), with the exec's path walk.
#pragma once

#include "bpf/sensors/sensor.h"

namespace netmon {

extern const Sensor kProcessSensor;

}  // namespace netmon
