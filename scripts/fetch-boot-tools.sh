#!/usr/bin/env bash
# Fetch what the boot-artifact builds and their tests need but Debian cannot install on an
# amd64 host: the arm64 systemd EFI stub, GRUB's arm64-efi modules, busybox-static for arm64,
# and one Debian kernel per architecture for the boot tests. Everything is downloaded with
# `apt-get download` through a PRIVATE apt configuration (its own state, cache and package
# lists, arm64 added there only) and unpacked with `dpkg -x`: nothing is installed on the host
# and the host's dpkg architectures stay untouched (../shared/LAB.md, "Boot artifacts").
#
# Result (idempotent; a second run with everything present does no network access):
#   build/cache/boot-tools/arm64-root/usr/lib/systemd/boot/efi/linuxaa64.efi.stub
#   build/cache/boot-tools/arm64-root/usr/lib/grub/arm64-efi/
#   build/cache/boot-tools/arm64-root/bin/busybox
#   build/cache/boot-tools/kernels/{amd64,arm64}/vmlinuz   (arm64: decompressed PE Image)
set -euo pipefail
cd "$(dirname "$0")/.."
root=${RECONCILER_BOOT_TOOLS:-$PWD/build/cache/boot-tools}
mkdir -p "$root"
root=$(cd "$root" && pwd)

arm64_root=$root/arm64-root
kernels=$root/kernels
want=(
    "$arm64_root/usr/lib/systemd/boot/efi/linuxaa64.efi.stub"
    "$arm64_root/usr/lib/grub/arm64-efi/chain.mod"
    "$arm64_root/bin/busybox"
    "$kernels/amd64/vmlinuz"
    "$kernels/arm64/vmlinuz"
)
missing=0
for f in "${want[@]}"; do [ -s "$f" ] || missing=1; done
if [ "$missing" = 0 ] && [ "${1:-}" != "--force" ]; then
    echo "fetch-boot-tools: all present under $root"
    exit 0
fi

apt_dir=$root/apt
mkdir -p "$apt_dir/state/lists/partial" "$apt_dir/cache/archives/partial" "$root/debs"
: > "$apt_dir/state/status"
apt_opts=(
    -o "APT::Sandbox::User=root"
    -o "APT::Architecture=amd64"
    -o "APT::Architectures::=amd64" -o "APT::Architectures::=arm64"
    -o "Dir::State=$apt_dir/state" -o "Dir::State::status=$apt_dir/state/status"
    -o "Dir::Cache=$apt_dir/cache"
    -o "Debug::NoLocking=1"
)
echo "fetch-boot-tools: updating a private package list (amd64 + arm64)"
apt-get "${apt_opts[@]}" -qq update

# The kernel ABI package the metapackage currently points at, e.g. linux-image-6.1.0-56-arm64.
kernel_pkg() {
    apt-cache "${apt_opts[@]}" depends "linux-image-$1:$1" 2>/dev/null \
        | sed -n "s/^ *Depends: \(linux-image-[0-9][^:]*-$1\)\(-unsigned\)\{0,1\}.*/\1/p" | head -n1
}

download() {  # download PKG[:ARCH] into debs/ and print the .deb path
    local spec=$1 name=${1%%:*}
    ( cd "$root/debs" && apt-get "${apt_opts[@]}" -qq download "$spec" >&2 )
    ls -t "$root/debs/${name}"_*.deb | head -n1
}

mkdir -p "$arm64_root"
for pkg in systemd-boot-efi grub-efi-arm64-bin busybox-static; do
    deb=$(download "$pkg:arm64")
    echo "fetch-boot-tools: unpacking $(basename "$deb")"
    dpkg-deb -x "$deb" "$arm64_root"
done

for arch in amd64 arm64; do
    pkg=$(kernel_pkg "$arch")
    [ -n "$pkg" ] || { echo "fetch-boot-tools: no linux-image package for $arch" >&2; exit 1; }
    deb=$(download "$pkg:$arch")
    tmp=$(mktemp -d "$root/unpack.XXXXXX")
    dpkg-deb -x "$deb" "$tmp"
    mkdir -p "$kernels/$arch"
    src=$(ls "$tmp"/boot/vmlinuz-* | head -n1)
    # arm64 Debian kernels are gzip-compressed Images; the EFI stub needs the PE Image itself.
    if [ "$(head -c2 "$src" | od -An -tx1 | tr -d ' ')" = "1f8b" ]; then
        gzip -dc "$src" > "$kernels/$arch/vmlinuz.tmp"
    else
        cp "$src" "$kernels/$arch/vmlinuz.tmp"
    fi
    mv "$kernels/$arch/vmlinuz.tmp" "$kernels/$arch/vmlinuz"
    basename "$src" > "$kernels/$arch/version"
    rm -rf "$tmp"
    echo "fetch-boot-tools: $arch kernel $(cat "$kernels/$arch/version")"
done
rm -f "$root"/debs/linux-image-*.deb  # 60+ MB each; the extracted vmlinuz is what we keep
echo "fetch-boot-tools: done ($root)"
