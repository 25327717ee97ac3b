# The two commands of the README, and the steps they are made of. Every step is idempotent
# and cheap when there is nothing to do.
#
#   make run    build everything (toolchain included) and run the sidecar with configs/sidecar.yaml
#   make test   build everything and run every test, kernel tests included (as root)

SHELL := /bin/bash
CARGO ?= cargo
CONFIG ?= configs/sidecar.yaml
SIDECAR := target/release/sidecar
# Root for the kernel programs; sudo when we are not root and it exists.
SUDO := $(shell [ "$$(id -u)" = 0 ] || ! command -v sudo >/dev/null || echo sudo)

.PHONY: all bootstrap bootstrap-test ebpf build run test unit-test kernel-test vm-test lint fmt clean bench image

all: build

bootstrap:
	@scripts/bootstrap.sh

bootstrap-test:
	@scripts/bootstrap.sh --test

ebpf: bootstrap
	@$(CARGO) xtask build-ebpf

build: ebpf
	$(CARGO) build --release --bins

run: build
	$(SUDO) $(SIDECAR) run --config $(CONFIG)

lint: ebpf
	$(CARGO) fmt --all --check
	$(CARGO) clippy --release --all-targets -- -D warnings
	$(CARGO) xtask clippy-ebpf

# Unit tests need no privileges; the kernel tests (sidecar/tests/kernel.rs) run as root,
# and under CI=true or SIDECAR_REQUIRE_EBPF=1 they fail rather than skip without it.
# vm-test then boots Debian's 5.10, 6.1 and 6.12 kernels in QEMU, one after another, and
# runs the ground-truth checks in each (docs/testing.md); it writes docs/kernels.md.
test: bootstrap-test build lint
	$(CARGO) test --release --no-fail-fast
	$(CARGO) xtask vm-test

# The kernel matrix alone (about 4 minutes per kernel under software emulation).
vm-test: bootstrap-test build
	$(CARGO) xtask vm-test

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean

# The container image, offline: the static (musl) binary built here, in the FROM scratch
# stage `image` of the Dockerfile, built by podman or buildah from target/image (the binary
# and the default configuration). IMAGE names it. See the Dockerfile for the multi-stage
# build from source.
IMAGE ?= localhost/sidecar:latest
MUSL_TARGET := x86_64-unknown-linux-musl
MUSL_SIDECAR := target/$(MUSL_TARGET)/release/sidecar

image: ebpf
	@scripts/bootstrap.sh --image
	$(CARGO) build --release --locked --target $(MUSL_TARGET) -p sidecar --bin sidecar
	@if readelf -l $(MUSL_SIDECAR) | grep -q INTERP; then \
	  echo "make image: $(MUSL_SIDECAR) is not static" >&2; exit 1; fi
	$(MUSL_SIDECAR) --version
	rm -rf target/image && mkdir -p target/image
	cp $(MUSL_SIDECAR) target/image/sidecar
	cp $(CONFIG) target/image/sidecar.yaml
	@if command -v podman >/dev/null; then \
	  echo "podman build --target image -t $(IMAGE) -f Dockerfile target/image"; \
	  podman build --target image -t $(IMAGE) -f Dockerfile target/image; \
	elif command -v buildah >/dev/null; then \
	  echo "buildah bud --target image -t $(IMAGE) -f Dockerfile target/image"; \
	  buildah bud --target image -t $(IMAGE) -f Dockerfile target/image; \
	else \
	  echo "make image: neither podman nor buildah is installed (Debian: apt-get install podman)." >&2; \
	  echo "make image: the static binary and the build context are ready in target/image/." >&2; \
	  exit 1; \
	fi

# Quick overhead regression check (root): fails when the sidecar's added cost per event
# exceeds 1.3x that of empty BPF programs (plus a noise margin). Not part of `make test`:
# timing on a shared machine is noisy. `cargo xtask bench` (no --quick) regenerates
# docs/BENCHMARKS.md.
bench: build
	$(SUDO) env "PATH=$$PATH" $(CARGO) xtask bench --quick
