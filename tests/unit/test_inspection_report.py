"""Inspection reports (issue 14, parts 1 and 3): ``inspection/<server>.yaml``.

Canonical (the same hardware in any order gives the same bytes), free of volatile values,
valid against its schema, built from untrusted sources with errors naming the field, read by
the inventory as hostile input (refusals name file and line), never part of a desired state;
and a server file with only its BMC is valid for ``state: inspected``.
"""

from __future__ import annotations

import copy
import json
import os
import random
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from reconciler import paths
from reconciler.engine.remote import parse_hw_inventory
from reconciler.model import desired_hosts, load_inventory, parse_inventory
from reconciler.model.inspection import (
    MAX_ITEMS,
    MODELINE,
    ReportError,
    describe_change,
    dump,
    hardware_section,
    load,
    merge,
    normalise_wwn,
    redfish_section,
)
from tests.fixtures.inventory import InventoryRepo, files, server, write

# hw-inventory's output on a lab VM (images/ephemeral/rootfs/usr/local/bin/hw-inventory), with
# the volatile values it prints: link, speed, operstate, MTU, the inspection id, device paths.
HW: dict[str, Any] = {
    "id": "3f1b6c3e-0a41-4b1c-9a0e-7c1d2e3f4a5b",
    "system": {"vendor": "QEMU", "product": "Standard PC (Q35 + ICH9, 2009)", "serial": None,
               "uuid": "0FF58976-52E5-5C97-8886-1DAD2A818041", "sku": None, "family": None,
               "boardVendor": None, "boardProduct": None, "boardSerial": None,
               "biosVendor": "EFI Development Kit II / OVMF", "biosVersion": "0.0.0",
               "biosDate": "02/06/2015"},
    "cpus": {"logical": 2, "sockets": 1, "cores": 2, "models": ["QEMU Virtual CPU version 2.5+"],
             "architecture": "x86_64", "flags": ["fpu", "vme", "md_clear"]},
    "memory": {"totalBytes": 2_083_389_440},
    "disks": [
        {"name": "vda", "path": "/dev/vda", "serial": "LABDISK0001", "wwn": None,
         "model": None, "vendor": "0x1af4", "sizeBytes": 21_474_836_480, "rotational": True,
         "transport": None, "byId": ["/dev/disk/by-id/virtio-LABDISK0001"]},
        {"name": "sda", "path": "/dev/sda", "serial": "  QM00005 ", "wwn": "0x5000C500A1B2C3D4",
         "model": "QEMU HARDDISK", "vendor": "ATA", "sizeBytes": 10_737_418_240,
         "rotational": False, "transport": "sata",
         "byId": ["/dev/disk/by-id/ata-QEMU_HARDDISK_QM00005",
                  "/dev/disk/by-id/wwn-0x5000c500a1b2c3d4"]},
        {"name": "nvme0n1", "path": "/dev/nvme0n1", "serial": None, "wwn": None,
         "model": "NVMe", "vendor": None, "sizeBytes": 1 << 30, "rotational": False,
         "transport": "nvme", "byId": []},
    ],
    "nics": [
        {"name": "enp1s0", "mac": "52:54:00:18:00:01", "permanentMac": None,
         "driver": "virtio_net", "link": True, "operstate": "up", "speedMbps": 1000,
         "mtu": 1500, "pciAddress": "0000:01:00.0"},
        {"name": "enp2s0", "mac": "52:54:00:AA:00:02", "permanentMac": None,
         "driver": "virtio_net", "link": False, "operstate": "down", "speedMbps": None,
         "mtu": 1500, "pciAddress": "0000:02:00.0"},
    ],
}

