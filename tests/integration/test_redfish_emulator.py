"""The driver and the ``reconciler bmc`` command against the real sushy-tools emulator.

One emulator (fake driver, 3 systems, Basic auth from an htpasswd file) under gunicorn on
127.0.0.1 serves the module; a loopback HTTP server serves the images InsertMedia downloads.
The fake driver lands power transitions 1-11 s after the request, so every wait polls with
a deadline. Budget: about a minute.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from reconciler import cli
from reconciler.adapters.redfish import (
    Bmc,
    BmcEndpoint,
    BootEnabled,
    BootTarget,
    ClientSettings,
    PowerState,
)
from reconciler.adapters.redfish import errors as rf_errors
from reconciler.log import register_secret
from tests.fixtures.redfish_emulator import (
    ImageServer,
    RedfishEmulator,
    free_port,
    image_server,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SETTINGS = ClientSettings(poll_interval=0.5)
POWER_DEADLINE = 30.0  # transitions land within 11 s


@pytest.fixture(scope="module")
def emulator() -> Iterator[RedfishEmulator]:
    with RedfishEmulator(systems=3, skip_storage_for=(2,)) as emu:
        register_secret(emu.password or "")
        yield emu


@pytest.fixture(scope="module")
def images() -> Iterator[ImageServer]:
    with image_server({"boot.iso": b"\0" * 65536, "uki.efi": b"MZ" + b"\0" * 4094}) as server:
        yield server


def bmc(emu: RedfishEmulator, index: int | None = 0, password: str | None = None) -> Bmc:
    user, pw = emu.credentials
    system = emu.system_ids[index] if index is not None else None
    return Bmc(BmcEndpoint(emu.url, user, password or pw, system_id=system), SETTINGS)


def test_provisioning_sequence(emulator: RedfishEmulator, images: ImageServer) -> None:
    iso = f"{images.url}/boot.iso"
    with bmc(emulator, 0) as host:
        assert host.quirks.name == "generic"
        assert host.graceful_off(POWER_DEADLINE) == "already-off"
        slot = host.insert_cd(iso)
        assert slot.endswith("/VirtualMedia/Cd")
        host.set_boot(BootTarget.CD, BootEnabled.ONCE)
        status = host.status()
        assert (status.boot_target, status.boot_mode) == ("Cd", "UEFI")
        assert (slot, iso) in status.media
        host.power_on()
        host.wait_power(PowerState.ON, POWER_DEADLINE)
        # Inserting again while mounted: ejected first, then inserted again.
        host.insert_cd(iso)
        assert host.graceful_off(POWER_DEADLINE) == "graceful"
        host.eject_all_media()
        host.clear_boot_override()
        status = host.status()
        assert all(image == "" for _, image in status.media)
        assert (status.boot_target, status.boot_enabled) == ("Hdd", "Continuous")
        assert host.power_cycle() == "On"  # an off host is simply powered on
        host.wait_power(PowerState.ON, POWER_DEADLINE)
        # The emulator does not allow PowerCycle: the driver falls back to ForceRestart.
        assert host.power_cycle() == "ForceRestart"
        host.wait_power(PowerState.ON, POWER_DEADLINE)
        assert host.requests_sent < 200


def test_http_boot_refused_is_permanent_with_a_hint(
    emulator: RedfishEmulator, images: ImageServer
) -> None:
    # The fake driver downloads the file, then answers 400: it cannot store HttpBootUri.
    with bmc(emulator, 1) as host, pytest.raises(rf_errors.BmcUnsupported) as info:
        host.set_boot(BootTarget.UEFI_HTTP, BootEnabled.ONCE, f"{images.url}/uki.efi")
    message = str(info.value)
    assert "boot UefiHttp: HttpBootUri refused: HTTP 400" in message
    assert "HttpBootUri" in message and "boot cd URL" in message


def test_inventory(emulator: RedfishEmulator) -> None:
    with bmc(emulator, 0) as host:
        inv = host.inventory()
    assert inv.uuid == emulator.system_ids[0]
    assert [n.mac for n in inv.nics] == ["52:54:00:19:00:00"]
    assert [(d.serial, d.size_bytes) for d in inv.drives] == [("1234570", 10 * 2**30)]


def test_5xx_answer_is_temporary_and_quotes_the_emulator(emulator: RedfishEmulator) -> None:
    # System 2 has no storage configured: the emulator answers 500 on its Storage.
    with bmc(emulator, 2) as host, pytest.raises(rf_errors.BmcBusy) as info:
        host.inventory()
    message = str(info.value)
    assert message.startswith(f"BMC {emulator.url}: inventory: BMC error: HTTP 500 from GET ")
    assert "Error finding storage collection" in message


def test_bad_credentials(emulator: RedfishEmulator) -> None:
    with bmc(emulator, 0, password="not-the-password") as host, \
            pytest.raises(rf_errors.BmcAuthFailed) as info:
        host.power_state()
    assert "HTTP 401" in str(info.value) and "not-the-password" not in str(info.value)


def test_unreachable() -> None:
    endpoint = BmcEndpoint(f"http://127.0.0.1:{free_port()}", "admin", "pw-unused")
    with pytest.raises(rf_errors.BmcUnreachable, match="connection refused"):
        Bmc(endpoint, SETTINGS).power_state()


def test_many_systems_need_an_id(emulator: RedfishEmulator) -> None:
    with bmc(emulator, None) as host, pytest.raises(rf_errors.BmcRejected, match="3 systems"):
        host.power_state()


def test_cli(
    emulator: RedfishEmulator, images: ImageServer, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    user, pw = emulator.credentials
    monkeypatch.setenv("RECONCILER_CRED_EMU", f"{user}:{pw}")
    base = ["bmc", "--bmc", emulator.url, "--system", emulator.system_ids[1],
            "--credentials", "emu", "--timeout", str(POWER_DEADLINE)]

    def run(*args: str) -> tuple[int, str, str]:
        code = cli.main([*base, *args])
        out, err = capsys.readouterr()
        return code, out, err

    assert run("media", "insert", f"{images.url}/boot.iso")[0] == 0
    assert run("boot", "cd")[0] == 0
    code, out, _ = run("status")
    assert code == 0 and "boot:     Cd" in out and f"{images.url}/boot.iso" in out
    assert run("media", "eject")[0] == 0
    assert run("boot", "hdd")[0] == 0
    code, out, _ = run("inventory")
    assert code == 0 and json.loads(out)["uuid"] == emulator.system_ids[1]
    code, out, _ = run("power", "cycle")
    assert code == 0 and "power cycle: On" in out

    code, _, err = run("media", "insert", f"{images.url}/boot.img")
    errors = [line for line in err.splitlines() if line.startswith("reconciler: error:")]
    assert code == 2 and len(errors) == 1 and ".iso" in errors[0]

    monkeypatch.setenv("RECONCILER_CRED_EMU", f"{user}:wrong-password-9")
    code, _, err = run("status")
    errors = [line for line in err.splitlines() if line.startswith("reconciler: error:")]
    assert code == 1 and len(errors) == 1
    assert errors[0].startswith(
        f"reconciler: error: BMC {emulator.url}: status: authentication failed: HTTP 401"
    )
    assert "wrong-password-9" not in err
