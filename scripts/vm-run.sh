#!/usr/bin/env bash
# Runs one command as root inside a virtual machine booted on a Debian kernel, and returns the
# command's exit status. CI uses it to run the privileged integration tests on the kernels netmon
# supports (docs/kernels.md), not only on the build machine's.
#
#   scripts/vm-run.sh <5.10|6.1|6.12> [--arch amd64|arm64] [--timeout SECONDS] [--memory MIB]
#                     [--cpus N] -- COMMAND...
#
# The guest sees this machine's root file system read-only (9p) under a writable tmpfs overlay,
# so the build, the tests and every installed tool are there as on the host; it starts in the
# current directory with CI, PATH, LANG and every NETMON_* variable of the caller (add names with
# NETMON_VM_ENV="NAME ..."). Inside: proc, sys, devtmpfs, a pure cgroup2 at /sys/fs/cgroup, bpffs,
# tracefs, debugfs, tmpfs on /run (not /tmp: the checkout may live there), loopback up, and the
# kernel's own modules on demand.
# Nothing reaches a network: the guest has no network device.
#
# --arch arm64 (6.1 and 6.12): Debian's arm64 kernel in qemu-system-aarch64 (the virt machine).
# This machine's root is x86_64, so the guest's root is instead an arm64 Debian root
# (scripts/arm64-sysroot.sh guest: the image's packages, busybox, python3 with pytest, nc,
# telnet, iproute2, bpftool; cached), under the tmpfs overlay as above; only the current
# directory (the checkout, with the arm64 agent the caller names) comes from this machine, at
# the same path, read-only under its own tmpfs overlay.
#
# The kernel is the newest Debian package of the series (bullseye for 5.10, bookworm for 6.1 and
# 6.12; the generic amd64 or arm64 flavour, which has 9p), fetched with apt-get download from the mirror
# this machine uses through a private apt state, unpacked and cached in NETMON_VM_CACHE
# (default /var/cache/netmon-vm); the package index is refreshed once a day, and a cached kernel
# is used when the mirror cannot be reached. "The newest" changes as Debian publishes updates, so
# every run names the package it booted, on stderr before the boot:
#   vm-run: kernel package NAME VERSION sha256 SHA256-OF-THE-.DEB
# (recorded at download in the cache, next to the unpacked kernel). qemu runs under TCG (software
# emulation: KVM is not usable on CI machines) with a hard time limit.
#
# Exit status: the command's; 124 when the time limit killed the guest; 125 when the guest ended
# without reporting a status (kernel panic, boot failure: the console shows why); 2 for usage.
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

kernel=""
arch=amd64
timeout_s=900
memory_mib=3072
cpus=2
while (($#)); do
  case "$1" in
    --arch) arch="${2:?}"; shift 2 ;;
    --timeout) timeout_s="${2:?}"; shift 2 ;;
    --memory) memory_mib="${2:?}"; shift 2 ;;
    --cpus) cpus="${2:?}"; shift 2 ;;
    --) shift; break ;;
    -h | --help) usage ;;
    -*) echo "vm-run: unknown option $1" >&2; usage ;;
    *)
      [[ -z "$kernel" ]] || { echo "vm-run: one kernel only" >&2; usage; }
      kernel="$1"; shift ;;
  esac
done
(($#)) || { echo "vm-run: no command given" >&2; usage; }
[[ "$timeout_s" =~ ^[0-9]+$ && "$memory_mib" =~ ^[0-9]+$ && "$cpus" =~ ^[0-9]+$ ]] || usage

# Kernel series -> Debian suite and the meta-package that names its newest kernel.
case "$arch/$kernel" in
  amd64/5.10) suite=bullseye meta=linux-image-amd64 ;;
  amd64/6.1) suite=bookworm meta=linux-image-amd64 ;;
  amd64/6.12) suite=bookworm meta=linux-image-6.12-amd64 ;;
  arm64/6.1) suite=bookworm meta=linux-image-arm64 ;;
  arm64/6.12) suite=bookworm meta=linux-image-6.12-arm64 ;;
  *) echo "vm-run: unsupported kernel '$kernel' for $arch (amd64: 5.10, 6.1, 6.12; arm64: 6.1, 6.12)" >&2
     usage ;;
esac

if [[ $(id -u) -ne 0 ]]; then
  echo "vm-run: run as root (the guest mounts and tests need it, and so does the cache)" >&2
  exit 2
fi

need=()
if [[ $arch == arm64 ]]; then
  command -v qemu-system-aarch64 >/dev/null || need+=(qemu-system-arm)
else
  command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
fi
[[ -x /bin/busybox ]] && /bin/busybox --list 2>/dev/null | grep -qx switch_root ||
  need+=(busybox-static)