# The Redfish driver's out-of-band inventory (Bmc.oob_inventory()); None: the BMC did not say.
RF: dict[str, Any] = {
    "system": {"manufacturer": "Sushy Emulator", "model": None, "serial_number": "SN-1",
               "sku": None, "part_number": None,
               "uuid": "0FF58976-52E5-5C97-8886-1DAD2A818041", "bios_version": "1.0"},
    "manager": {"manufacturer": None, "model": "BMC", "firmware_version": "1.2.3"},
    "nics": [{"mac": "52:54:00:18:00:01", "name": "eth0"},
             {"mac": "00:00:00:00:00:00", "name": "unused"}, {"mac": None, "name": "x"}],
    "drives": [
        {"name": "Drive 1", "model": "M", "serial_number": "QM0002", "wwn": "naa.5000C500A1B2C3D5",
         "size_bytes": 1 << 40, "protocol": "SAS", "media_type": "HDD"},
        {"name": "Drive 0", "model": None, "serial_number": "QM0001", "wwn": None,
         "size_bytes": 1 << 39, "protocol": "SATA", "media_type": "SSD"},
    ],
    "firmware": [{"name": "BIOS", "version": "1.0"}, {"name": "BMC", "version": "1.2.3"}],
}


def _shuffled(value: Any, rng: random.Random) -> Any:
    """The same data, every mapping's keys and every list in another order."""
    if isinstance(value, dict):
        keys = list(value)
        rng.shuffle(keys)
        return {k: _shuffled(value[k], rng) for k in keys}
    if isinstance(value, list):
        items = [_shuffled(v, rng) for v in value]
        rng.shuffle(items)
        return items
    return value


def _report(**sections: Any) -> dict[str, Any]:
    return merge(None, "lab-host-01", hardware=hardware_section(HW), redfish=redfish_section(RF),
                 **sections)


def test_the_dump_is_byte_identical_whatever_the_input_order() -> None:
    first = dump(_report())
    rng = random.Random(14)
    for _ in range(30):
        hw, rf = _shuffled(copy.deepcopy(HW), rng), _shuffled(copy.deepcopy(RF), rng)
        doc = merge(None, "lab-host-01", hardware=hardware_section(hw),
                    redfish=redfish_section(rf))
        assert dump(_shuffled(doc, rng)) == first
    assert first.startswith(MODELINE + "\n")
    assert MODELINE.endswith("=../../schemas/inventory/inspection.schema.json")
    assert (Path("inventory-example/servers") / MODELINE.split("=", 1)[1]).resolve().is_file()


def test_the_object_and_the_json_give_the_same_section() -> None:
    parsed = parse_hw_inventory(json.dumps(HW))
    assert hardware_section(parsed) == hardware_section(HW)


def test_volatile_values_and_device_names_are_left_out() -> None:
    text = dump(_report())
    for volatile in ("link", "speed", "operstate", "mtu", "flags", "md_clear", HW["id"],
                     "/dev/", "by_id", "enp1s0", "vda", "sda", "permanent", "0x5000", "naa."):
        assert volatile not in text, volatile
    hw = yaml.safe_load(text)["hardware"]
    # a disk with neither serial nor WWN keeps its name: its only identity
    assert {"name": "nvme0n1", "model": "NVMe", "rotational": False, "size_bytes": 1 << 30,
            "transport": "nvme"} in hw["disks"]
    assert hw["primary_mac"] == "52:54:00:18:00:01"  # the NIC with a link
    assert hw["architecture"] == "amd64" and hw["memory_mib"] == 1986
    assert hw["system"]["uuid"] == "0ff58976-52e5-5c97-8886-1dad2a818041"
    assert [n["mac"] for n in hw["nics"]] == ["52:54:00:18:00:01", "52:54:00:aa:00:02"]
    assert {d.get("serial") for d in hw["disks"]} == {"LABDISK0001", "QM00005", None}
    rf = yaml.safe_load(text)["redfish"]
    assert rf["nics"] == [{"mac": "52:54:00:18:00:01", "name": "eth0"}]  # zero and no MAC: out
    assert [d["serial_number"] for d in rf["drives"]] == ["QM0001", "QM0002"]
    assert rf["drives"][1]["wwn"] == "5000c500a1b2c3d5"
    assert "model" not in rf["system"] and "manufacturer" not in rf["manager"]


