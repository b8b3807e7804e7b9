#!/usr/bin/env bash
# Set this machine up and run the reconciler on its embedded default.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/reconciler "$@"
