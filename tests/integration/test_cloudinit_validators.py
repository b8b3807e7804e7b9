"""Rendered seed files against the real validators (issue 12, point 6).

Every host of ``inventory-example/`` and a multi-NIC server (static + auto + dhcp), rendered by
``reconciler render`` for provisioning and for inspection, must pass:

- ``cloud-init schema --config-file``: both user-data files (the target disk's and the
  ephemeral OS's); an empty ``ssh_authorized_keys: []`` fails here;
- for the network-config: cloud-init's network schema when the installed cloud-init has one
  (``--schema-type network-config``), ``netplan generate --root-dir`` (what an image with
  netplan does with it), and ``cloud-init devel net-convert`` to systemd-networkd and to ENI (what
  Debian 12's stock cloud image, cloud-init 22.4 without netplan, does with it); each output
  must carry every address and the default route via the subnet's gateway.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.cli import main
from reconciler.paths import example_inventory
from tests.conftest import skip_or_fail
from tests.fixtures.inventory import system_id

pytestmark = pytest.mark.integration

INSPECTION = "0f1e2d3c-4b5a-4697-8889-aabbccddeeff"
EXAMPLE = example_inventory()
EXAMPLE_HOSTS = sorted(p.stem for p in (EXAMPLE / "servers").glob("*.yaml"))
GATEWAY = "198.18.0.1"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeyOfTheReconciler reconciler@lab"
SEED = "/var/lib/cloud/seed/nocloud"
TIMEOUT = 120
SBIN_PATH = os.pathsep.join((os.environ.get("PATH", ""), "/usr/sbin", "/sbin"))

MULTI_NIC = f"""\
profile: lab
state: provisioned
bmc:
  address: http://198.18.0.1:8000
  system_id: {system_id(4)}
  credentials: lab-bmc
interfaces:
  - name: eno1
    mac: "52:54:00:18:00:04"
    subnet: lab
    address: 198.18.0.14
  - name: eno2
    mac: "52:54:00:18:01:04"
    subnet: lab
    address: auto
  - mac: "52:54:00:18:02:04"
    address: dhcp
disk:
  serial: LABDISK0004
cloud_init:
  ssh_keys:
    - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOperatorKeyOfLabHost04 operator@lab
  user_data:
    packages: [lldpd]
    runcmd:
      - [sh, -c, "echo provisioned > /run/provisioned"]
"""


def _tool(name: str, package: str) -> str:
    """The tool's path; a missing one skips locally and fails under CI."""
    path = shutil.which(name, path=SBIN_PATH)
    if path is None:
        skip_or_fail(f"{name} not found: install {package} (scripts/debian-packages.txt)")
    return path


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=TIMEOUT, check=False)
    assert done.returncode == 0, (
        f"+ {shlex.join(argv)}\nexit {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


@pytest.fixture(scope="module")
def multi_nic_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("inventory") / "inventory"
    shutil.copytree(EXAMPLE, repo)
    (repo / "servers/lab-host-04.yaml").write_text(MULTI_NIC)
    return repo


HOSTS = [(host, False) for host in EXAMPLE_HOSTS] + [("lab-host-04", True)]
# The hosts with a network to configure: a server known only by its BMC (lab-host-03, state
# inspected) renders "ethernets: {}" (tested in tests/unit/test_inventory_render.py).
NETWORK_HOSTS = [(host, multi) for host, multi in HOSTS if multi or "\ninterfaces:" in (
    EXAMPLE / "servers" / f"{host}.yaml").read_text()]


def _render(request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str], tmp_path: Path,
            host: str, multi_nic: bool, purpose: str) -> dict[str, Any]:
    """``reconciler render --format json`` of one host: the seed files by name."""
    repo = request.getfixturevalue("multi_nic_repo") if multi_nic else EXAMPLE
    argv = ["render", host, "--repo", str(repo), "--purpose", purpose, "--format", "json"]
    if purpose == "inspect":
        argv += ["--inspection-id", INSPECTION]
    if multi_nic:  # with keys; the example runs without any (no operator key)
        key = tmp_path / "id.pub"
        key.write_text(KEY + "\n")
        argv += ["--ssh-key", str(key)]
    assert main(argv) == 0
    out: dict[str, Any] = json.loads(capsys.readouterr().out)
    sent = {f["path"]: base64.b64decode(f["contentBase64"]).decode()
            for f in out["build-request"]["files"] if "contentBase64" in f}
    # What the build request carries is what this test validates, byte for byte.
    assert sent[f"{SEED}/user-data"] == out["ephemeral-user-data"]
    assert sent.get(f"{SEED}/network-config") == out["network-config"]
    assert (purpose == "provision") == (out["network-config"] is not None)
    return out


@pytest.fixture(params=[(*h, p) for h in HOSTS for p in ("provision", "inspect")],
                ids=lambda case: f"{case[0]}-{case[2]}")
def rendered(request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str],
             tmp_path: Path) -> dict[str, Any]:
    return _render(request, capsys, tmp_path, *request.param)


@pytest.fixture(params=NETWORK_HOSTS, ids=lambda case: str(case[0]))
def network_config(request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str],
                   tmp_path: Path) -> Path:
    """The provisioning network-config of one host, as a file (inspection renders none)."""
    host, multi_nic = request.param
    out = _render(request, capsys, tmp_path, host, multi_nic, "provision")
    path = tmp_path / "network-config"
    path.write_text(out["network-config"])
    return path