def test_the_primary_mac_the_caller_knows_wins() -> None:
    section = hardware_section(HW, primary_mac="52:54:00:AA:00:02")
    assert section["primary_mac"] == "52:54:00:aa:00:02"
    with pytest.raises(ReportError, match="not one of the NICs"):
        hardware_section(HW, primary_mac="52:54:00:99:99:99")


@pytest.mark.parametrize("wwn", ["0x5000C500A1B2C3D4", "naa.5000c500a1b2c3d4",
                                 "wwn-0x5000c500a1b2c3d4", "50:00:C5:00:A1:B2:C3:D4",
                                 " 5000c500a1b2c3d4 "])
def test_wwns_are_normalised_like_find_disk_compares_them(wwn: str) -> None:
    from reconciler.engine.remote import _normalise_wwn

    assert normalise_wwn(wwn) == "5000c500a1b2c3d4"
    if ":" not in wwn:  # find_disk's own comparison agrees
        assert _normalise_wwn(wwn) == normalise_wwn(wwn)


def test_what_is_not_a_wwn_is_left_out() -> None:
    hw = copy.deepcopy(HW)
    hw["disks"][0]["wwn"] = "nvme.1b36-4c41424449534b30303031-51454d55-00000001"  # Linux fallback
    hw["disks"][1]["wwn"] = "eui.0025385B71B0A0B5"
    disks = hardware_section(hw)["disks"]
    assert {d.get("serial"): d.get("wwn") for d in disks} == {
        "LABDISK0001": None, "QM00005": "0025385b71b0a0b5", None: None}


def test_a_bmc_part_that_could_not_be_read_keeps_the_committed_reading() -> None:
    old = _report()
    raw = {**RF, "drives": [], "firmware": [{"name": "BIOS", "version": "1.0"}],
           "nics": [{"mac": "52:54:00:18:00:07", "name": "eth9"}],
           "unavailable": ["drives: HTTP 500 Internal Server Error",
                           "firmware: /redfish/v1/UpdateService/FirmwareInventory/2: HTTP 404",
                           "/redfish/v1/Systems/1: Model is a int, expected a string"]}
    section = redfish_section(raw)
    assert section.unavailable == {"drives", "firmware"} and "unavailable" not in section
    new = merge(old, "lab-host-01", redfish=section)
    assert new["redfish"]["drives"] == old["redfish"]["drives"]
    assert new["redfish"]["firmware"] == old["redfish"]["firmware"]
    assert new["redfish"]["nics"] == [{"mac": "52:54:00:18:00:07", "name": "eth9"}]
    assert "unavailable" not in dump(new)
    # without a committed reading, what was read is what there is
    first = merge(None, "lab-host-01", redfish=section)
    assert "drives" not in first["redfish"] and len(first["redfish"]["firmware"]) == 1
    with pytest.raises(ReportError, match="unavailable\\[0\\]: expected text"):
        redfish_section({"unavailable": [3]})


