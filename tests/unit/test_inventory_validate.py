"""Validation: a corpus of invalid inventories, each with the exact messages it must produce."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from reconciler.cli import main
from reconciler.model import parse_inventory, read_directory
from reconciler.model import schema as schema_mod
from reconciler.model.yamlio import parse
from tests.conftest import skip_or_fail
from tests.fixtures.inventory import PROFILES, SUBNETS, example_files, files, server, write

B = "http://198.18.0.1:8000"
SECRET = "hunter22-secret"
HINT = "keep secrets out of the repository; name a credentials reference instead"


def _iface(n: int, address: str, subnet: str | None = "lab") -> list[dict[str, str]]:
    out = {"mac": f"52:54:00:18:00:{n:02x}", "address": address}
    if subnet:
        out["subnet"] = subnet
    return [out]


CORPUS: dict[str, tuple[dict[str, bytes], list[str]]] = {
    "bad host": (
        files({"r1-n01": "state: provisioned\nbmc:\n  address: 'not a host!'\n"
                         "  credentials: x\n"}),
        ["servers/r1-n01.yaml:3: bmc.address: 'not a host!' is not a valid host"],
    ),
    "typo suggests the field": (
        files({"n1": server(1, bmc={"adress": B, "credentials": "lab-bmc"})}),
        ["servers/n1.yaml:2: bmc.address: required field is missing",
         "servers/n1.yaml:3: bmc.adress: unknown field (did you mean 'address'?)"],
    ),
    "several schema errors at once": (
        files({"n1": server(1, state="running", protected="yes",
                            disk={"serial": "A", "wwn": "0x5000c500a1b2c3d4"},
                            interfaces=[{"mac": "52:54:00:zz:00:01", "address": "10.1"}])}),
        ["servers/n1.yaml:1: state: 'running' is not one of: provisioned, inspected, off, "
         "unmanaged",
         "servers/n1.yaml:7: interfaces[0].mac: '52:54:00:zz:00:01' is not a valid MAC address",
         "servers/n1.yaml:8: interfaces[0].address: '10.1' is not a valid address",
         "servers/n1.yaml:9: disk: give exactly one of: serial, wwn",
         "servers/n1.yaml:12: protected: expected a boolean (true/false), got a string"],
    ),
    "YAML syntax error with line and column": (
        files({"n1": "state: provisioned\nbmc: {address: x\n"}),
        ["servers/n1.yaml:3:1: YAML syntax error: did not find expected ',' or '}'"],
    ),
    "duplicate keys": (
        files({"n1": "state: provisioned\nstate: inspected\nbmc:\n  address: bmc1\n"
                     "  credentials: c\n  credentials: d\n"}),
        ["servers/n1.yaml:2: state: duplicate key",
         "servers/n1.yaml:6: bmc.credentials: duplicate key"],
    ),
    "passwords are reported, never echoed": (
        files({"n1": server(1, bmc={"address": B, "credentials": f"admin:{SECRET}",
                                    "password": SECRET},
                            image={"url": f"https://user:{SECRET}@images.example/x.qcow2",
                                   "sha256": "a" * 64})}),
        [f"servers/n1.yaml:4: bmc.credentials: looks like 'user:password': {HINT}",
         f"servers/n1.yaml:5: bmc.password: looks like a password: {HINT}",
         f"servers/n1.yaml:13: image.url: looks like a URL with a password: {HINT}"],
    ),
    "password in a shared file": (
        files({}, profiles=PROFILES + "    cloud_init:\n      user_data:\n        chpasswd:\n"
              f"          users: [{{name: root, password: {SECRET}}}]\n"),
        [f"profiles.yaml:18: profiles.default.cloud_init.user_data.chpasswd.users[0].password: "
         f"looks like a password: {HINT}"],
    ),
    "duplicate names across directories": (
        files({"servers/r1/n1.yaml": server(1), "servers/r2/n1.yaml": server(2)}),
        ["servers/r1/n1.yaml: duplicate server name 'n1' (also servers/r2/n1.yaml)",
         "servers/r2/n1.yaml: duplicate server name 'n1' (also servers/r1/n1.yaml)"],
    ),
    "duplicate MAC and static address: the senior keeps it": (
        files({"a": server(1, interfaces=_iface(1, "198.18.0.20")),
               "b": server(2, state="inspected", interfaces=[
                   {"mac": "52:54:00:18:00:01", "address": "dhcp"}]),
               "c": server(3, interfaces=_iface(3, "198.18.0.20"))}),
        ["servers/b.yaml:7: interfaces[0].mac: MAC 52:54:00:18:00:01 is already used by a",
         "servers/c.yaml:8: interfaces[0].address: address 198.18.0.20 is already held by "
         "host a"],
    ),
    "duplicate BMC identity": (
        files({"a": server(1), "b": server(1, interfaces=_iface(2, "auto"))}),
        ["servers/b.yaml:4: bmc.system_id: BMC 198.18.0.1:8000 system "
         "0ff58976-52e5-5c97-8886-1dad2a818041 is already a"],
    ),
    "addresses outside, network, broadcast, gateway, reserved": (
        files({f"h{i}": server(i, interfaces=_iface(i, a)) for i, a in enumerate(
            ["10.0.0.5", "198.18.0.0", "198.18.0.255", "198.18.0.1", "198.18.0.150"], 1)}),
        ["servers/h1.yaml:8: interfaces[0].address: 10.0.0.5 is outside subnet lab "
         "(198.18.0.0/24)",
         "servers/h2.yaml:8: interfaces[0].address: 198.18.0.0 is the network address of "
         "198.18.0.0/24",
         "servers/h3.yaml:8: interfaces[0].address: 198.18.0.255 is the broadcast address of "
         "198.18.0.0/24",
         "servers/h4.yaml:8: interfaces[0].address: 198.18.0.1 is the gateway of subnet lab",
         "servers/h5.yaml:8: interfaces[0].address: 198.18.0.150 is in a reserved range "
         "(dnsmasq DHCP range)"],
    ),
    "unknown subnet, profile and base artifact": (
        files({"h1": server(1, profile="nope"),
               "h2": server(2, interfaces=_iface(2, "auto", "wan"))},
              profiles=PROFILES.replace("kernel: vmlinuz-amd64", "kernel: vmlinuz-arm64")),
        ["profiles.yaml:8: profiles.default.kernel: unknown base artifact 'vmlinuz-arm64' "
         "(not in base_artifacts.amd64.kernels)",
         "servers/h1.yaml:12: profile: unknown profile 'nope'",
         "servers/h2.yaml:9: interfaces[0].subnet: unknown subnet 'wan'"],
    ),
    "architecture without base artifacts": (
        files({"h1": server(1, architecture="arm64")}),
        ["servers/h1.yaml:12: architecture: profile 'default' initramfs 'initramfs-amd64.img' "
         "is not a base artifact for arm64 (base_artifacts.arm64.initramfs)",
         "servers/h1.yaml:12: architecture: profile 'default' kernel 'vmlinuz-amd64' is not a "
         "base artifact for arm64 (base_artifacts.arm64.kernels)"],
    ),
    "subnet definitions": (
        files({}, subnets="subnets:\n  a:\n    cidr: 10.0.0.1/24\n    gateway: 10.0.0.1\n"
              "  b:\n    cidr: 10.1.0.0/24\n    gateway: 10.2.0.1\n    reserved:\n"
              "      - {start: 10.1.0.50, end: 10.1.0.40}\n"),
        ["subnets.yaml:3: subnets.a.cidr: '10.0.0.1/24' has host bits set",
         "subnets.yaml:7: subnets.b.gateway: 10.2.0.1 is not a host address of 10.1.0.0/24",
         "subnets.yaml:9: subnets.b.reserved[0]: 10.1.0.50-10.1.0.40 is not a range inside "
         "10.1.0.0/24"],
    ),
    "subnet too small, auto without system id": (
        files({"h1": server(1, bmc={"address": B, "credentials": "lab-bmc"}),
               "h2": server(2, interfaces=_iface(2, "auto", "p2p"))},
              subnets=SUBNETS + "  p2p:\n    cidr: 192.0.2.0/31\n    gateway: 192.0.2.0\n"),
        ["servers/h1.yaml:8: interfaces[0].address: auto needs bmc.system_id (part of the "
         "IPAM key)",
         "servers/h2.yaml:8: interfaces[0].address: subnet p2p (192.0.2.0/31) is too small to "
         "allocate from (prefix longer than /30)"],
    ),
    "provisioned needs disk, image, address": (
        files({"h1": server(1, disk=None, interfaces=[{"mac": "52:54:00:18:00:01"}])},
              profiles=PROFILES.split("    image:")[0]),
        ["servers/h1.yaml:1: disk: state provisioned needs a target disk (serial or wwn)",
         "servers/h1.yaml:1: image: state provisioned needs an image (here or in profile "
         "'default')",
         "servers/h1.yaml:6: interfaces: state provisioned needs an interface with a static or "
         "auto address (the reconciler reaches the server there)"],
    ),
    "missing shared files; YAML 1.1 booleans": (
        {"servers/a.yaml": b"state: off\nbmc: {address: b, credentials: c}\n"},
        ["profiles.yaml: file is missing",
         "servers/a.yaml:1: state: False is not one of: provisioned, inspected, off, unmanaged "
         "(YAML reads unquoted off/on/no/yes as a boolean: quote the value)",
         "subnets.yaml: file is missing"],
    ),
    "bad file name, wrong types": (
        files({"Bad_Name": "- just\n- a list\n",
               "n2": "state: provisioned\nbmc:\n  address: b\n  credentials: 5\n"
                     "interfaces: {mac: x}\n"}),
        ["servers/Bad_Name.yaml:1: expected a mapping, got a list",
         "servers/Bad_Name.yaml: file name 'Bad_Name' is not a valid host name (lower-case "
         "letters, digits and '-')",
         "servers/n2.yaml:4: bmc.credentials: expected a string, got an integer (quote the "
         "value)",
         "servers/n2.yaml:5: interfaces: expected a list, got a mapping"],
    ),
    "unquoted MAC is a YAML 1.1 base-60 integer": (
        files({"n1": "state: inspected\nbmc: {address: b, credentials: c}\n"
                     "interfaces:\n  - mac: 52:54:00:18:00:01\n"}),
        ["servers/n1.yaml:4: interfaces[0].mac: expected a string, got an integer (quote the "
         "value)"],
    ),
    "two documents in one file": (
        files({"n1": "state: off\n---\nstate: on\n"}),
        ["servers/n1.yaml:2:1: YAML syntax error: but found another document"],
    ),
}


@pytest.mark.parametrize("case", list(CORPUS))
def test_invalid_inventory(case: str) -> None:
    contents, expected = CORPUS[case]
    inventory, problems = parse_inventory(contents)
    assert [str(p) for p in problems] == expected
    assert all(SECRET not in str(p) for p in problems)
    bad_servers = {p.file.rsplit("/", 1)[-1].rsplit(".", 1)[0] for p in problems
                   if p.file.startswith("servers/")}
    assert bad_servers <= inventory.rejected
    assert not set(inventory.servers) & inventory.rejected


INDEPENDENT = ["bad host", "typo suggests the field", "several schema errors at once",
               "YAML syntax error with line and column", "duplicate keys",
               "passwords are reported, never echoed",
               "addresses outside, network, broadcast, gateway, reserved"]


def test_every_problem_in_one_run() -> None:
    """Several broken servers in one repository: each problem is reported, none masks another."""
    merged: dict[str, bytes] = files({})
    expected: list[str] = []
    for index, case in enumerate(INDEPENDENT):
        contents, messages = CORPUS[case]
        for path, data in contents.items():
            if path.startswith("servers/"):
                merged[path.replace("servers/", f"servers/c{index}-")] = data
        expected += [m.replace("servers/", f"servers/c{index}-") for m in messages]
    _, problems = parse_inventory(merged)
    assert sorted(str(p) for p in problems) == sorted(expected)


def test_valid_example_has_no_problems() -> None:
    inventory, problems = parse_inventory(example_files())
    assert problems == []
    assert sorted(inventory.servers) == ["lab-host-01", "lab-host-02", "lab-host-03"]


def test_example_files_carry_the_schema_modeline() -> None:
    for path, data in example_files().items():
        if path.endswith(".yaml"):
            first = data.decode().splitlines()[0]
            assert first.startswith("# yaml-language-server: $schema="), path
            target = (Path("inventory-example") / path).parent / first.split("=", 1)[1]
            assert target.resolve().is_file(), (path, target)


def _walk_fields(node: object, where: str) -> list[str]:
    """Paths of property schemas lacking a description."""
    missing: list[str] = []
    if isinstance(node, dict):
        for name, sub in node.get("properties", {}).items():
            if "description" not in sub and "$ref" not in sub:
                missing.append(f"{where}.{name}")
            missing += _walk_fields(sub, f"{where}.{name}")
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                missing += _walk_fields(node[key], f"{where}[{key}]")
        for name, sub in node.get("$defs", {}).items():
            missing += _walk_fields(sub, f"{where}.$defs.{name}")
    return missing


def test_schemas_are_2020_12_with_ids_descriptions_examples() -> None:
    for name in schema_mod.SCHEMA_FILES.values():
        doc = json.loads((schema_mod.schema_dir() / name).read_text())
        assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert doc["$id"].endswith("/" + name)
        assert _walk_fields(doc, name) == []
        for field, sub in doc.get("properties", {}).items():
            assert "examples" in sub or "$ref" in sub, f"{name}: {field} has no examples"


def test_rust_and_python_schema_engines_agree() -> None:
    """The fast path must never call valid what jsonschema calls invalid, or vice versa."""
    fast = schema_mod._fast_validators()
    if not fast:
        skip_or_fail("jsonschema_rs not installed: only the Python engine runs")
    slow = schema_mod._validators()
    docs: list[tuple[str, object]] = []
    for contents, _ in CORPUS.values():
        for path, data in contents.items():
            try:
                value = yaml.safe_load(data)
            except yaml.YAMLError:
                continue
            kind = "server" if path.startswith("servers/") else path.split(".")[0]
            docs.append((kind, value))
    kinds = {"reconciler": "policy"}
    for path, data in example_files().items():
        kind = "server" if path.startswith("servers/") else path.split(".")[0]
        docs.append((kinds.get(kind, kind), yaml.safe_load(data)))
    for kind, value in docs:
        assert fast[kind].is_valid(value) == slow[kind].is_valid(value), (kind, value)


def test_yaml_lines_for_nested_paths() -> None:
    doc = parse("x.yaml", b"a:\n  b:\n    - c: 1\n    - d: 2\n")
    assert doc.line(("a", "b", 1, "d")) == 4
    assert doc.line(("a", "b", 0, "zzz")) == 3  # nearest existing ancestor


def _write_example(tmp_path: Path) -> Path:
    write(tmp_path, read_directory(Path("inventory-example")))
    return tmp_path


def test_cli_validate_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _write_example(tmp_path / "inv")
    assert main(["validate", str(root)]) == 0
    (root / "servers" / "lab-host-02.yaml").write_text(
        (root / "servers" / "lab-host-02.yaml").read_text().replace("LABDISK0002", "bad disk"))
    assert main(["validate", str(root)]) == 1
    out = capsys.readouterr().out
    assert out.strip() == ("servers/lab-host-02.yaml:17: disk.serial: 'bad disk' is not a "
                           "valid disk serial")


def test_missing_credentials_fail_that_host_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _write_example(tmp_path / "inv")
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "lab-bmc").write_text(f"admin:{SECRET}\n")
    monkeypatch.delenv("RECONCILER_CRED_LAB_BMC", raising=False)
    other = root / "servers" / "lab-host-03.yaml"
    other.write_text(other.read_text().replace("credentials: lab-bmc", "credentials: rack9"))
    assert main(["validate", str(root), "--check-credentials", "--secrets-dir",
                 str(secrets)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    assert out[0].startswith("servers/lab-host-03.yaml: bmc.credentials: credentials 'rack9' "
                             "not found (hint: set RECONCILER_CRED_RACK9=username:password or "
                             "create ")
    assert SECRET not in "\n".join(out)


def test_template_overrides_are_rendered_for_every_host_by_validate_and_plan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _write_example(tmp_path / "inv")
    project = (Path("templates") / "user-data.j2").read_text()
    # fails for one host only, and only when provisioning
    (root / "templates").mkdir()
    (root / "templates" / "user-data.j2").write_text(project + (
        "{% if host.name == 'lab-host-02' and purpose == 'provision' %}"
        "{{ host.no_such_field }}{% endif %}\n"))
    assert main(["validate", str(root)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    assert out[0].startswith("servers/lab-host-02.yaml: rendering for provision: template "
                             "user-data.j2: ")
    assert "no_such_field" in out[0]

    (root / "templates" / "user-data.j2").write_text("#cloud-config\n{% if %}\n")
    assert main(["validate", str(root)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert out == ["templates/user-data.j2:2: template syntax error: Expected an expression, "
                   "got 'end of statement block'"]

    # plan shows head's template problems too
    (root / "templates" / "user-data.j2").write_text(project + "{{ 1 // 0 }}\n")
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    assert main(["plan", "--repo", str(root), "--format", "json"]) == 1
    record = json.loads(capsys.readouterr().out)
    texts = {p["file"]: p["message"] for p in record["problems"]}
    assert set(texts) == {f"servers/lab-host-0{n}.yaml" for n in (1, 2, 3)}
    assert all("ZeroDivisionError" in m for m in texts.values())
