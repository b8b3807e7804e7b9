"""Each supported vendor quirk, reproduced by a vendor-shaped Redfish service on loopback.

Every quirk has a pair of tests: the driver, with the profile chosen from the BMC's own
Manufacturer/Model/firmware, copes (asserting on what the service saw); and the same run with
that profile's switch turned off fails or leaves the service in the wrong state, so removing
the handling makes the pair fail. Numbers refer to /work/shared/redfish-quirks.md.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from reconciler.adapters.redfish import (
    Bmc,
    BmcEndpoint,
    BootEnabled,
    BootTarget,
    ClientSettings,
    PowerState,
    quirks,
)
from reconciler.adapters.redfish import errors as rf_errors
from reconciler.errors import InputError, PermanentError, TemporaryError
from tests.fixtures import redfish_vendors as vendors
from tests.fixtures.redfish_vendors import VendorBmc, VendorSpec

ISO = "http://198.18.0.1:8080/artifacts/abc/boot.iso"
OLD = "http://198.18.0.1:8080/artifacts/old/boot.iso"
FAST = ClientSettings(connect_timeout=1.0, read_timeout=5.0, poll_interval=0.01, backoff=0.001)


def fast_sleep(seconds: float) -> None:
    time.sleep(min(seconds, 0.005))


@pytest.fixture
def serve() -> Iterator[Any]:
    started: list[VendorBmc] = []

    def start(spec: VendorSpec) -> VendorBmc:
        server = VendorBmc(spec).__enter__()
        started.append(server)
        return server

    yield start
    for server in started:
        server.__exit__(None, None, None)


def bmc(server: VendorBmc, **changes: Any) -> Bmc:
    """A driver for ``server``; ``changes`` switch quirks off in the auto-selected profile."""
    override = None
    if changes:
        probe = Bmc(BmcEndpoint(server.url, server.username, server.password), FAST,
                    sleep=fast_sleep)
        override = probe.quirks.with_changes(**changes)
    return Bmc(BmcEndpoint(server.url, server.username, server.password), FAST,
               quirks_override=override, sleep=fast_sleep)


def media_state(server: VendorBmc, slot: str) -> dict[str, Any]:
    return dict(server.slots[slot])


@pytest.mark.parametrize(
    ("factory", "changes", "profile"),
    [
        (vendors.dell_idrac10, {}, "dell-idrac"),
        (vendors.dell_idrac10, {"firmware": "5.10.50.00"}, "dell-idrac-5x"),
        (vendors.hpe_ilo6, {}, "hpe-ilo"),
        (vendors.supermicro_x12, {}, "supermicro-x11"),
        (vendors.supermicro_x12, {"model": "X13SEI-F"}, "supermicro"),
        (vendors.lenovo_sd530, {}, "lenovo-xcc"),
        (vendors.cisco_ucs, {}, "cisco"),
        (vendors.nokia, {}, "nokia"),
        (vendors.nvidia_dgx, {}, "nvidia-dgx"),
        (vendors.nokia, {"manufacturer": "Acme Servers"}, "generic"),
    ],
)
def test_profile_chosen_by_manufacturer_model_firmware(
    serve: Any, factory: Any, changes: dict[str, Any], profile: str
) -> None:
    server = serve(factory(**changes))
    driver = bmc(server)
    assert driver.quirks.name == profile
    # The Manager (firmware) is fetched only when some profile depends on it.
    firmware_needed = quirks.needs_firmware(server.spec.manufacturer, server.spec.model)
    assert server.count("GET", r"^/redfish/v1/Managers/") == (1 if firmware_needed else 0)


# -- Q1: VirtualMedia under Systems only (iDRAC10) or under Managers only ----------------------

def test_q1_vmedia_under_systems_only(serve: Any) -> None:
    server = serve(vendors.dell_idrac10())
    driver = bmc(server)
    assert driver.insert_cd(ISO).startswith("/redfish/v1/Systems/")
    assert media_state(server, "1")["Image"] == ISO


def test_q1_without_system_lookup_no_slot_is_found(serve: Any) -> None:
    server = serve(vendors.dell_idrac10())
    with pytest.raises(rf_errors.BmcUnsupported, match="no CD/DVD virtual media slot"):
        bmc(server, vmedia_locations=("Manager",)).insert_cd(ISO)


def test_q1_vmedia_under_managers_only(serve: Any) -> None:
    server = serve(vendors.nokia())
    assert bmc(server).insert_cd(ISO).startswith("/redfish/v1/Managers/")
    with pytest.raises(rf_errors.BmcUnsupported):
        bmc(serve(vendors.nokia()), vmedia_locations=("System",)).insert_cd(ISO)


# -- Q2 + Q9 (PATCH form): no InsertMedia action, Inserted required in the PATCH ---------------

def test_q2_q9_patch_insert_with_inserted(serve: Any) -> None:
    server = serve(vendors.lenovo_sd530())
    bmc(server).insert_cd(ISO)
    assert media_state(server, "EXT1")["Inserted"] is True
    patches = server.bodies("PATCH", r"/VirtualMedia/EXT1$")
    assert patches[-1] == {"Image": ISO, "Inserted": True, "WriteProtected": True}
    assert server.count("POST", r"InsertMedia") == 0


def test_q2_without_patch_fallback_fails(serve: Any) -> None:
    server = serve(vendors.lenovo_sd530())
    with pytest.raises(rf_errors.BmcRejected, match="no InsertMedia action"):
        bmc(server, insert_via="action", patch_when_no_action=False).insert_cd(ISO)


def test_q9_patch_without_inserted_mounts_nothing(serve: Any) -> None:
    server = serve(vendors.lenovo_sd530())
    with pytest.raises(rf_errors.BmcRejected, match="not showing"):
        bmc(server, patch_insert_flags=False, insert_settle=0.2).insert_cd(ISO)
    assert media_state(server, "EXT1")["Inserted"] is False


# -- Q3 + Q4: slots without InsertMedia / answering 400 or 405; DVD-only slot ------------------

def test_q3_q4_skip_unusable_slots_use_dvd_only_slot(serve: Any) -> None:
    server = serve(vendors.cisco_ucs())
    slot = bmc(server).insert_cd(ISO)
    assert slot.endswith("/VirtualMedia/3")
    assert media_state(server, "3")["Image"] == ISO
    assert server.count("PATCH", r"/VirtualMedia/0$") == 1  # KVM slot: PATCH answered 405
    assert server.count("POST", r"/VirtualMedia/1/Actions") == 1  # answered 400


def test_q3_without_slot_skipping_fails(serve: Any) -> None:
    server = serve(vendors.cisco_ucs())
    with pytest.raises(rf_errors.BmcUnsupported, match="405"):
        bmc(server, next_slot_statuses=frozenset()).insert_cd(ISO)


def test_q4_without_dvd_as_cd_fails(serve: Any) -> None:
    server = serve(vendors.cisco_ucs())
    with pytest.raises(rf_errors.BmcRejected, match="no CD/DVD slot accepted"):
        bmc(server, cd_media_types=frozenset({"CD"})).insert_cd(ISO)
    assert media_state(server, "3")["Image"] == ""


# -- Q5: eject still running (5xx on insert) and stale "Inserted" after eject ------------------

def test_q5_insert_retried_after_eject_race_and_stale_state(serve: Any) -> None:
    server = serve(vendors.dell_idrac10(power="Off", slots=[
        vendors.SlotSpec("1", ["CD", "DVD"], image=ISO)]))  # the SAME url is already mounted
    bmc(server).insert_cd(ISO)
    # Not skipped because the slot already showed this URL: ejected, then inserted again.
    assert server.count("POST", r"/1/Actions/VirtualMedia.EjectMedia") == 1
    assert server.count("POST", r"/1/Actions/VirtualMedia.InsertMedia") == 3  # 2 x 500, then 204
    assert media_state(server, "1")["Inserted"] is True


def test_q5_without_insert_retry_fails_temporarily(serve: Any) -> None:
    server = serve(vendors.dell_idrac10(power="Off"))
    with pytest.raises(rf_errors.BmcBusy, match="VRM0012.*being ejected") as info:
        bmc(server, insert_retry=quirks.Retry(attempts=1)).insert_cd(ISO)
    assert isinstance(info.value, TemporaryError)


def test_q5_insert_verified_against_the_url_not_just_inserted(serve: Any) -> None:
    # The BMC answers 204 but brings back the image it had before the eject.
    server = serve(vendors.dell_idrac10(power="Off", eject_race=0, remounts_previous=True,
                                        slots=[vendors.SlotSpec("1", ["CD"], image=OLD)]))
    with pytest.raises(rf_errors.BmcRejected, match="not showing"):
        bmc(server, insert_settle=0.2).insert_cd(ISO)


# -- Q6: ImageName not cleared after eject, ConnectedVia NotConnected --------------------------

def test_q6_not_connected_slot_counts_as_empty(serve: Any) -> None:
    server = serve(vendors.supermicro_x12())
    driver = bmc(server)
    driver.eject_all_media()
    assert media_state(server, "CD1")["ImageName"] == "previous.iso"  # the vendor kept it
    assert driver.status().media[0][1] == ""


def test_q6_without_not_connected_rule_eject_never_settles(serve: Any) -> None:
    server = serve(vendors.supermicro_x12())
    with pytest.raises(rf_errors.BmcRejected, match="not empty after eject"):
        bmc(server, not_connected_is_empty=False, insert_settle=0.2).eject_all_media()


# -- Q7: leftover media in another slot blocks the insert --------------------------------------

def test_q7_eject_every_slot_first(serve: Any) -> None:
    server = serve(vendors.dell_idrac10(power="Off"))
    bmc(server).insert_cd(ISO)
    assert media_state(server, "2")["Inserted"] is False


def test_q7_without_ejecting_other_slots_insert_fails(serve: Any) -> None:
    server = serve(vendors.dell_idrac10(power="Off", eject_race=0))
    with pytest.raises(rf_errors.BmcBusy, match="Unable to find an available VirtualMedia"):
        bmc(server, eject_all_slots=False).insert_cd(ISO)


# -- Q8: TransferProtocolType required ---------------------------------------------------------

def test_q8_profile_sends_transfer_protocol_up_front(serve: Any) -> None:
    server = serve(vendors.nokia())
    bmc(server).insert_cd(ISO)
    assert server.bodies("POST", r"InsertMedia") == [{"Image": ISO, "TransferProtocolType": "HTTP"}]


def test_q8_generic_adds_it_when_asked(serve: Any) -> None:
    server = serve(vendors.nokia())
    Bmc(BmcEndpoint(server.url, server.username, server.password), FAST,
        quirks_override=quirks.GENERIC, sleep=fast_sleep).insert_cd(ISO)
    assert [("TransferProtocolType" in b) for b in server.bodies("POST", "InsertMedia")] == [
        False, True]


def test_q8_never_sending_it_fails(serve: Any) -> None:
    server = serve(vendors.nokia())
    with pytest.raises(rf_errors.BmcRejected, match="TransferProtocolType"):
        bmc(server, transfer_protocol="never").insert_cd(ISO)


# -- Q9 (POST form): Inserted/WriteProtected rejected as read-only ------------------------------

def test_q9_post_omits_read_only_flags(serve: Any) -> None:
    server = serve(vendors.supermicro_x12())
    bmc(server).insert_cd(ISO)
    assert server.bodies("POST", r"InsertMedia") == [{"Image": ISO}]


def test_q9_post_with_flags_is_rejected(serve: Any) -> None:
    server = serve(vendors.supermicro_x12())
    with pytest.raises(rf_errors.BmcRejected, match="read only"):
        bmc(server, post_insert_flags=True).insert_cd(ISO)


# -- Q10: credentials demanded in InsertMedia ---------------------------------------------------

def test_q10_profile_sends_dummy_credentials(serve: Any) -> None:
    server = serve(vendors.nvidia_dgx())
    bmc(server).insert_cd(ISO)
    assert server.bodies("POST", "InsertMedia") == [
        {"Image": ISO, "UserName": "none", "Password": "none"}]


def test_q10_without_credentials_fails(serve: Any) -> None:
    server = serve(vendors.nvidia_dgx())
    with pytest.raises(rf_errors.BmcRejected, match="UserName"):
        bmc(server, media_credentials="never").insert_cd(ISO)


# -- Q11: .iso suffix, no query -----------------------------------------------------------------

@pytest.mark.parametrize("url", [ISO + "?token=1", ISO.replace(".iso", ".img")])
def test_q11_bad_urls_refused_before_any_change(serve: Any, url: str) -> None:
    server = serve(vendors.supermicro_x12())
    with pytest.raises(InputError):
        bmc(server).insert_cd(url)
    assert server.count("POST", ".") == server.count("PATCH", ".") == 0
    assert media_state(server, "CD1")["ConnectedVia"] == "URI"  # nothing was ejected either


def test_q11_without_url_rules_the_bmc_refuses_later(serve: Any) -> None:
    server = serve(vendors.supermicro_x12())
    with pytest.raises(rf_errors.BmcRejected, match="PropertyValueFormatError"):
        bmc(server, iso_url_rules=False).insert_cd(ISO + "?token=1")


# -- Q12: EjectMedia needs {} -------------------------------------------------------------------

def test_q12_eject_sends_empty_json_body(serve: Any) -> None:
    server = serve(vendors.hpe_ilo6())
    bmc(server).eject_all_media()
    assert server.bodies("POST", "EjectMedia") == [{}]
    assert media_state(server, "2")["Inserted"] is False


def test_q12_eject_without_body_is_refused(serve: Any) -> None:
    server = serve(vendors.hpe_ilo6())
    with pytest.raises(rf_errors.BmcRejected, match="415"):
        bmc(server, eject_json_body=False).eject_all_media()


def _phantom_media(server: VendorBmc, slot: str) -> None:
    """The slot is empty, but its next GET still shows media (a stale read)."""
    server.slots[slot]["_stale"] = {"Image": "http://old.example/x.iso", "Inserted": True,
                                    "ConnectedVia": "URI"}
    server._stale_left[slot] = 1


def test_q12_no_media_present_error_counts_as_ejected(serve: Any) -> None:
    server = serve(vendors.hpe_ilo6(slots=[vendors.SlotSpec("2", ["CD", "DVD"])]))
    _phantom_media(server, "2")
    bmc(server).eject_all_media()  # iLO answers 400 "no media present"; the slot reads empty
    assert server.count("POST", "EjectMedia") == 1


def test_q12_without_absent_rule_the_error_stands(serve: Any) -> None:
    server = serve(vendors.hpe_ilo6(slots=[vendors.SlotSpec("2", ["CD", "DVD"])]))
    _phantom_media(server, "2")
    with pytest.raises(rf_errors.BmcRejected, match="NoVirtualMediaConnectionAvailable"):
        bmc(server, eject_absent_ok=False).eject_all_media()


# -- Q15: override persistence and boot mode -----------------------------------------------------

def test_q15_full_payload_keeps_continuous_and_uefi(serve: Any) -> None:
    server = serve(vendors.supermicro_x12())
    bmc(server).set_boot(BootTarget.HDD, BootEnabled.CONTINUOUS)
    assert server.boot["BootSourceOverrideEnabled"] == "Continuous"
    assert server.boot["BootSourceOverrideMode"] == "UEFI"


def test_q15_minimal_payload_reverts_to_once(serve: Any) -> None:
    server = serve(vendors.supermicro_x12())
    with pytest.raises(rf_errors.BmcRejected, match="enabled 'Once'"):
        bmc(server, boot_full_payload=False).set_boot(BootTarget.HDD, BootEnabled.CONTINUOUS)


# -- Q21: POST race on boot settings after a reset -----------------------------------------------

def test_q21_boot_patch_retried_during_post(serve: Any) -> None:
    server = serve(vendors.hpe_ilo6(power="Off"))
    driver = bmc(server)
    driver.power_on()
    driver.set_boot(BootTarget.CD, BootEnabled.ONCE)
    assert server.boot["BootSourceOverrideTarget"] == "Cd"
    assert server.count("PATCH", r"/Systems/1$") == 3


def test_q21_without_race_retry_fails_temporarily(serve: Any) -> None:
    server = serve(vendors.hpe_ilo6(power="Off"))
    driver = bmc(server, race_retry=quirks.Retry(attempts=1))
    driver.power_on()
    with pytest.raises(rf_errors.BmcBusy, match="UnableToModifyDuringSystemPOST"):
        driver.set_boot(BootTarget.CD, BootEnabled.ONCE)


# -- Q22: power-on refused (409) right after power-off ------------------------------------------

def test_q22_power_on_retried_after_conflict(serve: Any) -> None:
    server = serve(vendors.dell_idrac10())
    driver = bmc(server)
    assert driver.graceful_off(5) == "graceful"
    driver.power_on()
    assert server.power == "On"
    assert [b["ResetType"] for b in server.bodies("POST", "Reset")] == [
        "GracefulShutdown", "On", "On", "On"]


def test_q22_without_conflict_retry_fails(serve: Any) -> None:
    server = serve(vendors.dell_idrac10())
    driver = bmc(server, race_ids=quirks.GENERIC_RACE_IDS)
    driver.graceful_off(5)
    with pytest.raises(rf_errors.BmcRejected, match="ActionParameterValueConflict") as info:
        driver.power_on()
    # Q35: iDRAC's ExtendedInfo is one object, not a list; its words still reach the message.
    assert "conflicts with the current state" in str(info.value)
    assert isinstance(info.value, PermanentError)


# -- Q28: UsbCd vs Cd ---------------------------------------------------------------------------

def test_q28_virtual_cd_boots_as_usbcd(serve: Any) -> None:
    server = serve(vendors.supermicro_x12())
    bmc(server).set_boot(BootTarget.CD, BootEnabled.ONCE)
    assert server.boot["BootSourceOverrideTarget"] == "UsbCd"


def test_q28_plain_cd_mapping_picks_the_wrong_device(serve: Any) -> None:
    server = serve(vendors.supermicro_x12())
    bmc(server, cd_boot_targets=("Cd",)).set_boot(BootTarget.CD, BootEnabled.ONCE)
    assert server.boot["BootSourceOverrideTarget"] != "UsbCd"


# -- Q29: power off before eject ------------------------------------------------------------------

def test_q29_power_off_before_eject(serve: Any) -> None:
    server = serve(vendors.dell_idrac10())
    driver = bmc(server)
    driver.eject_all_media()
    assert server.ejects_while_on == 0
    assert driver.power_state() == PowerState.OFF


def test_q29_without_it_media_is_pulled_from_a_running_host(serve: Any) -> None:
    server = serve(vendors.dell_idrac10())
    bmc(server, power_off_before_eject=False).eject_all_media()
    assert server.ejects_while_on == 1


# -- inventory (Q35: empty MAC strings skipped) ----------------------------------------------------

def test_inventory_from_vendor_documents(serve: Any) -> None:
    server = serve(vendors.dell_idrac10())
    inv = bmc(server).inventory()
    assert inv.serial == "DELL-SN-0001" and inv.model == "PowerEdge R770"
    assert [n.mac for n in inv.nics] == ["b0:26:28:11:22:31"]
    assert [(d.serial, d.wwn, d.size_bytes) for d in inv.drives] == [
        ("S4EVNX0N012345", "5002538E00000000", 960197124096),
        ("S4EVNX0N112345", "5002538E00000001", 960197124096),
    ]
    assert inv.cpus[0].cores == 16 and [m.size_mib for m in inv.memory] == [8192]
    assert inv.profile == "dell-idrac"


def test_nic_macs_come_in_the_inventory_form_whatever_the_bmc_writes() -> None:
    from reconciler.adapters.redfish.inventory import nic_from

    forms = {"AA-BB-CC-DD-EE-01": "aa:bb:cc:dd:ee:01", "aabb.ccdd.ee02": "aa:bb:cc:dd:ee:02",
             "AA:BB:CC:DD:EE:03": "aa:bb:cc:dd:ee:03"}
    for reported, expected in forms.items():
        nic = nic_from({"Id": "1", "MACAddress": reported})
        assert nic is not None and nic.mac == expected
    assert nic_from({"Id": "1", "MACAddress": "00-00-00-00-00-00"}) is None
    odd = nic_from({"Id": "1", "MACAddress": "not a mac"})
    assert odd is not None and odd.mac == "not a mac"  # shown as reported, matches nothing
