"""``Bmc.oob_inventory()`` against vendor-shaped Redfish mockups on loopback.

Dell iDRAC9, HPE iLO 6 and Supermicro X11 shapes (tests/fixtures/redfish_mockups/*.json) give
the record the report commits; hostile variants (failing parts, wrong types, links off the
BMC, huge collections, a BMC echoing the password) show each is a note, never a crash, and
that only GETs are ever sent.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from reconciler import cli
from reconciler.adapters.redfish import Bmc, BmcEndpoint, ClientSettings, oob
from reconciler.adapters.redfish import errors as rf_errors
from reconciler.adapters.redfish.fake import FakeBmc
from reconciler.errors import TemporaryError
from tests.fixtures.redfish_mockups import Documents, MockupBmc, changed, load

FAST = ClientSettings(connect_timeout=1.0, read_timeout=5.0, poll_interval=0.01, backoff=0.001)

DELL_S = "/redfish/v1/Systems/System.Embedded.1"
DELL_M = "/redfish/v1/Managers/iDRAC.Embedded.1"
FW = "/redfish/v1/UpdateService/FirmwareInventory"
DISK1 = f"{DELL_S}/Storage/RAID.SL.1-1/Drives/Disk.Bay.1:Enclosure.Internal.0-1:RAID.SL.1-1"

SHAPE = {
    "system": {"manufacturer", "model", "serial_number", "sku", "part_number", "uuid",
               "bios_version"},
    "manager": {"manufacturer", "model", "firmware_version"},
    "nics": {"mac", "name"},
    "drives": {"name", "model", "serial_number", "wwn", "size_bytes", "protocol", "media_type"},
    "firmware": {"name", "version"},
}


@pytest.fixture
def serve() -> Iterator[Any]:
    started: list[MockupBmc] = []

    def start(docs: Documents) -> MockupBmc:
        server = MockupBmc(docs).__enter__()
        started.append(server)
        return server

    yield start
    for server in started:
        server.__exit__(None, None, None)


def read(server: MockupBmc) -> oob.OobInventory:
    bmc = Bmc(BmcEndpoint(server.url, server.username, server.password), FAST,
              sleep=lambda s: time.sleep(min(s, 0.002)))
    with bmc:
        return bmc.oob_inventory()


def check_shape(record: Any) -> None:
    assert set(record) == {*SHAPE, "unavailable"}
    for part in ("system", "manager"):
        assert set(record[part]) == SHAPE[part]
    for part in ("nics", "drives", "firmware"):
        assert all(set(item) == SHAPE[part] for item in record[part])
        keys = [json.dumps(item, sort_keys=True) for item in record[part]]
        assert len(keys) == len(set(keys))  # no duplicates
    for note in record["unavailable"]:  # "<part>: <why>", short
        assert isinstance(note, str) and len(note) <= 200
        assert note.split(":")[0] in SHAPE or note.startswith("... "), note
    json.dumps(record)  # plain data


# -- vendor shapes -----------------------------------------------------------------------------

def test_dell_idrac9(serve: Any) -> None:
    server = serve(load("dell_idrac9"))
    record = read(server)
    check_shape(record)
    assert record["system"] == {
        "manufacturer": "Dell Inc.", "model": "PowerEdge R760", "serial_number": "CNIVC0034A0123",
        "sku": "7XK2Q93", "part_number": "0VRCM2A05",
        "uuid": "4c4c4544-0058-4b10-8032-b7c04f513933", "bios_version": "1.6.6",
    }
    assert record["manager"] == {"manufacturer": None, "model": "16G Monolithic",
                                 "firmware_version": "7.00.00.172"}
    # Upper case normalised; the partitioned port reports its permanent MAC, not the virtual
    # one; the port with empty MAC strings (Q35) is left out.
    assert record["nics"] == [{"mac": "b0:26:28:aa:bb:01", "name": "NIC.Integrated.1-1-1"},
                              {"mac": "b0:26:28:aa:bb:02", "name": "NIC.Integrated.1-2-1"}]
    assert [(d["name"], d["serial_number"], d["wwn"], d["size_bytes"]) for d in record["drives"]] \
        == [
            ("PCIe SSD in Slot 4 in Bay 1", "Y0R0A0AB0CD1", "8ce38ee2054b1b0100000000000000a1",
             1920383410176),
            ("Physical Disk 0:1:0", "S6ESNE0T601234", "5002538f43a1b2c0", 960197124096),
            ("Physical Disk 0:1:1", "WBN4ABCD", "5000c500d7a6f1c3", 2399276105728),
            ("SSD 0", None, None, 480103981056),  # BOSS M.2: empty serial, null durable name
        ]
    assert record["drives"][2]["protocol"] == "SAS" and record["drives"][2]["media_type"] == "HDD"
    # Previous-/Available- members are not running firmware; Installed-/Current- duplicates
    # collapse; the BIOS and the Manager's firmware are added.
    assert record["firmware"] == [
        {"name": "BIOS", "version": "1.6.6"},
        {"name": "BMC", "version": "7.00.00.172"},
        {"name": "Broadcom Adv. Dual 25Gb Ethernet - B0:26:28:AA:BB:01", "version": "22.71.3"},
        {"name": "Broadcom Adv. Dual 25Gb Ethernet - B0:26:28:AA:BB:02", "version": "22.71.3"},
        {"name": "Integrated Dell Remote Access Controller", "version": "7.00.00.172"},
        {"name": "PERC H755 Front", "version": "52.26.0-5179"},
    ]
    assert record["unavailable"] == []
    assert server.methods() == {"GET"}
    assert server.count("GET", "/SimpleStorage") == 0  # Storage listed drives


def test_hpe_ilo6(serve: Any) -> None:
    server = serve(load("hpe_ilo6"))
    record = read(server)
    check_shape(record)
    assert record["system"]["uuid"] == "36383750-3135-5a43-3244-314630414243"
    assert [n["mac"] for n in record["nics"]] == ["94:40:c9:5e:7a:10", "94:40:c9:5e:7a:11"]
    drives = {d["name"]: d for d in record["drives"]}
    assert sorted(drives) == ["1.2TB 12G SAS HDD", "1.6TB NVMe MU SSD", "480GB 6G SATA SSD"]
    assert drives["1.2TB 12G SAS HDD"]["serial_number"] is None  # a blank serial
    assert drives["1.2TB 12G SAS HDD"]["wwn"] == "5000cca0abcd1234"  # "0x..." normalised
    # EUI-64 and NGUID both given: NGUID, as Linux's /sys/block/*/wwid prefers it.
    assert drives["1.6TB NVMe MU SSD"]["wwn"] == "36344730529001230025384500000001"
    assert {"name": "iLO 6", "version": "1.59 Jul 03 2024"} in record["firmware"]
    assert {"name": "BMC", "version": "iLO 6 v1.59"} in record["firmware"]
    assert record["unavailable"] == [] and server.methods() == {"GET"}


def test_supermicro_simple_storage_and_firmware_404(serve: Any) -> None:
    server = serve(load("supermicro_x11"))
    record = read(server)
    check_shape(record)
    assert [n["mac"] for n in record["nics"]] == ["ac:1f:6b:12:34:56", "ac:1f:6b:12:34:57"]
    assert record["drives"] == [{"name": "Disk 0", "model": "SAMSUNG MZ7KM480",
                                 "serial_number": None, "wwn": None,
                                 "size_bytes": 480103981056, "protocol": None,
                                 "media_type": None}]  # the Absent port is left out
    assert record["firmware"] == [{"name": "BIOS", "version": "3.4"},
                                  {"name": "BMC", "version": "01.73.12"}]
    [note] = record["unavailable"]
    assert note.startswith(f"firmware: HTTP 404 from GET {FW}")


def test_member_order_does_not_change_the_record(serve: Any) -> None:
    docs = load("dell_idrac9")
    first = read(serve(docs))
    shuffled = copy.deepcopy(docs)
    for doc in shuffled.values():
        if isinstance(doc, dict):
            for key in ("Members", "Drives"):
                if isinstance(doc.get(key), list):
                    doc[key].reverse()
    assert read(serve(shuffled)) == first


def test_no_volatile_values(serve: Any) -> None:
    for name in ("dell_idrac9", "hpe_ilo6"):
        text = json.dumps(read(serve(load(name))))
        for volatile in ("PowerState", "Health", "LinkUp", "25000", "DateTime", "2026-11-30",
                         "Enabled", "PredictedMediaLifeLeft"):
            assert volatile not in text, (name, volatile)


def test_storage_failing_falls_back_to_simple_storage(serve: Any) -> None:
    # The sushy-tools libvirt driver: Storage answers 500, SimpleStorage lists the disks.
    docs = changed(load("dell_idrac9"), {f"{DELL_S}/Storage": 500})
    record = read(serve(docs))
    assert [(d["name"], d["size_bytes"]) for d in record["drives"]] == [
        ("Physical Disk 0:1:0", 960197124096)]
    [note] = record["unavailable"]
    assert note.startswith(f"drives: HTTP 500 from GET {DELL_S}/Storage: Base.1.8.GeneralError")


def test_neither_storage_nor_simple_storage(serve: Any) -> None:
    docs = load("supermicro_x11")
    system = dict(docs["/redfish/v1/Systems/1"])
    del system["SimpleStorage"]
    record = read(serve(changed(docs, {"/redfish/v1/Systems/1": system})))
    assert record["drives"] == []
    assert "drives: the System links neither Storage nor SimpleStorage" in record["unavailable"]


# -- hostile and failing BMCs ------------------------------------------------------------------

def test_failing_parts_leave_the_rest(serve: Any) -> None:
    docs = changed(load("dell_idrac9"), {
        DISK1: 500,
        FW: 503,
        f"{DELL_S}/EthernetInterfaces": {"Members": "all of them"},
    })
    server = serve(docs)
    record = read(server)
    check_shape(record)
    assert record["system"]["serial_number"] == "CNIVC0034A0123"
    assert record["manager"]["firmware_version"] == "7.00.00.172"
    assert record["nics"] == []
    assert [d["serial_number"] for d in record["drives"]] == [
        "Y0R0A0AB0CD1", "S6ESNE0T601234", None]  # Disk.Bay.1 is missing, the rest are read
    assert record["firmware"] == [{"name": "BIOS", "version": "1.6.6"},
                                  {"name": "BMC", "version": "7.00.00.172"}]
    notes = record["unavailable"]
    assert [n.split(":")[0] for n in notes] == ["drives", "firmware", "nics"]
    assert notes[0].startswith(f"drives: HTTP 500 from GET {DISK1}")
    assert notes[1].startswith(f"firmware: HTTP 503 from GET {FW}")
    assert notes[2] == f"nics: {DELL_S}/EthernetInterfaces: Members is a str, expected a list"
    assert server.methods() == {"GET"}


def test_failing_manager_leaves_the_rest(serve: Any) -> None:
    # (On Dell the Manager is read while connecting, for the profile's firmware range: a
    # Manager that fails there fails every operation, this one included.)
    server = serve(changed(load("hpe_ilo6"), {"/redfish/v1/Managers/1": 500}))
    record = read(server)
    assert record["manager"] == {"manufacturer": None, "model": None, "firmware_version": None}
    assert len(record["drives"]) == 3 and {"name": "BMC", "version": "iLO 6 v1.59"} \
        not in record["firmware"]
    [note] = record["unavailable"]
    assert note.startswith("manager: HTTP 500 from GET /redfish/v1/Managers/1")


def test_wrong_types_become_notes(serve: Any) -> None:
    docs = load("dell_idrac9")
    system = dict(docs[DELL_S], SerialNumber={"a": 1}, SKU=12345, Model="x" * 1000,
                  Links={"ManagedBy": []})
    nic = f"{DELL_S}/EthernetInterfaces/NIC.Integrated.1-1-1"
    nic2 = f"{DELL_S}/EthernetInterfaces/NIC.Integrated.1-2-1"
    disk0 = DISK1.replace("Bay.1", "Bay.0")
    boss = f"{DELL_S}/Storage/BOSS.SL.14-1"
    record = read(serve(changed(docs, {
        DELL_S: system,
        # a bad permanent MAC: the current MAC is used; a list for a MAC: skipped, noted
        nic: dict(docs[nic], PermanentMACAddress="not-a-mac"),
        nic2: dict(docs[nic2], PermanentMACAddress=None, MACAddress=["b0:26:28:aa:bb:02"]),
        DISK1: dict(docs[DISK1], CapacityBytes="huge", Identifiers="NAA:5000C500D7A6F1C3"),
        disk0: dict(docs[disk0], CapacityBytes="960197124096",
                    Identifiers=[{"DurableNameFormat": "NAA", "DurableName": "0000000000000000"}]),
        boss: dict(docs[boss], Drives={"@odata.id": "x"}),
        f"{DELL_S}/Storage/CPU.1/Drives/Disk.Bay.4:Enclosure.Internal.0-1": [1, 2, 3],
        f"{FW}/Installed-159-1.6.6__BIOS.Setup.1-1": "<html>login</html>",
    })))
    check_shape(record)
    assert record["system"]["serial_number"] is None and record["system"]["model"] is None
    assert record["system"]["sku"] == "12345"
    assert record["manager"]["firmware_version"] is None
    assert record["nics"] == [{"mac": "b0:26:28:aa:bb:01", "name": "NIC.Integrated.1-1-1"}]
    drives = {d["name"]: d for d in record["drives"]}
    assert sorted(drives) == ["Physical Disk 0:1:0", "Physical Disk 0:1:1"]
    assert drives["Physical Disk 0:1:0"]["size_bytes"] == 960197124096  # digits accepted
    assert drives["Physical Disk 0:1:0"]["wwn"] is None  # all zeros is no WWN
    assert drives["Physical Disk 0:1:1"]["size_bytes"] is None
    text = "\n".join(record["unavailable"])
    for expected in (
        f"{DELL_S}: SerialNumber is a dict, expected a string",
        f"{DELL_S}: Model is 1000 characters long (at most 256)",
        "manager: the System links no Manager (Links.ManagedBy)",
        "MACAddress ['b0:26:28:aa:bb:02'] is not a MAC address (not a string)",
        f"{DISK1}: CapacityBytes 'huge' is not a size in bytes",
        f"{DISK1}: Identifiers is a str, expected a list",
        "Identifiers NAA: '0000000000000000' is not a WWN (all zeros)",
        f"drives: {boss}: Drives is a dict, expected a list",
        "Disk.Bay.4:Enclosure.Internal.0-1: not a JSON object",
        "Installed-159-1.6.6__BIOS.Setup.1-1: not a JSON object",
    ):
        assert expected in text, expected


def test_links_off_the_bmc_are_never_followed(serve: Any) -> None:
    elsewhere = serve(load("dell_idrac9"))
    docs = load("dell_idrac9")
    raid = f"{DELL_S}/Storage/RAID.SL.1-1"
    server = serve(changed(docs, {
        raid: dict(docs[raid], Drives=[
            {"@odata.id": f"{elsewhere.url}{DISK1}"},
            {"@odata.id": "/etc/passwd"},
            {"@odata.id": "/redfish/v1/../../etc/shadow"},
        ]),
        FW: dict(docs[FW], Members=[
            {"@odata.id": f"{elsewhere.url}{FW}/Installed-159-1.6.6__BIOS.Setup.1-1"},
            "https://evil.example/redfish/v1/x",
            7,
        ], **{"Members@odata.nextLink": f"{elsewhere.url}{FW}?$skip=3"}),
    }))
    record = read(server)
    assert elsewhere.requests == []
    notes = "\n".join(record["unavailable"])
    assert notes.count("points off the BMC (to 127.0.0.1:") == 3
    assert "points off the BMC (to evil.example)" in notes
    assert "'/etc/passwd' is not a Redfish path on this BMC" in notes
    assert "'/redfish/v1/../../etc/shadow' is not a Redfish path" in notes
    assert f"{FW}: Members[2] has no @odata.id" in notes
    assert [d["name"] for d in record["drives"]] == ["PCIe SSD in Slot 4 in Bay 1", "SSD 0"]
    # This BMC named by a full URL is fine.
    same = serve(load("dell_idrac9"))
    same.documents[FW] = {"Members": [
        {"@odata.id": f"{same.url}{FW}/Installed-159-1.6.6__BIOS.Setup.1-1"}]}
    assert read(same)["firmware"] == [{"name": "BIOS", "version": "1.6.6"},
                                      {"name": "BMC", "version": "7.00.00.172"}]


def test_huge_collection_is_bounded_and_paging_is_followed(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    docs = load("supermicro_x11")
    members = [f"{FW}/{i}" for i in range(1000)]
    docs[FW] = {"Members": [{"@odata.id": m} for m in members[:600]],
                "Members@odata.count": 1000, "Members@odata.nextLink": f"{FW}?$skip=600"}
    docs[f"{FW}?$skip=600"] = {"Members": [{"@odata.id": m} for m in members[600:]]}
    for i, path in enumerate(members[:oob.MAX_FIRMWARE]):
        docs[path] = {"Id": str(i), "Name": f"component {i:04d}", "Version": "1.0"}
    nics = "/redfish/v1/Systems/1/EthernetInterfaces"
    docs[nics] = {"Members": [{"@odata.id": f"{nics}/1"}],
                  "Members@odata.nextLink": f"{nics}?$skip=1"}
    docs[f"{nics}?$skip=1"] = {"Members": [{"@odata.id": f"{nics}/2"}]}
    server = serve(docs)
    with caplog.at_level(logging.WARNING):
        record = read(server)
    assert len(record["firmware"]) == oob.MAX_FIRMWARE + 2  # + BIOS and BMC
    assert server.count("GET", rf"^{FW}/\d+$") == oob.MAX_FIRMWARE
    assert server.count("GET", rf"^{FW}$") == 1  # the second page is not needed
    assert record["unavailable"] == [f"firmware: {FW} lists 1000 members, read the first 256"]
    assert "lists 1000 members; reading the first 256" in caplog.text
    assert [n["mac"] for n in record["nics"]] == ["ac:1f:6b:12:34:56", "ac:1f:6b:12:34:57"]


def test_many_bad_items_keep_the_notes_short(serve: Any) -> None:
    docs = load("supermicro_x11")
    nics = "/redfish/v1/Systems/1/EthernetInterfaces"
    docs[nics] = {"Members": [{"@odata.id": f"{nics}/{i}"} for i in range(30)]}
    for i in range(30):
        docs[f"{nics}/{i}"] = {"Id": str(i), "MACAddress": f"bad-mac-{i}"}
    record = read(serve(docs))
    assert record["nics"] == []
    assert len(record["unavailable"]) == oob.MAX_NOTES + 1
    assert record["unavailable"][-1] == "... 11 more not shown"  # 30 NICs + firmware 404


def test_password_never_in_notes_or_logs(serve: Any, caplog: pytest.LogCaptureFixture) -> None:
    docs = load("hpe_ilo6")
    server = MockupBmc(docs, password="s3cret-Pass-9")
    with server:
        server.documents["/redfish/v1/Managers/1"] = (500, "login root:s3cret-Pass-9 refused")
        with caplog.at_level(logging.DEBUG):
            record = read(server)
    assert record["unavailable"] == [
        "manager: HTTP 500 from GET /redfish/v1/Managers/1: login root:*** refused"]
    assert "s3cret-Pass-9" not in json.dumps(record)
    assert "s3cret-Pass-9" not in caplog.text


def test_unreadable_system_fails_the_whole_call(serve: Any) -> None:
    server = serve(changed(load("dell_idrac9"), {DELL_S: 500}))
    with pytest.raises(TemporaryError, match="out-of-band inventory: BMC error: HTTP 500"):
        read(server)
    server = serve(load("dell_idrac9"))
    bmc = Bmc(BmcEndpoint(server.url, server.username, "wrong-pw-7"), FAST)
    with pytest.raises(rf_errors.BmcAuthFailed) as info:
        bmc.oob_inventory()
    assert "wrong-pw-7" not in str(info.value)


# -- FakeBmc and the command line --------------------------------------------------------------

def test_fake_bmc_gives_the_same_shape() -> None:
    fake = FakeBmc.from_recording("dell")
    record = fake.oob_inventory()
    check_shape(record)
    assert [n["mac"] for n in record["nics"]] == ["b0:26:28:11:22:31"]
    assert [(d["serial_number"], d["wwn"]) for d in record["drives"]] == [
        ("S4EVNX0N012345", "5002538e00000000"), ("S4EVNX0N112345", "5002538e00000001")]
    assert ("oob_inventory", ()) in fake.calls
    docs = load("hpe_ilo6")
    s = "/redfish/v1/Systems/1"
    fake = FakeBmc({
        "system": docs[s], "manager": docs["/redfish/v1/Managers/1"],
        "nics": [docs[f"{s}/EthernetInterfaces/1"], docs[f"{s}/EthernetInterfaces/2"]],
        "drives": [docs[f"{s}/Storage/DE00C000/Drives/0"]],
        "firmware": [docs[f"{FW}/1"]],
        "oob_unavailable": ["firmware: HTTP 503 from GET /x"],
    })
    record = fake.oob_inventory()
    check_shape(record)
    assert record["manager"]["firmware_version"] == "iLO 6 v1.59"
    assert record["drives"][0]["wwn"] == "36344730529001230025384500000001"
    assert record["unavailable"] == ["firmware: HTTP 503 from GET /x"]
    fake.fail_next("oob_inventory", rf_errors.make(
        rf_errors.BmcBusy, bmc="fake", operation="out-of-band inventory", text="busy"))
    with pytest.raises(rf_errors.BmcBusy):
        fake.oob_inventory()


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_cli_prints_the_record(
    serve: Any, fmt: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    server = serve(load("hpe_ilo6"))
    monkeypatch.setenv("RECONCILER_CRED_OOBTEST", f"{server.username}:{server.password}")
    code = cli.main(["bmc", "--bmc", server.url, "--credentials", "oobtest",
                     "inventory", "--oob", "--format", fmt])
    out = capsys.readouterr().out
    assert code == 0
    printed = json.loads(out) if fmt == "json" else yaml.safe_load(out)
    assert printed == read(server)
    assert server.methods() == {"GET"}
