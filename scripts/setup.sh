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
    .venv/bin/python -m pip install -q -e '.[dev]'
    echo "$digest" > "$stamp"
fi

# arm64 boot tools and the Debian kernels the boot tests use (nothing installed on the host).
scripts/fetch-boot-tools.sh

# The base images (ephemeral OS + lab target image), built once per digest of their inputs,
# so the test session and the lab start offline. Needs root (debootstrap, chroot).
if [ "$(id -u)" -eq 0 ]; then
    .venv/bin/reconciler images ensure --arch amd64 >/dev/null
else
    echo "setup: not root: skipping the base images (the lab and its tests need root)"
fi
