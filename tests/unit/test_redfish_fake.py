"""FakeBmc: the driver interface over recorded Redfish JSON, for other areas' unit tests."""

from __future__ import annotations

import pytest

from reconciler.adapters.redfish import BootEnabled, BootTarget, PowerState
from reconciler.adapters.redfish import errors as rf_errors
from reconciler.adapters.redfish.fake import FakeBmc
from reconciler.adapters.redfish.inventory import Inventory
from reconciler.errors import InputError


def test_provisioning_sequence_on_recorded_emulator_system() -> None:
    bmc = FakeBmc.from_recording("emulator")
    assert bmc.power_state() == PowerState.OFF
    assert bmc.graceful_off(30) == "already-off"
    bmc.insert_cd("http://198.18.0.1:8080/artifacts/x/boot.iso")
    bmc.set_boot(BootTarget.CD, BootEnabled.ONCE)
    bmc.power_on()
    bmc.wait_power(PowerState.ON, 30)
    assert bmc.media and bmc.system["Boot"]["BootSourceOverrideTarget"] == "Cd"
    bmc.eject_all_media()
    bmc.clear_boot_override()
    # The recorded emulator System does not list PowerCycle: the fake falls back like Bmc.
    assert bmc.power_cycle() == "ForceRestart"
    assert bmc.system["Boot"]["BootSourceOverrideEnabled"] == "Continuous"
    assert [c[0] for c in bmc.calls][:3] == ["power_state", "graceful_off", "insert_cd"]


def test_recorded_inventory_round_trips() -> None:
    inv = FakeBmc.from_recording("dell").inventory()
    assert inv.nics[0].mac == "b0:26:28:11:22:31" and len(inv.nics) == 1
    assert inv.drives[0].wwn == "5002538E00000000"
    assert Inventory.from_record(inv.to_record()) == inv


def test_fake_applies_the_real_rules() -> None:
    bmc = FakeBmc.from_recording("dell")
    with pytest.raises(InputError):
        bmc.insert_cd("http://host/boot.iso?x=1")
    bmc.system["Boot"].pop("HttpBootUri")
    with pytest.raises(rf_errors.BmcUnsupported):
        bmc.set_boot(BootTarget.UEFI_HTTP, BootEnabled.ONCE, "http://h/uki.efi")


def test_injected_failure_and_slow_transition() -> None:
    bmc = FakeBmc.from_recording("emulator", transition_polls=3)
    bmc.fail_next("power_on", rf_errors.BmcBusy("BMC fake: power on: busy"))
    with pytest.raises(rf_errors.BmcBusy):
        bmc.power_on()
    bmc.power_on()
    assert bmc.power_state() == PowerState.OFF  # not there yet
    bmc.wait_power(PowerState.ON, 10)
    assert bmc.power_state() == PowerState.ON