command -v cpio >/dev/null || need+=(cpio)
[[ -x /sbin/depmod && -x /sbin/modprobe ]] || need+=(kmod)
command -v xz >/dev/null || need+=(xz-utils)
command -v zstd >/dev/null || need+=(zstd)
if ((${#need[@]})); then
  echo "vm-run: installing ${need[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi

cache="${NETMON_VM_CACHE:-/var/cache/netmon-vm}"
mkdir -p "$cache"
log() { echo "vm-run: $*" >&2; }

# ---- The kernel: resolve, download and unpack (serialised between concurrent runs).

# The Debian mirror this machine's apt uses (deb822 or one-line sources), else deb.debian.org.
host_mirror() {
  local m
  m=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
    sed -n 's/^URIs:[[:space:]]*\(\S*\/debian\)\/\{0,1\}[[:space:]]*$/\1/p' | head -n1)
  [[ -n "$m" ]] || m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\{0,1\}\(\S*\/debian\)\/\{0,1\}[[:space:]].*/\2/p' |
    head -n1)
  echo "${m:-http://deb.debian.org/debian}"
}

fetch_kernel() {
  local mirror apt lists stamp pkg deb dir version sha
  mirror="${NETMON_VM_MIRROR:-$(host_mirror)}"
  apt="$cache/apt/$suite"
  [[ $arch == amd64 ]] || apt="$cache/apt/$suite-$arch"
  mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/parts" "$cache/kernels"
  cat >"$apt/sources.list" <<EOF
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ${mirror}-security $suite-security main
EOF
  local opts=(-o "APT::Architecture=$arch" -o "APT::Architectures::=$arch"
    -o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=$apt/parts"
    -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o "APT::Get::List-Cleanup=0"
    -o "Acquire::Languages=none" -o "APT::Sandbox::User=root")
  stamp="$apt/updated"
  if [[ -z $(find "$stamp" -mmin -1440 2>/dev/null) ]]; then
    log "refreshing the $suite package index from $mirror"
    if apt-get "${opts[@]}" -qq update >&2; then
      touch "$stamp"
    else
      log "the package index could not be refreshed; using the cached one"
    fi
  fi
  pkg=$(apt-cache "${opts[@]}" show --no-all-versions "$meta" 2>/dev/null |
    sed -n 's/^Depends:.*\(linux-image-[0-9][^ ,]*\).*/\1/p' | head -n1 || true)
  if [[ -z "$pkg" ]]; then
    # No index: the kernel used last time, if any.
    pkg=$(cat "$cache/kernels/$current" 2>/dev/null || true)
    [[ -n "$pkg" ]] || { log "cannot resolve $meta in $suite (no index, nothing cached)"; exit 125; }
    log "using the cached $pkg"
  fi
  dir="$cache/kernels/$pkg"
  # $dir/.package, written last, marks a complete unpack and records what was unpacked (a kernel
  # cached before it was recorded is fetched again).
  if [[ ! -e "$dir/.package" ]]; then
    log "downloading $pkg"
    rm -rf "$dir" "$cache/kernels/tmp-$pkg"
    mkdir -p "$cache/kernels/tmp-$pkg"
    # apt-get download checks the .deb against the SHA256 of the (signed) package index.
    (cd "$cache/kernels/tmp-$pkg" && apt-get "${opts[@]}" -qq download "$pkg" >&2)
    deb=$(ls "$cache/kernels/tmp-$pkg"/*.deb)
    version=$(dpkg-deb -f "$deb" Version)
    sha=$(sha256sum "$deb" | cut -d' ' -f1)
    mkdir -p "$dir"
    dpkg-deb -x "$deb" "$dir"
    # The package leaves modules.dep to depmod at install time.
    /sbin/depmod -b "$dir" "$(basename "$(ls -d "$dir"/lib/modules/*)")"
    printf 'package=%s\nversion=%s\nsha256=%s\nfile=%s\nsource=%s %s\ndownloaded=%s\n' \
      "$pkg" "$version" "$sha" "$(basename "$deb")" "$mirror" "$suite" \
      "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$dir/.package.tmp"
    mv "$dir/.package.tmp" "$dir/.package"
    rm -rf "$cache/kernels/tmp-$pkg"
  fi
  echo "$pkg" >"$cache/kernels/$current"
  echo "$dir"
}

current="$kernel.current"
[[ $arch == amd64 ]] || current="$arch-$kernel.current"
# The arm64 guest's root (made before the lock: it has its own).
guest_root=/
if [[ $arch == arm64 ]]; then
  guest_root=$(scripts_dir=$(dirname "$0"); "$scripts_dir/arm64-sysroot.sh" guest) ||
    { log "the arm64 guest root could not be made"; exit 125; }
fi
exec 9>"$cache/.lock"
flock -w 600 9 || { log "another vm-run holds $cache/.lock"; exit 125; }
kdir=$(fetch_kernel)
# Which package this run boots, for the test output (scripts/kernel-table.py reads this line).
package_field() { sed -n "s/^$1=//p" "$kdir/.package"; }
log "kernel package $(package_field package) $(package_field version) sha256 $(package_field sha256)" \
  "($(package_field file), from $(package_field source), downloaded $(package_field downloaded))"
vmlinuz=$(ls "$kdir"/boot/vmlinuz-* | head -n1)
kver=${vmlinuz##*/vmlinuz-}
moddir="$kdir/lib/modules/$kver"

# ---- The initramfs: busybox and the modules needed to mount the host's root (cached per kernel).

# Modules loaded before the root is mounted, with their dependencies (modules.dep), in load order.
# Built-in ones are not in modules.dep and need nothing.
module_closure() {
  local name path deps d
  declare -A seen=()
  visit() {
    local rel="$1" dep
    [[ -n "${seen[$rel]:-}" ]] && return
    seen[$rel]=1
    for dep in $(sed -n "s|^${rel//./\\.}:||p" "$moddir/modules.dep"); do visit "$dep"; done
    echo "$rel"
  }
  for name in "$@"; do
    path=$(grep -E "(^|/)${name//_/[_-]}\.ko(\.[a-z]+)?:" "$moddir/modules.dep" | head -n1 | cut -d: -f1)
    [[ -n "$path" ]] && visit "$path"
  done
}

initrd="$kdir/netmon-initrd.cpio"
if [[ ! -e "$initrd" || "$initrd" -ot "$0" || "$initrd" -ot "$guest_root/.complete" ]]; then
  staging=$(mktemp -d)
  mkdir -p "$staging"/{bin,dev,proc,sys,modules,host,rw,newroot}
  cp "$guest_root/bin/busybox" "$staging/bin/busybox"
  n=0
  for rel in $(module_closure virtio_pci virtio_rng 9pnet_virtio 9p overlay); do
    n=$((n + 1))
    out="$staging/modules/$(printf %02d "$n")-$(basename "${rel%%.ko*}").ko"
    case "$rel" in
      *.ko.xz) xz -dc "$moddir/$rel" >"$out" ;;
      *.ko.zst) zstd -qdc "$moddir/$rel" >"$out" ;;
      *.ko.gz) gzip -dc "$moddir/$rel" >"$out" ;;
      *) cp "$moddir/$rel" "$out" ;;
    esac
  done
  cat >"$staging/init" <<'EOF'
