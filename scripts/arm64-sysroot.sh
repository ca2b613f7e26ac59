#!/usr/bin/env bash
# Makes (once) and prints the path of an arm64 Debian 12 root: the packages of a profile and
# their whole dependency closure, as apt resolves it for arm64 with an empty package status,
# downloaded with apt-get through a private apt state and unpacked with dpkg-deb -x. Nothing is
# installed on this machine and its apt configuration is left alone (no dpkg --add-architecture:
# installing the :arm64 -dev packages through multiarch would move the host's own libraries to
# the arm64 packages' versions), and nothing arm64 runs here (no binfmt registration): the
# packages' maintainer scripts do not run, so what they would make is made below (the /bin/sh
# link, passwd and group, the nc and telnet alternatives, a dpkg status) and /usr is merged.
#
#   scripts/arm64-sysroot.sh [build]   the sysroot of the cross build (cmake/aarch64-linux-gnu.cmake):
#                                      the -dev packages the agent builds against; qemu-aarch64-static
#                                      runs the agent with it as its library root (-L)
#   scripts/arm64-sysroot.sh image     the arm64 image's base (image/Dockerfile.arm64): Debian's
#                                      required packages (minbase) and the agent's runtime libraries
#   scripts/arm64-sysroot.sh guest     the root of the arm64 kernel-matrix VMs (scripts/vm-run.sh
#                                      --arch arm64): the image's, plus what the tests run
#
# NETMON_ARM64_CACHE: the cache (default /var/cache/netmon-arm64); the package index is
# refreshed once a day, and a root is made again only when the resolved packages change (its
# name is the profile and the hash of their file names: every version change is a new root).
# The mirror is this machine's (NETMON_VM_MIRROR overrides it, as for scripts/vm-run.sh).
set -euo pipefail

profile=${1:-build}
# The agent's runtime libraries: the packages of the libraries it links (readelf -d: NEEDED), as
# in the amd64 image's Dockerfile.
runtime=(libbpf1 libelf1 zlib1g libcpp-httplib0.11 libssl3 libyaml-cpp0.7
  libprometheus-cpp-core1.0 libstdc++6 libgcc-s1)
# Debian's Priority: required packages, which debootstrap --variant=minbase installs.
minbase=(apt base-files base-passwd bash bsdutils coreutils dash debconf debianutils diffutils
  dpkg e2fsprogs findutils grep gzip hostname init-system-helpers libc-bin login mawk mount
  ncurses-base ncurses-bin passwd perl-base sed sysvinit-utils tar tzdata util-linux)
case "$profile" in
  build)
    packages=(
      libc6-dev libstdc++-12-dev linux-libc-dev
      libbpf-dev libelf-dev zlib1g-dev
      libexpected-dev nlohmann-json3-dev libcpp-httplib-dev libssl-dev
      prometheus-cpp-dev libyaml-cpp-dev
    ) ;;
  image) packages=("${minbase[@]}" "${runtime[@]}") ;;
  guest)
    packages=("${minbase[@]}" "${runtime[@]}"
      busybox-static kmod procps iproute2 bpftool  # the VM's init, modules, ss, bpftool
      python3 python3-pytest python3-jsonschema python3-yaml  # the test runner
      netcat-openbsd inetutils-telnet)              # the reference's scenario
    ;;
  *) echo "usage: $0 [build|image|guest]" >&2; exit 2 ;;
esac

cache="${NETMON_ARM64_CACHE:-/var/cache/netmon-arm64}"
apt="$cache/apt"
log() { echo "arm64-sysroot: $*" >&2; }

host_mirror() {
  local m
  m=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
    sed -n 's/^URIs:[[:space:]]*\(\S*\/debian\)\/\{0,1\}[[:space:]]*$/\1/p' | head -n1)
  [[ -n "$m" ]] || m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\{0,1\}\(\S*\/debian\)\/\{0,1\}[[:space:]].*/\2/p' |
    head -n1)
  echo "${m:-http://deb.debian.org/debian}"
}

mkdir -p "$apt/lists/partial" "$apt/archives/partial" "$apt/parts" "$cache/sysroots"
exec 9>"$cache/.lock"
flock -w 600 9 || { log "another run holds $cache/.lock"; exit 1; }

mirror="${NETMON_VM_MIRROR:-$(host_mirror)}"
cat >"$apt/sources.list" <<EOS
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ${mirror}-security bookworm-security main
EOS
[[ -e "$apt/status" ]] || : >"$apt/status"
opts=(-o APT::Architecture=arm64 -o APT::Architectures::=arm64
  -o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=$apt/parts"
  -o "Dir::State::Lists=$apt/lists" -o "Dir::State::status=$apt/status"
  -o "Dir::Cache=$apt" -o "Dir::Cache::archives=$apt/archives"
  -o APT::Install-Recommends=0 -o Acquire::Languages=none -o APT::Sandbox::User=root
  -o Debug::NoLocking=1)
if [[ -z $(find "$apt/updated" -mmin -1440 2>/dev/null) ]]; then
  log "refreshing the arm64 bookworm package index from $mirror"
  if apt-get "${opts[@]}" -qq update >&2; then
    touch "$apt/updated"
  else
    log "the package index could not be refreshed; using the cached one"
  fi
