#!/usr/bin/env bash
# The whole test suite: unit tests and integration tests against real peers
# (QEMU + OVMF, the sushy-tools Redfish emulator, git). Sets the machine up first.
set -euo pipefail
cd "$(dirname "$0")/.."
# The tests boot both architectures' ephemeral OS: build (or reuse) the images of both.
RECONCILER_IMAGE_ARCHES="amd64 arm64" scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