#!/bin/busybox sh
# Stage 1: mount the host's root read-only (9p) under a tmpfs overlay and switch to it.
/bin/busybox mkdir -p /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in /modules/*.ko; do insmod "$m" 2>/dev/null; done
fail() { echo "vm-run: $*"; poweroff -f; }
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=524288 hostroot /host ||
  fail "mounting the root failed"
mount -t tmpfs -o mode=0755 tmpfs /rw
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work /newroot ||
  fail "mounting the overlay failed"
mkdir -p /newroot/.netmon-vm
cp /bin/busybox /run.sh /moddir /stage2.sh /newroot/.netmon-vm/
[ -e /checkout ] && cp /checkout /newroot/.netmon-vm/
umount /proc /sys
exec switch_root /newroot /.netmon-vm/busybox sh /.netmon-vm/stage2.sh
EOF
  cat >"$staging/stage2.sh" <<'EOF'
# Stage 2, PID 1 on the overlay root: the mounts a node has, then the command, then power off.
bb=/.netmon-vm/busybox
$bb mount -t proc proc /proc
$bb mount -t sysfs sysfs /sys
$bb mount -t devtmpfs devtmpfs /dev
$bb mkdir -p /dev/pts /dev/shm
$bb mount -t devpts devpts /dev/pts
$bb mount -t tmpfs tmpfs /dev/shm
# No tmpfs on /tmp: the checkout may be there (CI clones anywhere); the overlay makes it writable.
$bb mount -t tmpfs -o mode=0755 tmpfs /run
$bb mount -t cgroup2 cgroup2 /sys/fs/cgroup
$bb mount -t bpf bpf /sys/fs/bpf
$bb mount -t tracefs tracefs /sys/kernel/tracing
$bb mount -t debugfs debugfs /sys/kernel/debug
# The kernel's own modules, for what the tests load on demand (veth, ...): in the host's root, or
# (a guest root of its own, arm64) shared as "modules".
kver=$($bb uname -r)
$bb mkdir -p "/lib/modules/$kver"
if [ -e /.netmon-vm/checkout ]; then
  $bb mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=524288 modules "/lib/modules/$kver"
  # The checkout at its path on this machine, writable through a tmpfs overlay.
  dir=$($bb cat /.netmon-vm/checkout)
  $bb mkdir -p /run/checkout/lower /run/checkout/upper /run/checkout/work "$dir"
  $bb mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=524288 checkout /run/checkout/lower
  $bb mount -t overlay overlay -o lowerdir=/run/checkout/lower,upperdir=/run/checkout/upper,workdir=/run/checkout/work "$dir"
else
  $bb mount --bind "$(cat /.netmon-vm/moddir)" "/lib/modules/$kver"
fi
echo /sbin/modprobe >/proc/sys/kernel/modprobe
$bb ip link set lo up
$bb hostname netmon-vm
echo "vm-run: guest $kver up after $($bb cut -d' ' -f1 /proc/uptime) s"
/bin/bash /.netmon-vm/run.sh </dev/null
rc=$?
echo "NETMON-VM-EXIT: $rc"
$bb sync
$bb poweroff -f
EOF
  chmod +x "$staging/init"
  (cd "$staging" && find . | cpio -o -H newc --quiet) >"$initrd.tmp"
  mv "$initrd.tmp" "$initrd"
  rm -rf "$staging"
fi
exec 9>&-

# ---- This run: the command, its directory and environment, in a second cpio archive.

run=$(mktemp -d)
trap 'rm -rf "$run"' EXIT
{
  echo "# generated by vm-run.sh"
  for name in PATH LANG CI ${NETMON_VM_ENV:-} $(compgen -e | grep '^NETMON_' | grep -v '^NETMON_VM_' || true); do
    [[ -n "${!name+x}" ]] && printf 'export %s=%q\n' "$name" "${!name}"
  done
  echo "export HOME=/root TERM=dumb"
  printf 'cd %q || exit 125\n' "$PWD"
  printf 'exec'
  printf ' %q' "$@"
  printf '\n'
} >"$run/run.sh"
mkdir -p "$run/cpio"
cp "$run/run.sh" "$run/cpio/run.sh"
printf '%s\n' "$moddir" >"$run/cpio/moddir"
files=(run.sh moddir)
if [[ $arch == arm64 ]]; then
  printf '%s\n' "$PWD" >"$run/cpio/checkout"
  files+=(checkout)
fi
(cd "$run/cpio" && printf '%s\n' "${files[@]}" | cpio -o -H newc --quiet) >"$run/run.cpio"
cat "$initrd" "$run/run.cpio" >"$run/initrd"

# NETMON_VM_VERBOSE=1 shows the kernel's boot messages.
kernel_log="quiet loglevel=3"
[[ "${NETMON_VM_VERBOSE:-0}" == 1 ]] && kernel_log="loglevel=7"
if [[ $arch == arm64 ]]; then
  # The virt machine; -cpu max with QEMU's own pointer-authentication algorithm (impdef): the
  # architected one (QARMA) is many times slower to emulate.
  qemu=(qemu-system-aarch64 -machine virt -cpu "${NETMON_VM_CPU:-max,pauth-impdef=on}")
  console=ttyAMA0
  shares=(-virtfs "local,path=$PWD,mount_tag=checkout,security_model=none,readonly=on,multidevs=remap"
    -virtfs "local,path=$moddir,mount_tag=modules,security_model=none,readonly=on,multidevs=remap")
else
  qemu=(qemu-system-x86_64 -cpu "${NETMON_VM_CPU:-max}")
  console=ttyS0
  shares=()
fi
log "booting $kver ($arch, TCG, $cpus CPUs, $memory_mib MiB, limit $timeout_s s): $*"
start=$(date +%s)
set +e
timeout -k 5 "$timeout_s" "${qemu[@]}" \
  -accel tcg,thread=multi -smp "$cpus" -m "$memory_mib" \
  -kernel "$vmlinuz" -initrd "$run/initrd" \
  -append "console=$console $kernel_log panic=-1 no_timer_check random.trust_cpu=on" \
  -virtfs "local,path=$guest_root,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap" \
  "${shares[@]}" \
  -device virtio-rng-pci -nic none -display none -monitor none -serial stdio -no-reboot \
  </dev/null | sed -u 's/\r$//' | tee "$run/console"
qemu_rc=${PIPESTATUS[0]}
set -e
log "guest ran $(($(date +%s) - start)) s"
if ((qemu_rc == 124 || qemu_rc == 137)); then
  log "time limit of $timeout_s s reached: the guest was killed"
  exit 124
fi
status=$(sed -n 's/^NETMON-VM-EXIT: \([0-9]\+\)$/\1/p' "$run/console" | tail -n1)
if [[ -z "$status" ]]; then
  log "the guest ended without reporting the command's status (qemu exit $qemu_rc)"
  exit 125
fi
exit "$status"
