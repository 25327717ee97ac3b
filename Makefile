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

.PHONY: all bootstrap bootstrap-test ebpf build run test unit-test kernel-test lint fmt clean

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
test: bootstrap-test build lint
	$(CARGO) test --release --no-fail-fast

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
