"""Rendering: golden seed files and build requests, accepted by the build service's parser."""

from __future__ import annotations

import base64
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.artifacts.request import build_id, parse_build_request
from reconciler.cli import main
from reconciler.errors import InputError
from reconciler.model import DesiredHost, desired_hosts, parse_inventory
from reconciler.render import RenderSettings, render_host
from reconciler.render.renderer import _to_yaml
from tests.fixtures.inventory import example_files, files, server

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeyOfTheReconciler reconciler@lab"
SETTINGS = RenderSettings(ssh_keys=(KEY,))
INSPECTION = "0f1e2d3c-4b5a-4697-8889-aabbccddeeff"

GOLDEN_META = "instance-id: lab-host-01-5e459d6628c22a42\nlocal-hostname: lab-host-01\n"
GOLDEN_EPHEMERAL_USER_DATA = f"""\
#cloud-config
hostname: lab-host-01
preserve_hostname: false
disable_root: false
ssh_pwauth: false
ssh_authorized_keys:
  - "{KEY}"
"""
GOLDEN_USER_DATA = GOLDEN_EPHEMERAL_USER_DATA + "timezone: UTC\n"
GOLDEN_NETWORK = """\
version: 2
ethernets:
  eth0:
    match:
      macaddress: "52:54:00:18:00:01"
    addresses:
      - "198.18.0.4/24"
    routes:
      - to: 0.0.0.0/0
        via: "198.18.0.1"
    nameservers:
      addresses:
        - "198.18.0.1"
"""
SEED = "/var/lib/cloud/seed/nocloud"


def _hosts(contents: dict[str, bytes] | None = None) -> dict[str, DesiredHost]:
    inventory, problems = parse_inventory(contents or example_files())
    assert problems == []
    return desired_hosts(inventory)


def _decoded(request: dict[str, Any]) -> dict[str, Any]:
    """path -> text content, or '-> target' for a symlink."""
    out: dict[str, Any] = {}
    for f in request["files"]:
        if "linkTarget" in f:
            out[f["path"]] = "-> " + f["linkTarget"]
        else:
            out[f["path"]] = base64.b64decode(f["contentBase64"]).decode()
    return out


def test_golden_provision_render() -> None:
    rendered = render_host(_hosts()["lab-host-01"], settings=SETTINGS)
    assert rendered.meta_data == GOLDEN_META
    assert rendered.user_data == GOLDEN_USER_DATA
    assert rendered.ephemeral_user_data == GOLDEN_EPHEMERAL_USER_DATA
    assert rendered.network_config == GOLDEN_NETWORK
    assert rendered.checkin_url is None
    assert dict(rendered.seed) == {"meta-data": GOLDEN_META, "user-data": GOLDEN_USER_DATA,
                                   "network-config": GOLDEN_NETWORK}
    req = rendered.build_request
    assert {k: v for k, v in req.items() if k not in ("files",)} == {
        "kernel": "vmlinuz-amd64",
        "initramfs": "initramfs-amd64.img",
        "cmdline": "console=ttyS0,115200n8",
        "architecture": "amd64",
        "dirOverrides": [{"path": "/root", "mode": "0700"}, {"path": "/root/.ssh", "mode": "0700"}],
        "tlsArtifacts": False,
    }
    assert _decoded(req) == {
        f"{SEED}/meta-data": GOLDEN_META,
        f"{SEED}/user-data": GOLDEN_EPHEMERAL_USER_DATA,
        f"{SEED}/network-config": GOLDEN_NETWORK,
        "/root/.ssh/authorized_keys": KEY + "\n",
        "/usr/local/bin/python": "-> /usr/bin/python3",
    }
    modes = {f["path"]: f.get("mode") for f in req["files"]}
    assert modes["/root/.ssh/authorized_keys"] == "0600"
    assert modes[f"{SEED}/network-config"] == "0644"
    # The build service's own parser accepts it, byte for byte what we send.
    parsed = parse_build_request(json.loads(json.dumps(req)))
    by_path = {f.path: f for f in parsed.files}
    assert by_path["/usr/local/bin/python"].link_target == "/usr/bin/python3"
    assert {d.path: d.mode for d in parsed.dir_overrides} == {"/root": 0o700, "/root/.ssh": 0o700}
    assert len(build_id(parsed)) == 64