def test_reports_are_valid_against_their_schema_and_load_back_equal() -> None:
    schema = json.loads((paths.schemas_dir() / "inventory" / "inspection.schema.json")
                        .read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    doc = _report()
    assert not list(validator.iter_errors(doc))
    for example in schema["examples"]:
        assert not list(validator.iter_errors(example))
    text = dump(doc)
    assert load(text, "inspection/lab-host-01.yaml") == doc
    assert dump(load(text, "inspection/lab-host-01.yaml")) == text


@pytest.mark.parametrize(("source", "raw", "message"), [
    ("redfish", {**RF, "drives": [{"size_bytes": "big"}]},
     "Redfish inventory drives[0].size_bytes: expected a count, got 'big'"),
    ("redfish", {**RF, "drives": [{"size_bytes": True}]},
     "Redfish inventory drives[0].size_bytes: expected a count"),
    ("redfish", {**RF, "nics": [{"mac": "not a mac"}]},
     "Redfish inventory nics[0].mac: 'not a mac' is not a MAC address"),
    ("redfish", {**RF, "system": {"model": 7}},
     "Redfish inventory system.model: expected text, got int"),
    ("redfish", {**RF, "system": {"model": "a\nb"}},
     "Redfish inventory system.model: has control characters"),
    ("redfish", {**RF, "manager": {"model": "x" * 300}},
     "Redfish inventory manager.model: more than 256 characters"),
    ("redfish", {**RF, "firmware": [{"name": "x"}] * (MAX_ITEMS + 1)},
     "Redfish inventory firmware: more than 256 entries"),
    ("redfish", {**RF, "power_state": "On"}, "Redfish inventory: unknown field 'power_state'"),
    ("redfish", {**RF, "drives": [{"temperature": 40}]},
     "Redfish inventory drives[0]: unknown field 'temperature'"),
    ("redfish", {**RF, "nics": {"mac": "52:54:00:18:00:01"}},
     "Redfish inventory nics: expected a list, got dict"),
    ("redfish", [], "Redfish inventory: expected a mapping, got list"),
    ("hardware", {**HW, "disks": [{"serial": ["x"]}]},
     "hw-inventory disks[0].serial: expected text, got list"),
    ("hardware", {**HW, "memory": {"totalBytes": -1}},
     "hw-inventory memory.totalBytes: expected a count, got -1"),
    ("hardware", {**HW, "cpus": {"architecture": "x86 64"}},
     "hw-inventory cpus.architecture: 'x86 64' is not an architecture"),
])
def test_untrusted_shapes_are_errors_naming_the_field(source: str, raw: Any,
                                                      message: str) -> None:
    build = redfish_section if source == "redfish" else hardware_section
    with pytest.raises(ReportError) as info:
        build(raw)
    assert str(info.value).startswith(message)


def test_a_report_too_large_for_its_file_is_refused() -> None:
    drives = [{"name": f"{i:03d}" + "d" * 200, "model": "m" * 250, "serial_number": "s" * 250}
              for i in range(MAX_ITEMS)]
    with pytest.raises(ReportError, match="would take .* bytes, more than 96 KiB"):
        redfish_section({"drives": drives})


def test_merge_replaces_only_the_section_it_is_given() -> None:
    hw, rf = hardware_section(HW), redfish_section(RF)
    inband = merge(None, "lab-host-01", hardware=hw)
    assert set(inband) == {"server", "hardware"}
    both = merge(inband, "lab-host-01", redfish=rf)
    assert both["hardware"] == hw and both["redfish"] == rf
    newer = redfish_section({**RF, "system": {**RF["system"], "bios_version": "1.2"}})
    oob = merge(both, "lab-host-01", redfish=newer)
    assert oob["hardware"] == hw and oob["redfish"]["system"]["bios_version"] == "1.2"
    again = merge(oob, "lab-host-01", hardware=hardware_section(copy.deepcopy(HW)))
    assert again == oob  # the same hardware: the same report, no commit
    with pytest.raises(ValueError, match="not 'other'"):
        merge(oob, "other", redfish=rf)


def test_describe_change_says_what_changed_on_one_line() -> None:
    hw, rf = hardware_section(HW), redfish_section(RF)
    old = merge(None, "lab-host-01", hardware=hw, redfish=rf)
    assert describe_change(None, old) == ("hardware: new (3 disks, 2 NICs); "
                                          "redfish: new (2 drives, 1 NIC, 2 firmware)")
    assert describe_change(old, old) == "no change"
    raw = copy.deepcopy(RF)
    raw["system"]["bios_version"] = "1.2"
    raw["drives"].append({"serial_number": "QM0003", "size_bytes": 1 << 30})
    raw["firmware"][0]["version"] = "1.2"
    new = merge(old, "lab-host-01", redfish=redfish_section(raw))
    assert describe_change(old, new) == ("redfish: drive QM0003 added; firmware BIOS version "
                                         "1.0 -> 1.2; bios_version 1.0 -> 1.2")
    raw_hw = copy.deepcopy(HW)
    raw_hw["disks"].pop(0)
    raw_hw["memory"]["totalBytes"] *= 2
    line = describe_change(new, merge(new, "lab-host-01", hardware=hardware_section(raw_hw)))
    assert line == "hardware: disk LABDISK0001 removed; memory_mib 1986 -> 3973"
    assert "\n" not in line


# --- the inventory reads inspection/ ------------------------------------------------------


def _inventory(reports: dict[str, str], **servers: Any) -> Any:
    extra = {f"inspection/{name}.yaml": text for name, text in reports.items()}
    return parse_inventory(files(servers or {"lab-host-01": server(1)}, extra=extra))


def test_the_inventory_reads_reports_and_warns_about_orphans() -> None:
    text = dump(_report())
    orphan = text.replace("server: lab-host-01", "server: gone")
    inventory, problems = _inventory({"lab-host-01": text, "gone": orphan})
    assert problems == []
    assert dict(inventory.inspections) == {"lab-host-01": _report(),
                                           "gone": load(orphan, "inspection/gone.yaml")}
    assert [str(w) for w in inventory.warnings] == [
        f"inspection/gone.yaml:{orphan.splitlines().index('server: gone') + 1}: server: "
        "no server 'gone' in servers/: this report describes nothing"]


HOSTILE = {
    "alias": ("server: lab-host-01\nhardware: &a\n  memory_mib: 1\nredfish: *a\n",
              "inspection/lab-host-01.yaml:4: YAML aliases are not allowed"),
    "unknown field": ("server: lab-host-01\nhardware:\n  memory_mib: 1\n  temperature: 40\n",
                      "inspection/lab-host-01.yaml:4: hardware.temperature: unknown field"),
    "duplicate key": ("server: lab-host-01\nserver: lab-host-01\n",
                      "inspection/lab-host-01.yaml:2: server: duplicate key"),
    "wrong server": ("server: lab-host-02\n",
                     "inspection/lab-host-01.yaml:1: server: 'lab-host-02' is not this file's "
                     "server 'lab-host-01'"),
    "upper-case MAC": ("server: lab-host-01\nredfish:\n  nics:\n    - mac: 'AA:BB:CC:DD:EE:FF'\n",
                       "inspection/lab-host-01.yaml:4: redfish.nics[0].mac: 'AA:BB:CC:DD:EE:FF' "
                       "is not a valid MAC address"),
    "a secret": ("server: lab-host-01\nredfish:\n  password: hunter2\n",
                 "inspection/lab-host-01.yaml:3: redfish.password: looks like a password"),
    "deep": ("server: lab-host-01\nhardware: " + "[" * 70 + "]" * 70 + "\n",
             "inspection/lab-host-01.yaml:2"),
    "not a mapping": ("- server\n", "inspection/lab-host-01.yaml:1: expected a mapping"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_report_files_are_refused_with_file_and_line(case: str) -> None:
    text, expected = HOSTILE[case]
    inventory, problems = _inventory({"lab-host-01": text})
    assert problems and str(problems[0]).startswith(expected), problems
    assert "hunter2" not in " ".join(map(str, problems))
    assert "lab-host-01" in inventory.servers  # a report never rejects its server
    assert "lab-host-01" not in inventory.inspections  # ... and a bad one is not used
    with pytest.raises(ReportError) as info:
        load(text, "inspection/lab-host-01.yaml")
    assert str(info.value).startswith(expected) and "hunter2" not in str(info.value)


def test_report_files_get_the_inventorys_limits_and_refusals(tmp_path: Path) -> None:
    root = tmp_path / "inv"
    write(root, files({"lab-host-01": server(1)}))
    (root / "inspection").mkdir()
    (root / "inspection" / "lab-host-01.yaml").write_text("server: lab-host-01\n"
                                                          + "# x\n" * 70_000)
    os.symlink("/etc/passwd", root / "inspection" / "lab-host-02.yaml")
    (root / "inspection" / "notes.txt").write_text("not a report")
    inventory, problems = load_inventory(root)
    assert [str(p) for p in problems] == [
        "inspection/lab-host-01.yaml: file is 280,020 bytes, more than the limit of 256 KiB",
        "inspection/lab-host-02.yaml: symlinks are not followed"]
    assert "lab-host-01" in inventory.servers and not inventory.inspections
    with pytest.raises(ReportError, match="more than the limit of 256 KiB"):
        load((root / "inspection" / "lab-host-01.yaml").read_bytes(),
             "inspection/lab-host-01.yaml")


def test_reports_are_read_from_git_revisions(tmp_path: Path) -> None:
    from reconciler.adapters.git import GitInventory

    repo = InventoryRepo(tmp_path / "repo")
    text = dump(_report())
    rev = repo.commit({**files({"lab-host-01": server(1)}),
                       "inspection/lab-host-01.yaml": text.encode(),
                       "inspection/deeper/x.yaml": b"server: x\n"}, "report")
    snap = GitInventory(repo.root).snapshot(rev)
    assert "inspection/lab-host-01.yaml" in snap.files
    assert "inspection/deeper/x.yaml" not in snap.files  # inspection/<name>.yaml only
    inventory, problems = parse_inventory(snap.files)
    assert problems == [] and inventory.inspections["lab-host-01"] == _report()


def test_reports_never_change_a_desired_state_or_its_digests() -> None:
    without, _ = _inventory({})
    with_report, problems = _inventory({"lab-host-01": dump(_report())})
    assert problems == []
    a, b = desired_hosts(without)["lab-host-01"], desired_hosts(with_report)["lab-host-01"]
    assert a.to_record() == b.to_record()
    assert a.digests == b.digests and a.inspect_digest == b.inspect_digest


# --- a server file with only its BMC ------------------------------------------------------


def test_a_bmc_only_server_file_is_valid_for_state_inspected() -> None:
    bmc_only = {"state": "inspected", "bmc": server(1)["bmc"]}
    inventory, problems = parse_inventory(files({"lab-host-01": bmc_only}))
    assert problems == []
    host = desired_hosts(inventory)["lab-host-01"]
    assert host.interfaces == () and host.disk is None and host.address is None
    assert host.inspect_generation == 0 and host.inspect_digest
    bumped, _ = parse_inventory(files({"lab-host-01": {**bmc_only, "inspect_generation": 2}}))
    assert desired_hosts(bumped)["lab-host-01"].inspect_digest != host.inspect_digest
    # provisioned still needs what it needs
    _, problems = parse_inventory(files({"lab-host-01": {**bmc_only, "state": "provisioned"}}))
    assert {p.path for p in problems} == {"disk", "interfaces"}
    _, problems = parse_inventory(files({"lab-host-01": {**bmc_only, "inspect_generation": -1}}))
    assert [p.path for p in problems] == ["inspect_generation"]


# --- the Redfish driver's real record -----------------------------------------------------


@pytest.mark.parametrize("vendor", ["dell_idrac9", "hpe_ilo6", "supermicro_x11"])
def test_the_drivers_record_makes_a_valid_stable_section(vendor: str) -> None:
    import time

    from reconciler.adapters.redfish import Bmc, BmcEndpoint, ClientSettings
    from tests.fixtures.redfish_mockups import MockupBmc
    from tests.fixtures.redfish_mockups import load as mockup

    settings = ClientSettings(connect_timeout=1.0, read_timeout=5.0, poll_interval=0.01,
                              backoff=0.001)
    with MockupBmc(mockup(vendor)) as server:
        bmc = Bmc(BmcEndpoint(server.url, server.username, server.password), settings,
                  sleep=lambda s: time.sleep(min(s, 0.002)))
        with bmc:
            record = bmc.oob_inventory()
    section = redfish_section(record)
    doc = merge(None, "lab-host-01", redfish=section)
    text = dump(doc)
    assert load(text, "inspection/lab-host-01.yaml") == doc
    assert dump(merge(None, "lab-host-01", redfish=redfish_section(
        _shuffled(copy.deepcopy(dict(record)), random.Random(3))))) == text
    assert section.get("nics") and section.get("firmware")
