#!/usr/bin/env bash
# Fetches Debian's LTS kernels for `cargo xtask vm-test`, once, into a cache:
#
#   scripts/vm-kernels.sh CACHE_DIR SERIES...      SERIES: 5.10 6.1 6.12
#
# For each series it picks the newest `linux-image-*-amd64` package of that series, reads
# the package lists through a private apt state (CACHE_DIR/apt: the machine's own sources
# and lists stay untouched), and keeps only what a VM needs: CACHE_DIR/<package>/vmlinuz,
# config, and modules/ with the block-device and ext4 modules (decompressed) plus a file
# `load-order` naming them in an order insmod accepts. Prints one line per series:
# `<series> <directory>`. A series whose directory is complete costs nothing.
set -euo pipefail

cache="${1:?usage: vm-kernels.sh CACHE_DIR SERIES...}"
shift
mkdir -p "$cache"
cache="$(cd "$cache" && pwd)"

# The mirror the machine's own sources name (deb822 or one-line format).
mirror="$(sed -n 's/^URIs: *\(http[^ ]*debian\)\/*$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)"
[ -n "$mirror" ] || mirror="$(sed -n 's/^deb \(\[[^]]*\] \)\?\(http[^ ]*debian\)\/* .*/\2/p' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | head -n1)"
[ -n "$mirror" ] || mirror="http://deb.debian.org/debian"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg

apt_state="$cache/apt"
apt_opts=(-o "Dir::Etc::SourceList=$apt_state/sources.list" -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$apt_state/lists" -o "Dir::Cache=$apt_state/cache"
  -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
updated=0
apt_update() {
  [ "$updated" = 1 ] && return 0
  mkdir -p "$apt_state/lists/partial" "$apt_state/cache/archives/partial"
  {
    echo "deb [signed-by=$keyring] $mirror bullseye main"
    echo "deb [signed-by=$keyring] $mirror bookworm main"
    echo "deb [signed-by=$keyring] $mirror bookworm-updates main"
    echo "deb [signed-by=$keyring] ${mirror%/debian}/debian-security bookworm-security main"
  } >"$apt_state/sources.list"
  echo "vm-kernels: reading Debian package lists (private apt state in $apt_state)" >&2
  apt-get "${apt_opts[@]}" -qq update >&2
  updated=1
}

# The newest package of a series, by Debian version order of the package names.
newest_package() {
  local pattern
  case "$1" in
    5.10) pattern='^linux-image-5\.10\.0-[0-9]+-amd64$' ;;
    6.1) pattern='^linux-image-6\.1\.0-[0-9]+-amd64$' ;;
    6.12) pattern='^linux-image-6\.12\.[0-9]+\+deb12-amd64$' ;;
    *) echo "vm-kernels: unknown series $1 (5.10, 6.1, 6.12)" >&2; return 1 ;;
  esac
  apt-cache "${apt_opts[@]}" pkgnames linux-image- | grep -E "$pattern" | sort -V | tail -n1
}

# Modules the guest needs for a virtio disk with ext4, in dependency order. Each .ko names
# its own dependencies (the packages ship no modules.dep); ext4 also needs crc32c_generic
# (it asks for "crc32c" by name at mount time).
wanted_modules=(crc32c_generic crc16 mbcache jbd2 ext4 virtio_pci_legacy_dev virtio_pci_modern_dev
  virtio_ring virtio virtio_pci virtio_blk)

prepare() {
  local series="$1" pkg dir tmp
  # A complete directory from an earlier run of the newest package we know of.
  if [ -z "${SIDECAR_VM_REFRESH:-}" ]; then
    dir="$(ls -d "$cache/linux-image-$series"[.-]*-amd64 2>/dev/null | sort -V | tail -n1 || true)"
    if [ -n "$dir" ] && [ -f "$dir/complete" ]; then
      echo "$series $dir"
      return 0
    fi
  fi
  apt_update
  pkg="$(newest_package "$series")"
  [ -n "$pkg" ] || { echo "vm-kernels: no package for series $series" >&2; return 1; }
  dir="$cache/$pkg"
  if [ -f "$dir/complete" ]; then
    echo "$series $dir"
    return 0
  fi
  echo "vm-kernels: downloading $pkg" >&2
  tmp="$(mktemp -d "$cache/.tmp.XXXXXX")"
  (cd "$tmp" && apt-get "${apt_opts[@]}" -qq download "$pkg" >&2)
  dpkg-deb -x "$tmp"/*.deb "$tmp/root"
  rm -rf "$dir" && mkdir -p "$dir/modules"
  cp "$tmp"/root/boot/vmlinuz-* "$dir/vmlinuz"
  cp "$tmp"/root/boot/config-* "$dir/config"
  local kernel_dir
  kernel_dir="$(ls -d "$tmp"/root/lib/modules/*/kernel)"
  : >"$dir/load-order"
  local seen=" "
  add_module() {
    local name="$1" file dep
    [[ "$seen" == *" $name "* ]] && return 0
    seen+="$name "
    file="$(find "$kernel_dir" \( -name "$name.ko" -o -name "$name.ko.xz" -o -name "$name.ko.zst" \) | head -n1)"
    if [ -z "$file" ]; then
      # Built into this kernel (or absent from this version): nothing to load.
      return 0
    fi
    case "$file" in
      *.xz) xz -dc "$file" >"$dir/modules/$name.ko" ;;
      *.zst) zstd -qdc "$file" >"$dir/modules/$name.ko" ;;
      *) cp "$file" "$dir/modules/$name.ko" ;;
    esac
    for dep in $(tr '\0' '\n' <"$dir/modules/$name.ko" | sed -n 's/^depends=//p' | tr ',' ' '); do
      add_module "${dep//-/_}"
    done
    echo "$name" >>"$dir/load-order"
  }
  for module in "${wanted_modules[@]}"; do
    add_module "$module"
  done
  echo "$pkg" >"$dir/package"
  rm -rf "$tmp"
  touch "$dir/complete"
  echo "$series $dir"
}

for series in "$@"; do
  prepare "$series"
done