def test_golden_inspect_render() -> None:
    rendered = render_host(_hosts()["lab-host-03"], "inspect", inspection_id=INSPECTION,
                           settings=SETTINGS)
    assert rendered.network_config is None
    assert rendered.checkin_url == f"http://198.18.0.1:8080/api/v1/checkins/{INSPECTION}"
    contents = _decoded(rendered.build_request)
    assert contents[f"{SEED}/meta-data"] == (
        f"instance-id: {INSPECTION}\nlocal-hostname: inspect-0f1e2d3c\n")
    assert contents[f"{SEED}/checkin-url"] == rendered.checkin_url  # seed: no newline
    assert f"{SEED}/network-config" not in contents
    assert contents["/root/.ssh/authorized_keys"] == KEY + "\n"
    assert contents["/usr/local/bin/python"] == "-> /usr/bin/python3"
    assert "hostname: inspect-0f1e2d3c\n" in contents[f"{SEED}/user-data"]
    parse_build_request(rendered.build_request)


def test_no_keys_no_empty_key_list() -> None:
    # cloud-init's schema rejects "ssh_authorized_keys: []" (non-empty array).
    for purpose in ("provision", "inspect"):
        rendered = render_host(_hosts()["lab-host-01"], purpose, inspection_id=INSPECTION)
        for text in (rendered.user_data, rendered.ephemeral_user_data):
            assert "ssh_authorized_keys" not in yaml.safe_load(text)
        assert _decoded(rendered.build_request)["/root/.ssh/authorized_keys"] == ""


def test_inspect_needs_an_id_and_settings_choose_the_url() -> None:
    host = _hosts()["lab-host-03"]
    with pytest.raises(InputError, match="inspection needs an inspection id"):
        render_host(host, "inspect")
    with pytest.raises(InputError, match="purpose 'wipe' is not one of"):
        render_host(host, "wipe")
    tls = RenderSettings(public_url="https://build.example:8443/", tls_artifacts=True)
    rendered = render_host(host, "inspect", inspection_id=INSPECTION, settings=tls)
    assert rendered.checkin_url == f"https://build.example:8443/api/v1/checkins/{INSPECTION}"
    assert rendered.build_request["tlsArtifacts"] is True


def test_all_example_hosts_render_accepted_requests() -> None:
    ids = set()
    for host in _hosts().values():
        for purpose in ("provision", "inspect"):
            rendered = render_host(host, purpose, inspection_id=INSPECTION)
            ids.add(build_id(parse_build_request(rendered.build_request)))
    # Each host's provisioning image differs; an inspection image knows nothing of the host
    # (same profile, same inspection id): one shared build.
    assert len(ids) == 4


def test_multi_nic_netplan() -> None:
    doc = server(1, interfaces=[
        {"name": "mgmt", "mac": "52:54:00:18:00:01", "subnet": "lab", "address": "198.18.0.9"},
        {"mac": "52:54:00:18:01:01"},
        {"mac": "52:54:00:18:02:01", "subnet": "lab", "address": "auto"},
    ])
    host = _hosts(files({"n1": doc}))["n1"]
    net = yaml.safe_load(render_host(host).network_config or "")
    assert net == {"version": 2, "ethernets": {
        "mgmt": {"match": {"macaddress": "52:54:00:18:00:01"}, "addresses": ["198.18.0.9/24"],
                 "routes": [{"to": "0.0.0.0/0", "via": "198.18.0.1"}],
                 "nameservers": {"addresses": ["198.18.0.1"]}},
        "eth1": {"match": {"macaddress": "52:54:00:18:01:01"}, "dhcp4": True},
        "eth2": {"match": {"macaddress": "52:54:00:18:02:01"},
                 "addresses": [f"{host.interfaces[2].address}"],
                 "nameservers": {"addresses": ["198.18.0.1"]}},
    }}
    assert str(host.address) == "198.18.0.9"


def test_user_data_fragments_merge() -> None:
    profiles = (example_files()["profiles.yaml"].decode())
    doc = server(1, cloud_init={"ssh_keys": [KEY], "user_data": {
        "runcmd": ["echo hi"], "timezone": "Europe/Paris", "write_files": [{"path": "/x"}]}})
    contents = files({"n1": doc}, profiles=profiles.replace("profiles:\n  lab:",
                                                            "profiles:\n  default:"))
    rendered = render_host(_hosts(contents)["n1"])
    data = yaml.safe_load(rendered.user_data)
    assert rendered.user_data.startswith("#cloud-config\n")
    assert data["timezone"] == "Europe/Paris"  # scalars: server wins
    assert data["runcmd"] == ["echo hi"]
    assert data["ssh_authorized_keys"] == [KEY]
    # The ephemeral OS gets keys and hostname only: no runcmd from the inventory in RAM.
    assert "runcmd" not in yaml.safe_load(rendered.ephemeral_user_data)


