# The netmon-agent image: Debian 12, the agent binary and its runtime libraries.
#
#   podman build -t netmon/netmon-agent:"$(git describe --tags --always --dirty)" \
#     --build-arg VERSION="$(git describe --tags --always --dirty)" \
#     --build-arg REVISION="$(git rev-parse HEAD)" .
#
# (docker build takes the same arguments.) This is the linux/amd64 image: scripts/build-image.sh
# builds it and the linux/arm64 one (image/Dockerfile.arm64, the agent cross-built) into one image
# index. docs/deployment.md describes the image; the Helm chart in charts/netmon runs it: args
# --config=/etc/netmon/config.yaml (the ConfigMap replaces the default file below),
# --proc-root=/host/proc, --cgroup-root, --metrics-address.

# ---------------------------------------------------------------------------------------------
# Build stage: the same dependency script as the README's quick start, then the agent alone
# (no tests, no sanitizer builds).
FROM debian:bookworm AS build

WORKDIR /src
COPY scripts/install-deps.sh scripts/install-deps.sh
RUN scripts/install-deps.sh build && rm -rf /var/lib/apt/lists/*

COPY CMakeLists.txt ./
COPY bpf bpf
COPY agent agent
RUN cmake -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo \
          -DNETMON_BUILD_TESTS=OFF -DNETMON_SANITIZERS=OFF \
 && cmake --build build -j"$(nproc)" \
 && cmake --install build --prefix /opt/netmon --strip

# ---------------------------------------------------------------------------------------------
# Runtime stage: the packages of the shared libraries the agent links (readelf -d: NEEDED) and
# of theirs; tests/integration/test_image.py checks with ldd that nothing is missing. The BPF
# object is embedded in the binary (skeleton).
FROM debian:bookworm

ARG VERSION=0.1.0-dev
ARG REVISION=unknown
ARG SOURCE=""

RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      libbpf1 libelf1 zlib1g libcpp-httplib0.11 libssl3 libyaml-cpp0.7 \
      libprometheus-cpp-core1.0 libstdc++6 libgcc-s1 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb

COPY --from=build /opt/netmon/bin/netmon-agent /usr/bin/netmon-agent
COPY image/config.yaml /etc/netmon/config.yaml

LABEL org.opencontainers.image.title="netmon-agent" \
      org.opencontainers.image.description="eBPF TCP-connection observability agent: one JSON event per connection on stdout" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.base.name="docker.io/library/debian:bookworm"

# Events on stdout, the agent's own messages on stderr; /metrics, /healthz, /readyz here.
EXPOSE 9477
ENTRYPOINT ["/usr/bin/netmon-agent"]
CMD ["--config=/etc/netmon/config.yaml"]