fi

# Merged /usr, as debootstrap makes bookworm roots (and as this machine is): /bin, /sbin and /lib
# are links into /usr (tests compare real paths such as /usr/bin/nc.openbsd).
merge_usr() {
  local root=$1 d
  for d in bin sbin lib; do
    if [[ -d "$root/$d" && ! -L "$root/$d" ]]; then
      mkdir -p "$root/usr/$d"
      (cd "$root/$d" && tar -cf - .) | (cd "$root/usr/$d" && tar -xf -)
      rm -rf "${root:?}/$d"
      ln -s "usr/$d" "$root/$d"
    fi
  done
}

# What the maintainer scripts of an installed system would have made, for a root that runs.
finish_root() {
  local root=$1 deb
  ln -sfn dash "$root/bin/sh"
  for f in passwd group; do
    [[ -e "$root/etc/$f" ]] || cp "$root/usr/share/base-passwd/$f.master" "$root/etc/$f"
  done
  [[ -e "$root/etc/shadow" ]] ||
    sed 's/:.*//; s/$/:*:19000:0:99999:7:::/' "$root/etc/passwd" >"$root/etc/shadow"
  chmod 0640 "$root/etc/shadow"
  if [[ -e "$root/bin/nc.openbsd" ]]; then ln -sfn nc.openbsd "$root/bin/nc"; fi
  if [[ -e "$root/usr/bin/inetutils-telnet" ]]; then
    ln -sfn inetutils-telnet "$root/usr/bin/telnet"
  fi
  if [[ -e "$root/usr/bin/python3" ]]; then
    # Byte-code compiled here (the .pyc files are the same on every architecture): the guest
    # would otherwise compile every module it imports under emulation, on every boot.
    /usr/bin/python3 -m compileall -q -j0 -s "$root" -p / \
      "$root/usr/lib/python3.11" "$root/usr/lib/python3/dist-packages" >/dev/null || true
  fi
  # The dpkg database: every unpacked package installed (what tools that list an image's
  # packages read), its files listed.
  mkdir -p "$root/var/lib/dpkg/info"
  : >"$root/var/lib/dpkg/status"
  while read -r deb; do
    dpkg-deb -f "$apt/archives/$deb" | sed '/^Status:/d; 1a Status: install ok installed' |
      sed '/^$/d' >>"$root/var/lib/dpkg/status"
    echo >>"$root/var/lib/dpkg/status"
    dpkg-deb -c "$apt/archives/$deb" | awk '{print substr($6, 2)}' | sed 's|^$|/.|; s|/$||' \
      >"$root/var/lib/dpkg/info/$(dpkg-deb -f "$apt/archives/$deb" Package).list"
  done <<<"$debs"
}

# The closure's .deb file names, as apt resolves them now (--print-uris lists only what is not
# downloaded yet: asked with an empty archive directory, it lists all). apt-get checks each
# download against the SHA256 of the signed index.
empty=$(mktemp -d)
trap 'rm -rf "$empty"' EXIT
mkdir -p "$empty/partial"
debs=$(apt-get "${opts[@]}" -o "Dir::Cache::archives=$empty" install --print-uris -qq \
  "${packages[@]}" |
  sed -n "s/^'[^']*' \([^ ]*\.deb\) .*/\1/p" | sort)
[[ -n "$debs" ]] || { log "apt resolved no packages for ${packages[*]}"; exit 1; }
key=$(printf '%s\n' "$debs" | sha256sum | cut -c1-16)
sysroot="$cache/sysroots/$profile-$key"
if [[ ! -e "$sysroot/.complete" ]]; then
  log "downloading $(printf '%s\n' "$debs" | wc -l) arm64 packages"
  apt-get "${opts[@]}" install --download-only -y -qq "${packages[@]}" >&2
  rm -rf "$sysroot" "$sysroot.tmp"
  mkdir -p "$sysroot.tmp"
  while read -r deb; do
    dpkg-deb -x "$apt/archives/$deb" "$sysroot.tmp"
  done <<<"$debs"
  if [[ "$profile" != build ]]; then
    merge_usr "$sysroot.tmp"
  fi
  # Absolute symbolic links (libfoo.so -> /lib/aarch64-linux-gnu/libfoo.so.1) would resolve to
  # this machine's files: point them inside the sysroot, relative (computed from the names only,
  # -s: following a link on the way could lead out of the sysroot).
  find "$sysroot.tmp" -type l -lname '/*' -print0 |
    while IFS= read -r -d '' link; do
      target=$(readlink "$link")
      ln -sfn "$(realpath -ms --relative-to="$(dirname "$link")" "$sysroot.tmp$target")" "$link"
    done
  if [[ "$profile" != build ]]; then
    finish_root "$sysroot.tmp"
  fi
  printf '%s\n' "$debs" >"$sysroot.tmp/.packages"
  touch "$sysroot.tmp/.complete"
  mv "$sysroot.tmp" "$sysroot"
  # The profile's earlier roots (older package versions) are not used again.
  for old in "$cache/sysroots/$profile"-*; do
    [[ "$old" == "$sysroot" ]] || rm -rf "$old"
  done
fi
echo "$sysroot"
