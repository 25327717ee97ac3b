# The sidecar container image: one static binary (musl, the eBPF object embedded) in an
# otherwise empty image. Two ways to build it; both give the same image.
#
# 1. Offline, from a binary built on this host (what `make image` does; no registry needed):
#
#      make image                    # = the steps below, then podman build / buildah bud
#
#    which runs
#
#      cargo xtask build-ebpf
#      cargo build --release --locked --target x86_64-unknown-linux-musl -p sidecar --bin sidecar
#      mkdir -p target/image && cp target/x86_64-unknown-linux-musl/release/sidecar \
#          configs/sidecar.yaml target/image/
#      podman build --target image -t localhost/sidecar:latest -f Dockerfile target/image
#
#    The build context is target/image (the binary and the default configuration), not the
#    repository. The `image` stage is first in this file and starts FROM scratch, so nothing
#    is pulled and the later stages are never built.
#
# 2. Multi-stage, from source, for machines that can pull the Rust image (context: the
#    repository; keep target/ out of it, e.g. with a .dockerignore listing `target/`):
#
#      docker build -t sidecar:latest .          # or: podman build --target from-source .
#
#    The builder runs the same bootstrap as `make build` (Debian packages, the pinned
#    toolchain from rust-toolchain.toml, bpf-linker built against that toolchain's LLVM, the
#    musl target and musl-tools), builds the eBPF object with `cargo xtask build-ebpf`, then
#    the static binary.
#
# Running it needs CAP_BPF, CAP_PERFMON (and CAP_SYS_RESOURCE on kernels older than 5.11),
# tracefs and, when present, /sys/kernel/btf: see deploy/ and docs/operations.md,
# "Deploying". For a quick look on one host:
#
#   podman run --rm --cap-drop=ALL --cap-add=BPF,PERFMON,SYS_RESOURCE --network=host \
#       -v /sys/kernel/tracing:/sys/kernel/tracing:ro -v /sys/kernel/btf:/sys/kernel/btf:ro \
#       localhost/sidecar:latest

# --- 1. offline: the host-built static binary ------------------------------------------------
FROM scratch AS image
COPY sidecar /sidecar
COPY sidecar.yaml /etc/sidecar/sidecar.yaml
EXPOSE 9464 50051
LABEL org.opencontainers.image.title="sidecar" \
      org.opencontainers.image.description="eBPF observability for the page cache, fadvise and memory reclaim, per workload"
ENTRYPOINT ["/sidecar"]
CMD ["run", "--config", "/etc/sidecar/sidecar.yaml"]

# --- 2. from source ---------------------------------------------------------------------------
# The Rust image only brings rustup and a C toolchain: the bootstrap installs the toolchain
# pinned in rust-toolchain.toml, so the tag below need not match it.
FROM docker.io/library/rust:1-bookworm AS builder
WORKDIR /src
COPY . .
RUN scripts/bootstrap.sh --image \
 && cargo xtask build-ebpf \
 && cargo build --release --locked --target x86_64-unknown-linux-musl -p sidecar --bin sidecar \
 && mkdir -p /out \
 && cp target/x86_64-unknown-linux-musl/release/sidecar configs/sidecar.yaml /out/ \
 && /out/sidecar --version

FROM scratch AS from-source
COPY --from=builder /out/sidecar /sidecar
COPY --from=builder /out/sidecar.yaml /etc/sidecar/sidecar.yaml
EXPOSE 9464 50051
LABEL org.opencontainers.image.title="sidecar" \
      org.opencontainers.image.description="eBPF observability for the page cache, fadvise and memory reclaim, per workload"
ENTRYPOINT ["/sidecar"]
CMD ["run", "--config", "/etc/sidecar/sidecar.yaml"]
