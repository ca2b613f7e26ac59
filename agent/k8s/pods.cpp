#include "k8s/pods.h"