def _ethernets(network_config: Path) -> dict[str, Any]:
    ethernets: dict[str, Any] = yaml.safe_load(network_config.read_text())["ethernets"]
    return ethernets


def _addresses(ethernets: dict[str, Any]) -> dict[str, str]:
    """NIC name -> "address/prefix" of each addressed NIC, in the rendered order."""
    return {name: nic["addresses"][0] for name, nic in ethernets.items() if "addresses" in nic}


@functools.cache
def _has_network_schema(cloud_init: str) -> bool:
    """cloud-init 23.x and later validate network-config; 22.4 (Debian 12) does not."""
    return "--schema-type" in _run([cloud_init, "schema", "--help"]).stdout


def test_user_data_passes_cloud_init_schema(rendered: dict[str, Any], tmp_path: Path) -> None:
    cloud_init = _tool("cloud-init", "cloud-init")
    for name in ("user-data", "ephemeral-user-data"):
        path = tmp_path / name
        path.write_text(rendered[name])
        done = _run([cloud_init, "schema", "--config-file", str(path)])
        assert "Valid cloud-config" in done.stdout, done.stdout + done.stderr
        # Our own lists are never empty; the schema only catches the ones it knows.
        assert [] not in yaml.safe_load(rendered[name]).values(), rendered[name]
    meta = yaml.safe_load(rendered["meta-data"])
    assert set(meta) == {"instance-id", "local-hostname"}


def test_netplan_generates_networkd(network_config: Path, tmp_path: Path) -> None:
    netplan = _tool("netplan", "netplan.io")
    root = tmp_path / "root"
    (root / "etc/netplan").mkdir(parents=True)
    target = root / "etc/netplan/50-cloud-init.yaml"
    # As cloud-init's netplan renderer writes a v2 network-config: under "network:", verbatim.
    lines = network_config.read_text().splitlines(keepends=True)
    target.write_text("network:\n" + "".join(f"  {line}" for line in lines))
    target.chmod(0o600)  # netplan warns about group/world-readable files
    _run([netplan, "generate", "--root-dir", str(root)])
    generated = root / "run/systemd/network"
    for name, nic in _ethernets(network_config).items():
        unit = (generated / f"10-netplan-{name}.network").read_text()
        assert f"MACAddress={nic['match']['macaddress']}" in unit, unit
        if "addresses" in nic:
            assert f"Address={nic['addresses'][0]}" in unit, unit
        else:
            assert "DHCP=ipv4" in unit, unit
        if "routes" in nic:
            assert f"[Route]\nDestination=0.0.0.0/0\nGateway={GATEWAY}\n" in unit, unit
        else:
            assert "[Route]" not in unit, unit
    assert sum("[Route]" in p.read_text() for p in generated.glob("*.network")) == 1


@pytest.mark.parametrize("output", ["networkd", "eni"])
def test_cloud_init_net_convert(network_config: Path, tmp_path: Path, output: str) -> None:
    """What cloud-init without netplan applies; ``eni`` is Debian 12's stock cloud image."""
    cloud_init = _tool("cloud-init", "cloud-init")
    if _has_network_schema(cloud_init):
        _run([cloud_init, "schema", "--schema-type", "network-config",
              "--config-file", str(network_config)])
    out_dir = tmp_path / output
    _run([cloud_init, "devel", "net-convert", "-p", str(network_config), "-k", "yaml",
          "-d", str(out_dir), "-D", "debian", "-O", output])
    ethernets = _ethernets(network_config)
    addresses = _addresses(ethernets)
    primary = next(iter(addresses))  # the template routes via the first addressed NIC
    if output == "networkd":
        units = {p.name: p.read_text() for p in (out_dir / "etc/systemd/network").iterdir()}
        text = "\n".join(units.values())
        for name, nic in ethernets.items():
            unit = units[f"10-cloud-init-{name}.network"]
            assert f"MACAddress={nic['match']['macaddress']}" in unit, unit
            if name in addresses:
                assert f"Address={addresses[name]}" in unit, unit
            else:
                assert re.search(r"DHCP=(ipv4|yes)", unit), unit
        # cloud-init 22.4 leaves a blank line inside the section: read up to the next one.
        route = units[f"10-cloud-init-{primary}.network"].split("[Route]\n", 1)[1].split("[")[0]
        assert "Destination=0.0.0.0/0\n" in route and f"Gateway={GATEWAY}\n" in route, text
        assert text.count("[Route]") == 1, text
    else:
        eni = "\n".join(p.read_text() for p in sorted(out_dir.rglob("*")) if p.is_file())
        for name in ethernets:
            if name in addresses:
                assert re.search(rf"iface {name} inet static\n(?:    .*\n)*?"
                                 rf"    address {re.escape(addresses[name])}\n", eni), eni
            else:
                assert f"iface {name} inet dhcp" in eni, eni
        # 0.0.0.0/0 is what ifupdown's "route add default" means.
        assert re.findall(r"post-up route add (.*)", eni) == [
            f"default gw {GATEWAY} || true"], eni
