#!/usr/bin/env bash
# Installs everything a fresh machine lacks to build and test sidecar, and nothing when it is
# already there: Debian packages, the pinned Rust toolchain (rust-toolchain.toml) with rust-src,
# and bpf-linker built against that toolchain's own libLLVM (see docs/building.md for why).
#
#   scripts/bootstrap.sh            build prerequisites only
#   scripts/bootstrap.sh --test     plus what the test suite uses (bpftool, promtool, a pinned
#                                   kubernetes-validate in a venv, QEMU and busybox for
#                                   `cargo xtask vm-test`, ...)
#   scripts/bootstrap.sh --image    plus what `make image` uses (the musl target, musl-tools)
#
# Prints the bpf-linker directory on its last line when called with --print-linker-dir.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
want_test=0
want_image=0
print_dir=0
for arg in "$@"; do
  case "$arg" in
    --test) want_test=1 ;;
    --image) want_image=1 ;;
    --print-linker-dir) print_dir=1 ;;
    *) echo "bootstrap: unknown argument $arg" >&2; exit 2 ;;
  esac
done

log() { [ "$print_dir" = 1 ] && echo "bootstrap: $*" >&2 || echo "bootstrap: $*"; }

toolchain="$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$here/rust-toolchain.toml")"
[ -n "$toolchain" ] || { echo "bootstrap: no channel in rust-toolchain.toml" >&2; exit 1; }
bpf_linker_version="0.13.0"
# The offline Kubernetes schema validator of sidecar/tests/deploy.rs (it bundles the schemas),
# with its dependencies pinned too.
kubernetes_validate_pins=(kubernetes-validate==1.37.0 jsonschema==4.26.0
  jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1 attrs==26.1.0
  PyYAML==6.0.3 packaging==26.3 importlib_resources==7.1.0 typing_extensions==4.16.0)

# --- Debian packages ------------------------------------------------------------------------
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "bootstrap: missing Debian packages: ${missing[*]} (run as root, or install them)" >&2
    return 1
  fi
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

apt_install build-essential pkg-config protobuf-compiler curl ca-certificates
if [ "$want_test" = 1 ]; then
  apt_install bpftool bpftrace prometheus util-linux procps python3 python3-venv
  # `cargo xtask vm-test`: QEMU (software emulation), a static busybox for the initramfs,
  # cpio to pack it, mkfs.ext4 for the test disk, xz for 6.12's compressed modules.
  apt_install qemu-system-x86 busybox-static cpio e2fsprogs xz-utils
fi
if [ "$want_image" = 1 ]; then
  # x86_64-linux-musl-gcc: ring compiles C for x86_64-unknown-linux-musl and fails without it.
  apt_install musl-tools
fi

# --- Rust toolchain ---------------------------------------------------------------------------
command -v rustup >/dev/null || { echo "bootstrap: rustup is required (https://rustup.rs)" >&2; exit 1; }
if ! rustup run "$toolchain" rustc --version >/dev/null 2>&1; then
  log "installing Rust $toolchain"
  rustup toolchain install "$toolchain" --profile minimal -c rust-src -c rustfmt -c clippy >&2
fi
# An existing toolchain may lack a component (rustup does not add them retroactively).
installed="$(rustup component list --toolchain "$toolchain" --installed 2>/dev/null)"
for comp in rust-src rustfmt clippy; do
  grep -q "^$comp" <<<"$installed" || rustup component add "$comp" --toolchain "$toolchain" >&2
done

# --- bpf-linker against the toolchain's own LLVM ----------------------------------------------
sysroot_lib="$(rustup run "$toolchain" rustc --print sysroot)/lib"
llvm_so="$(cd "$sysroot_lib" && ls libLLVM.so.* 2>/dev/null | head -n1)"
[ -n "$llvm_so" ] || { echo "bootstrap: no libLLVM.so.* in $sysroot_lib" >&2; exit 1; }
llvm_major="$(sed -n 's/^libLLVM\.so\.\([0-9]*\).*/\1/p' <<<"$llvm_so")"
tools_root="${SIDECAR_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sidecar-tools}"
linker_dir="$tools_root/bpf-linker-$bpf_linker_version-$llvm_so"
if [ ! -x "$linker_dir/bin/bpf-linker" ]; then
  log "building bpf-linker $bpf_linker_version against $llvm_so (about 2 minutes, once)"
  mkdir -p "$linker_dir/llvm/lib"
  ln -sf "$sysroot_lib/$llvm_so" "$linker_dir/llvm/lib/libLLVM.so"
  ln -sf "$sysroot_lib/$llvm_so" "$linker_dir/llvm/lib/$llvm_so"
  LLVM_PREFIX="$linker_dir/llvm" rustup run "$toolchain" cargo install bpf-linker \
    --version "$bpf_linker_version" --locked --no-default-features --features "llvm-$llvm_major" \
    --root "$linker_dir.partial" >&2
  mkdir -p "$linker_dir/bin"
  mv "$linker_dir.partial/bin/bpf-linker" "$linker_dir/bin/bpf-linker"
  rm -rf "$linker_dir.partial"
fi
"$linker_dir/bin/bpf-linker" --version >/dev/null

# --- test tools: kubernetes-validate, pinned, in its own venv ----------------------------------
if [ "$want_test" = 1 ]; then
  venv="$tools_root/venv-k8s"
  want_version="${kubernetes_validate_pins[0]#kubernetes-validate==}"
  if [ "$("$venv/bin/kubernetes-validate" --version 2>/dev/null)" != "$want_version" ]; then
    log "installing kubernetes-validate $want_version into $venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check "${kubernetes_validate_pins[@]}" >&2
  fi
fi

# --- image: the static (musl) target -----------------------------------------------------------
if [ "$want_image" = 1 ]; then
  rustup target list --toolchain "$toolchain" --installed | grep -qx x86_64-unknown-linux-musl ||
    rustup target add --toolchain "$toolchain" x86_64-unknown-linux-musl >&2
fi

if [ "$print_dir" = 1 ]; then
  echo "$linker_dir/bin"
else
  log "ready: Rust $toolchain, bpf-linker in $linker_dir/bin"
fi
