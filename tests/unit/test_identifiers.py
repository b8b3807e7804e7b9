"""Canonical MAC and WWN forms: every spelling a BMC or Linux prints maps to one string."""

from __future__ import annotations

import pytest

from reconciler.model.identifiers import normalise_mac, normalise_wwn


@pytest.mark.parametrize(
    "raw",
    [
        "aa:bb:cc:dd:ee:0f",
        "AA:BB:CC:DD:EE:0F",  # Dell, HPE: upper case
        "aa-bb-cc-dd-ee-0f",  # the Redfish MACAddress pattern allows '-'
        "AA-BB-CC-DD-EE-0F",
        "aabb.ccdd.ee0f",  # Cisco
        "AABBCCDDEE0F",
        "  aa:bb:cc:dd:ee:0f\n",
    ],
)
def test_mac_spellings(raw: str) -> None:
    assert normalise_mac(raw) == "aa:bb:cc:dd:ee:0f"


@pytest.mark.parametrize(
    "raw",
    ["", "aa:bb:cc:dd:ee", "aa:bb:cc:dd:ee:0f:11", "a:b:c:d:e:f", "aa:bb-cc:dd:ee:0f",
     "gg:bb:cc:dd:ee:0f", "Not Available", "aabbccddee0", "x" * 5000],
)
def test_mac_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="is not a MAC address") as info:
        normalise_mac(raw)
    assert len(str(info.value)) < 150  # a hostile value is not echoed whole


def test_mac_not_a_string() -> None:
    with pytest.raises(ValueError, match="not a string"):
        normalise_mac(12345)  # type: ignore[arg-type]


def test_zero_mac_is_well_formed() -> None:
    assert normalise_mac("00-00-00-00-00-00") == "00:00:00:00:00:00"


@pytest.mark.parametrize(
    ("raw", "wwn"),
    [
        ("5000C500D7A6F1C3", "5000c500d7a6f1c3"),  # Redfish NAA DurableName
        ("0x5000c500d7a6f1c3", "5000c500d7a6f1c3"),  # lsblk WWN, udev ID_WWN (SATA/SAS)
        ("wwn-0x5000c500d7a6f1c3", "5000c500d7a6f1c3"),  # /dev/disk/by-id name
        ("naa.5000C500D7A6F1C3", "5000c500d7a6f1c3"),
        ("50:00:C5:00:D7:A6:F1:C3", "5000c500d7a6f1c3"),  # FC_WWN style
        ("eui.002538a921b3c4d5", "002538a921b3c4d5"),  # NVMe EUI-64 (lsblk, wwid)
        ("nvme-eui.002538a921b3c4d5", "002538a921b3c4d5"),
        ("36344730-5290-0123-0025-384500000001", "36344730529001230025384500000001"),  # NGUID
        ("eui.36344730529001230025384500000001", "36344730529001230025384500000001"),
        ("600508B1001C4D3E2F1A0B9C8D7E6F50", "600508b1001c4d3e2f1a0b9c8d7e6f50"),  # NAA type 6
    ],
)
def test_wwn_spellings(raw: str, wwn: str) -> None:
    assert normalise_wwn(raw) == wwn


@pytest.mark.parametrize(
    "raw",
    ["", "0x", "5000c500d7a6f1", "5000c500d7a6f1c3ff", "0000000000000000", "0x0000000000000000",
     "nvme.1b36-4c41424449534b30303031-51454d55204e564d65204374726c-00000001",
     "zz00c500d7a6f1c3", "S4EVNX0N012345"],
)
def test_wwn_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="is not a WWN"):
        normalise_wwn(raw)
