"""Redfish over HTTPS against the real sushy-tools emulator with a certificate from a CA the
test makes, as a BMC with an operator-installed certificate looks: each verification mode of
``BmcEndpoint.verify`` (and of ``reconciler bmc --ca-bundle/--insecure``) does what it says.

Real BMCs ship self-signed certificates; the system CA store must refuse them, with an error
that says what to do and never quotes the password.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler import cli
from reconciler.adapters.redfish import Bmc, BmcEndpoint, ClientSettings, PowerState
from reconciler.adapters.redfish import errors as rf_errors
from reconciler.log import register_secret
from tests.fixtures.redfish_emulator import RedfishEmulator
from tests.fixtures.service import TlsFiles, make_tls

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SETTINGS = ClientSettings(poll_interval=0.5)


@pytest.fixture(scope="module")
def bmc_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedfishEmulator,
                                                                        TlsFiles]]:
    tls = make_tls(tmp_path_factory.mktemp("bmc-tls"))
    with RedfishEmulator(systems=1, tls=tls) as emu:
        register_secret(emu.password or "")
        yield emu, tls


def _bmc(emu: RedfishEmulator, verify: bool | Path) -> Bmc:
    user, pw = emu.credentials
    return Bmc(BmcEndpoint(emu.url, user, pw, verify=verify, system_id=emu.system_ids[0]),
               SETTINGS)


def test_the_bmcs_ca_verifies_it(bmc_tls: tuple[RedfishEmulator, TlsFiles]) -> None:
    emu, tls = bmc_tls
    assert emu.url.startswith("https://")
    with _bmc(emu, tls.ca) as host:
        assert host.power_state() in (PowerState.ON, PowerState.OFF)
        assert host.inventory().uuid == emu.system_ids[0]


def test_the_system_store_refuses_a_private_ca_with_a_hint(
    bmc_tls: tuple[RedfishEmulator, TlsFiles],
) -> None:
    emu, _ = bmc_tls
    with _bmc(emu, True) as host, pytest.raises(rf_errors.BmcTlsError) as info:
        host.power_state()
    message = str(info.value)
    assert "certificate verify failed" in message and "--ca-bundle" in message
    assert emu.url in message and (emu.password or "?") not in message


def test_another_ca_is_refused(
    bmc_tls: tuple[RedfishEmulator, TlsFiles], tmp_path: Path,
) -> None:
    emu, _ = bmc_tls
    other = make_tls(tmp_path)
    with _bmc(emu, other.ca) as host, pytest.raises(rf_errors.BmcTlsError,
                                                     match="certificate verify failed"):
        host.power_state()


def test_insecure_skips_verification(bmc_tls: tuple[RedfishEmulator, TlsFiles]) -> None:
    emu, _ = bmc_tls
    with _bmc(emu, False) as host:
        assert host.power_state() in (PowerState.ON, PowerState.OFF)


def test_cli_ca_bundle_and_insecure(
    bmc_tls: tuple[RedfishEmulator, TlsFiles], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    emu, tls = bmc_tls
    user, pw = emu.credentials
    monkeypatch.setenv("RECONCILER_CRED_EMU_TLS", f"{user}:{pw}")
    base = ["bmc", "--bmc", emu.url, "--credentials", "emu-tls"]
    assert cli.main([*base, "--ca-bundle", str(tls.ca), "status"]) == 0
    assert "power:" in capsys.readouterr().out
    assert cli.main([*base, "--insecure", "status"]) == 0
    capsys.readouterr()
    assert cli.main([*base, "status"]) != 0
    err = capsys.readouterr().err
    assert "TLS failure" in err and "--ca-bundle" in err and pw not in err
