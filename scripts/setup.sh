#!/usr/bin/env bash
# Set up this machine for the reconciler: Debian packages, then the virtual environment.
# Idempotent and quick when nothing is missing. Needs root (or sudo) for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi

mapfile -t wanted < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' scripts/debian-packages.txt)
missing=()
for pkg in "${wanted[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    "$python" -m venv .venv
fi
stamp=.venv/.reconciler-installed
digest=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ]; then
    echo "setup: installing the reconciler and its Python dependencies into .venv"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[dev,lab]'
    echo "$digest" > "$stamp"
fi

# arm64 boot tools and the Debian kernels the boot tests use (nothing installed on the host).
scripts/fetch-boot-tools.sh

# Building arm64 images on another architecture runs the arm64 package scripts in the chroot
# through qemu-user-static: its binfmt_misc handler must be registered (flag F, so the
# interpreter is found inside the chroot too). The Debian package registers it when binfmt_misc
# is mounted; a fresh container may not have it mounted yet.
register_arm64_binfmt() {
    [ "$(uname -m)" = aarch64 ] && return 0
    local fs=/proc/sys/fs/binfmt_misc
    if [ ! -e "$fs/register" ]; then
        mount -t binfmt_misc binfmt_misc "$fs"
    fi
    if ! grep -qs '^enabled' "$fs/qemu-aarch64"; then
        update-binfmts --enable qemu-aarch64 2>/dev/null || update-binfmts --import qemu-aarch64
    fi
    grep -qs '^enabled' "$fs/qemu-aarch64" || { echo "setup: qemu-aarch64 binfmt handler not registered" >&2; return 1; }
}

# The base images (ephemeral OS + lab target image), built once per digest of their inputs,
# so the test session and the lab start offline. Needs root (debootstrap, chroot).
# RECONCILER_IMAGE_ARCHES picks the architectures (scripts/test.sh asks for both).
if [ "$(id -u)" -eq 0 ]; then
    for arch in ${RECONCILER_IMAGE_ARCHES:-amd64}; do
        if [ "$arch" = arm64 ]; then register_arm64_binfmt; fi
        .venv/bin/reconciler images ensure --arch "$arch" >/dev/null
    done
else
    echo "setup: not root: skipping the base images (the lab and its tests need root)"
fi