def test_inventory_template_override_and_strict_undefined() -> None:
    contents = example_files()
    contents["templates/meta-data.j2"] = (
        b"instance-id: {{ instance_id }}\nlocal-hostname: {{ hostname }}.lab.example\n")
    rendered = render_host(_hosts(contents)["lab-host-01"],
                           overrides=parse_inventory(contents)[0].templates)
    assert rendered.meta_data.endswith("local-hostname: lab-host-01.lab.example\n")
    with pytest.raises(InputError, match="template meta-data.j2: 'hostnme' is undefined"):
        render_host(_hosts()["lab-host-01"],
                    overrides={"meta-data.j2": "local-hostname: {{ hostnme }}\n"})
    with pytest.raises(InputError, match="templates/network-config.j2 rendered invalid YAML"):
        render_host(_hosts()["lab-host-01"], overrides={"network-config.j2": "a: [b\n"})
    with pytest.raises(InputError, match="templates/user-data.j2:1: template syntax error"):
        render_host(_hosts()["lab-host-01"], overrides={"user-data.j2": "{% if %}\n"})


def test_override_changes_digests_project_templates_do_not() -> None:
    plain = _hosts()["lab-host-01"]
    contents = example_files()
    contents["templates/user-data.j2"] = b"#cloud-config\n{{ cloud_config | to_yaml }}"
    overridden = _hosts(contents)["lab-host-01"]
    assert plain.digests.provision != overridden.digests.provision


def _changed(**fields: Any) -> DesiredHost:
    contents = example_files()
    path = "servers/lab-host-01.yaml"
    doc = yaml.safe_load(contents[path])
    doc.update(fields)
    contents[path] = yaml.safe_dump(doc).encode()
    return _hosts(contents)["lab-host-01"]


def test_digests_say_rebuild_or_reprovision() -> None:
    base = _hosts()["lab-host-01"]
    image = _changed(image={"url": "http://198.18.0.1:8080/images/other.qcow2",
                            "sha256": "b" * 64})
    assert image.digests.provision != base.digests.provision
    assert image.digests.build == base.digests.build
    bmc = _changed(bmc={**yaml.safe_load(example_files()["servers/lab-host-01.yaml"])["bmc"],
                        "verify_tls": False})
    assert (bmc.digests.build, bmc.digests.provision) == (base.digests.build,
                                                          base.digests.provision)
    assert bmc.digests.spec != base.digests.spec
    arm = dataclasses.replace(base, cmdline="console=ttyAMA0")
    assert arm.to_record()["cmdline"] == "console=ttyAMA0"


@pytest.mark.parametrize("value", [
    {"a": "yes", "b": "No", "c": "~", "d": "", "e": "x: y", "f": "#c", "g": "1.5", "h": "0x1f",
     "i": "2001-12-14", "j": "é\n\"q\"", "k": [], "l": {}, "m": None, "n": True, "o": 3,
     "p": 1.5, "q": [[1, "a"], {"r": {"s": [1]}}], "t": "-", "u": "@x", "v": "*a", "w": "!x",
     "x": "%y", "y": "a  b", "z": " lead", "1": "one", "null": "null", "on": "off"},
    [{"a": 1, "b": [2]}, "s", None],
    {"ssh_authorized_keys": [KEY], "runcmd": [["sh", "-c", "echo 'a' \"b\""]]},
])
def test_to_yaml_round_trips(value: Any) -> None:
    assert yaml.safe_load(_to_yaml(value)) == value


def test_cli_render(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    key = tmp_path / "id.pub"
    key.write_text(KEY + "\n")
    assert main(["render", "lab-host-01", "--repo", "inventory-example", "--ssh-key",
                 str(key)]) == 0
    out = capsys.readouterr().out
    assert GOLDEN_NETWORK in out
    request = json.loads(out.split("# ---- build request (POST /api/v1/builds) ----\n")[1])
    assert request == render_host(_hosts()["lab-host-01"], settings=SETTINGS).build_request
    assert main(["render", "nope", "--repo", "inventory-example"]) == 2
    assert main(["render", "lab-host-03", "--repo", "inventory-example", "--purpose", "inspect",
                 "--inspection-id", INSPECTION, "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["network-config"] is None
    assert doc["checkin-url"].endswith(INSPECTION)


def test_a_server_known_only_by_its_bmc_renders_an_empty_network() -> None:
    host = _hosts()["lab-host-03"]
    assert host.interfaces == ()
    rendered = render_host(host, "provision")
    assert yaml.safe_load(rendered.network_config or "") == {"version": 2, "ethernets": {}}
