#!/usr/bin/env bash
# From a fresh Debian 12 machine (as root) to a lab reconciled from git:
#   1. Debian packages and the virtual environment (scripts/setup.sh);
#   2. the base images: the ephemeral OS kernel + initramfs and the lab target image, built
#      from Debian packages once and cached by the digest of their inputs (build/images/);
#   3. the virtual lab in its own network namespace: bridge 198.18.0.1/24, dnsmasq, libvirtd,
#      the sushy-tools Redfish emulator on 198.18.0.1:8000 and three OVMF VMs
#      (`reconciler lab up`; it tears down a crashed lab first);
#   4. the product on it: the lab's target image published on the build service, the example
#      inventory as a git repository (var/lab/inventory.git), and `reconciler run` following
#      it with its embedded build service on 198.18.0.1:8080 (data: var/lab/reconciler);
#   5. waits until lab-host-01 is installed to disk and runs its target OS, lab-host-02 is
#      off, lab-host-03 is inspected and its report committed to the repository, and prints
#      `reconciler status`.
# `reconciler lab down` removes it all.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "quickstart: the lab needs root (network namespaces, libvirtd, QEMU); run it with sudo" >&2
    exit 1
fi

scripts/setup.sh

echo "quickstart: base images (cached in build/images/; the first build takes a few minutes)"
images=$(.venv/bin/reconciler images ensure --arch amd64 | tail -n 1)

echo "quickstart: bringing the lab up, with the reconciler following var/lab/inventory.git"
.venv/bin/reconciler lab up --hosts 3 --images "$images"

data=var/lab/reconciler
echo "quickstart: waiting for the reconciler to install lab-host-01 (a few minutes under TCG)"
.venv/bin/reconciler status --data-dir "$data" --wait lab-host-01 --timeout 2400
.venv/bin/reconciler status --data-dir "$data" --wait lab-host-02 --timeout 600 >/dev/null
echo "quickstart: waiting for lab-host-03 (known only by its BMC) to be inspected"
.venv/bin/reconciler status --data-dir "$data" --wait lab-host-03 --timeout 1200 >/dev/null
for _ in $(seq 60); do   # the report's commit follows the inspection by a pass or two
    if git -C var/lab/inventory.git cat-file -e main:inspection/lab-host-03.yaml 2>/dev/null &&
       git -C var/lab/inventory.git show main:inspection/lab-host-03.yaml | grep -q '^hardware:'; then
        break
    fi
    sleep 2
done
git -C var/lab/inventory.git log --format='  %h %s' -n 3 main
.venv/bin/reconciler status --data-dir "$data"

cat <<'EOT'

The lab stays up and the reconciler keeps following the repository. Next:
  git clone var/lab/inventory.git inventory && cd inventory
  #   edit servers/lab-host-02.yaml (state: provisioned), then:
  git commit -am 'lab-host-02: install it' && git push
  .venv/bin/reconciler status --data-dir var/lab/reconciler        # from the project root
  .venv/bin/reconciler scaffold lab-host-03 --inventory inventory   # a server file from its report
  ip netns exec reconciler-lab curl -s http://198.18.0.1:8080/status  # the status page
  .venv/bin/reconciler lab status             # daemons, VMs, DHCP leases
  .venv/bin/reconciler lab down               # remove everything the lab created
EOT
