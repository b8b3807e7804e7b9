#!/usr/bin/env bash
# From a fresh Debian 12 machine (as root) to a lab server booted through Redfish:
#   1. Debian packages and the virtual environment (scripts/setup.sh);
#   2. the base images: the ephemeral OS kernel + initramfs and the lab target image, built
#      from Debian packages once and cached by the digest of their inputs (build/images/);
#   3. the virtual lab in its own network namespace: bridge 198.18.0.1/24, dnsmasq, libvirtd,
#      the sushy-tools Redfish emulator on 198.18.0.1:8000, two OVMF VMs, and the build
#      service on 198.18.0.1:8080 (`reconciler lab up`; it tears down a crashed lab first);
#   4. lab host 1 booted into the ephemeral OS the way the reconciler does it: build request
#      rendered from inventory-example/ (static IPAM address), ISO built by the service,
#      inserted through Redfish, boot Cd once, power on; then SSH (`reconciler lab boot`).
# It ends by printing how to SSH into the server. `reconciler lab down` removes it all.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "quickstart: the lab needs root (network namespaces, libvirtd, QEMU); run it with sudo" >&2
    exit 1
fi

scripts/setup.sh

echo "quickstart: base images (cached in build/images/; the first build takes a few minutes)"
images=$(.venv/bin/reconciler images ensure --arch amd64 | tail -n 1)

echo "quickstart: bringing the lab up"
.venv/bin/reconciler lab up --hosts 2 --images "$images"

echo "quickstart: booting lab host 1 through Redfish (about a minute under TCG)"
.venv/bin/reconciler lab boot --host 1

cat <<'EOF'

The lab stays up. Next:
  .venv/bin/reconciler lab status             # daemons, VMs, DHCP leases
  .venv/bin/reconciler lab boot --host 2 --inspect   # the inspection workflow on host 2
  .venv/bin/reconciler lab down               # remove everything the lab created
EOF
