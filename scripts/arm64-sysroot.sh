#!/usr/bin/env bash
# Makes (once) and prints the path of an arm64 Debian 12 sysroot for cross-building the agent
# (cmake/aarch64-linux-gnu.cmake): the :arm64 -dev packages the agent builds against and their
# whole dependency closure, as apt resolves it for arm64 with an empty package status, downloaded
# with apt-get through a private apt state and unpacked with dpkg-deb -x. Nothing is installed on
# this machine and its apt configuration is left alone (no dpkg --add-architecture: installing the
# :arm64 -dev packages through multiarch would move the host's own libraries to the arm64
# packages' versions). The same sysroot is the library root that qemu-aarch64-static runs the
# agent with (-L), so it also holds every runtime library the agent needs.
#
#   scripts/arm64-sysroot.sh             # prints the sysroot's path
#
# NETMON_ARM64_CACHE: the cache (default /var/cache/netmon-arm64); the package index is
# refreshed once a day, and a sysroot is made again only when the resolved packages change (its
# name is the hash of their file names: every version change is a new sysroot). The mirror is
# this machine's (NETMON_VM_MIRROR overrides it, as for scripts/vm-run.sh).
set -euo pipefail

packages=(
  libc6-dev libstdc++-12-dev linux-libc-dev
  libbpf-dev libelf-dev zlib1g-dev
  libexpected-dev nlohmann-json3-dev libcpp-httplib-dev libssl-dev
  prometheus-cpp-dev libyaml-cpp-dev
)

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

# The closure's .deb file names, as apt resolves them now (--print-uris lists only what is not
# downloaded yet: asked with an empty archive directory, it lists all). apt-get checks each
# download against the SHA256 of the signed index.
empty=$(mktemp -d)
trap 'rm -rf "$empty"' EXIT
mkdir -p "$empty/partial"
debs=$(apt-get "${opts[@]}" -o "Dir::Cache::archives=$empty" install --print-uris -qq "${packages[@]}" |
  sed -n "s/^'[^']*' \([^ ]*\.deb\) .*/\1/p" | sort)
[[ -n "$debs" ]] || { log "apt resolved no packages for ${packages[*]}"; exit 1; }
key=$(printf '%s\n' "$debs" | sha256sum | cut -c1-16)
sysroot="$cache/sysroots/$key"
if [[ ! -e "$sysroot/.complete" ]]; then
  log "downloading $(printf '%s\n' "$debs" | wc -l) arm64 packages"
  apt-get "${opts[@]}" install --download-only -y -qq "${packages[@]}" >&2
  rm -rf "$sysroot" "$sysroot.tmp"
  mkdir -p "$sysroot.tmp"
  while read -r deb; do
    dpkg-deb -x "$apt/archives/$deb" "$sysroot.tmp"
  done <<<"$debs"
  # Absolute symbolic links (libfoo.so -> /lib/aarch64-linux-gnu/libfoo.so.1) would resolve to
  # this machine's files: point them inside the sysroot, relative.
  find "$sysroot.tmp" -type l -lname '/*' -print0 |
    while IFS= read -r -d '' link; do
      target=$(readlink "$link")
      ln -sfn "$(realpath -m --relative-to="$(dirname "$link")" "$sysroot.tmp$target")" "$link"
    done
  printf '%s\n' "$debs" >"$sysroot.tmp/.packages"
  touch "$sysroot.tmp/.complete"
  mv "$sysroot.tmp" "$sysroot"
fi
echo "$sysroot"
