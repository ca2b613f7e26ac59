// The accept sensor: inet_csk_accept's fexit (which also sees io_uring accepts), or the
// accept()/accept4() syscall exit tracepoints.
#pragma once

#include "bpf/sensors/sensor.h"

namespace netmon {

extern const Sensor kAcceptSensor;

}  // namespace netmon
