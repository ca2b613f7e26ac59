#include "k8s/cgroup_path.h"
