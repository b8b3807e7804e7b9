"""Transport policy and error classification, against real HTTP services on loopback.

A dead BMC fails in seconds, a Reset without an answer is never resent, GETs ride out 5xx,
bad credentials are permanent, and messages name the BMC, the operation and Redfish's own
words without ever carrying the password.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.adapters.redfish import Bmc, BmcEndpoint, ClientSettings, PowerState
from reconciler.adapters.redfish import errors as rf_errors
from reconciler.errors import InputError, PermanentError, TemporaryError
from reconciler.log import register_secret
from tests.fixtures import redfish_vendors as vendors
from tests.fixtures.redfish_emulator import free_port
from tests.fixtures.redfish_vendors import VendorBmc

FAST = ClientSettings(connect_timeout=1.0, read_timeout=5.0, poll_interval=0.01, backoff=0.001)


@pytest.fixture
def dell() -> Iterator[VendorBmc]:
    with VendorBmc(vendors.dell_idrac10(power_on_conflict=0)) as server:
        yield server


def driver(server: VendorBmc, settings: ClientSettings = FAST, password: str | None = None) -> Bmc:
    return Bmc(BmcEndpoint(server.url, server.username, password or server.password), settings,
               sleep=lambda s: time.sleep(min(s, 0.005)))


def test_dead_bmc_fails_in_seconds_with_default_settings() -> None:
    with vendors.blackhole() as url:
        started = time.monotonic()
        with pytest.raises(rf_errors.BmcUnreachable) as info:
            Bmc(BmcEndpoint(url, "root", "pw-123456")).power_state()
        elapsed = time.monotonic() - started
    # A functional deadline, not a performance figure: defaults are a 3 s connect timeout,
    # 2 attempts and 0.5 s backoff (~6.5 s); sushy's own defaults take ~27 s.
    assert 5.0 <= elapsed < 15.0
    assert isinstance(info.value, TemporaryError)
    assert str(info.value) == (
        f"BMC {url}: power state: BMC unreachable on GET /redfish/v1/: connect timed out"
    )


def test_refused_port_is_unreachable_immediately() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(rf_errors.BmcUnreachable, match="connection refused"):
        Bmc(BmcEndpoint(url, "root", "pw-123456"), FAST).power_state()
    assert time.monotonic() - started < 10.0


def test_reset_without_answer_is_never_resent() -> None:
    with VendorBmc(vendors.dell_idrac10(power="Off", hang_resets=True)) as server:
        settings = ClientSettings(connect_timeout=1.0, read_timeout=1.0, get_attempts=3)
        started = time.monotonic()
        with pytest.raises(rf_errors.BmcOutcomeUnknown, match="not resent") as info:
            driver(server, settings).power_on()
        assert time.monotonic() - started < 15.0  # one 1 s read timeout, no resend
        assert server.count("POST", "ComputerSystem.Reset") == 1
        assert isinstance(info.value, TemporaryError)


def test_get_rides_out_a_few_5xx(dell: VendorBmc) -> None:
    dell._fail_gets_left = 2
    assert driver(dell).power_state() == PowerState.ON
    assert dell.count("GET", r"^/redfish/v1/Systems$") == 3  # two 503s then the answer


def test_persistent_5xx_is_temporary_and_quotes_redfish(dell: VendorBmc) -> None:
    dell._fail_gets_left = 100
    with pytest.raises(rf_errors.BmcBusy) as info:
        driver(dell).power_state()
    message = str(info.value)
    assert message.startswith(f"BMC {dell.url}: power state: BMC error: HTTP 503 from GET ")
    assert "ServiceTemporarilyUnavailable: The service is temporarily unavailable." in message
    assert "\n" not in message


def test_bad_credentials_are_permanent_and_never_echo_the_password(dell: VendorBmc) -> None:
    wrong = "Wr0ng-Secret-Value"
    register_secret(wrong)
    with pytest.raises(rf_errors.BmcAuthFailed) as info:
        driver(dell, password=wrong).power_state()
    assert isinstance(info.value, PermanentError)
    text = str(info.value)
    assert "HTTP 401" in text and "InsufficientPrivilege" in text and "hint:" in text
    assert wrong not in text and dell.password not in text


def test_power_cycle_falls_back_when_refused(dell: VendorBmc) -> None:
    dell.spec.power_cycle_status = 501
    assert driver(dell).power_cycle() == "ForceRestart"
    assert [b["ResetType"] for b in dell.bodies("POST", "Reset")] == ["PowerCycle", "ForceRestart"]


def test_power_cycle_not_listed_is_not_attempted(dell: VendorBmc) -> None:
    dell.spec.reset_types = ["On", "ForceOff"]
    assert driver(dell).power_cycle() == "ForceOff+On"
    assert [b["ResetType"] for b in dell.bodies("POST", "Reset")] == ["ForceOff", "On"]


def test_power_cycle_of_an_off_host_powers_it_on(dell: VendorBmc) -> None:
    dell.power = "Off"
    assert driver(dell).power_cycle() == "On"
    assert dell.power == "On"


def test_wait_power_times_out_with_state_in_message(dell: VendorBmc) -> None:
    with pytest.raises(rf_errors.BmcTimeout, match="wait for power Off: still On after 0.1s"):
        driver(dell).wait_power(PowerState.OFF, 0.1)


def test_power_on_of_a_running_host_sends_nothing(dell: VendorBmc) -> None:
    driver(dell).power_on()
    assert dell.count("POST", ".") == 0


def test_system_resolution(dell: VendorBmc) -> None:
    ok = Bmc(BmcEndpoint(dell.url, dell.username, dell.password, system_id="System.Embedded.1"),
             FAST)
    assert ok.system_path == "/redfish/v1/Systems/System.Embedded.1"
    missing = Bmc(BmcEndpoint(dell.url, dell.username, dell.password, system_id="nope"), FAST)
    with pytest.raises(rf_errors.BmcRejected, match="no system 'nope'.*System.Embedded.1"):
        missing.power_state()


def test_http_boot_unsupported_is_permanent_with_hint() -> None:
    with VendorBmc(vendors.dell_idrac10(http_boot_uri=False)) as server:
        with pytest.raises(rf_errors.BmcUnsupported, match="no Boot.HttpBootUri") as info:
            driver(server).set_boot("UefiHttp", "Once", "http://198.18.0.1:8080/a/uki.efi")
        assert "boot cd" in str(info.value)


@pytest.mark.parametrize(
    "url",
    ["ftp://host", "https://", "https://u:p@host", "https://host/redfish/v1", "https://h?x=1"],
)
def test_endpoint_validation(url: str) -> None:
    with pytest.raises(InputError):
        BmcEndpoint(url, "root", "pw")


def test_endpoint_ca_bundle_must_exist(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--ca-bundle"):
        BmcEndpoint("https://10.0.0.5", "root", "pw", verify=tmp_path / "missing.pem")
    assert "pw-secret" not in repr(BmcEndpoint("https://h", "root", "pw-secret"))


def test_settings_validation() -> None:
    with pytest.raises(InputError, match="connect_timeout"):
        ClientSettings(connect_timeout=0)


def test_tls_failure_is_permanent_with_hint(tmp_path: Path) -> None:
    # A plain-HTTP server spoken to over https: the handshake fails.
    with VendorBmc(vendors.nokia()) as server:
        url = server.url.replace("http://", "https://")
        with pytest.raises(rf_errors.BmcTlsError, match="TLS failure") as info:
            Bmc(BmcEndpoint(url, "root", "pw-123456"), FAST).power_state()
        assert "--ca-bundle" in str(info.value)


# -- pure classification --------------------------------------------------------------------------

def test_extended_info_object_or_list() -> None:
    as_object = {"error": {"code": "Base.1.8.GeneralError", "message": "See ExtendedInfo",
                           "@Message.ExtendedInfo": {"MessageId": "IDRAC.2.8.SYS518",
                                                     "Message": "data sources unavailable"}}}
    as_list = {"error": {"@Message.ExtendedInfo": [
        {"MessageId": "Base.1.8.PropertyMissing", "Message": "x",
         "RelatedProperties": ["#/TransferProtocolType"]}]}}
    assert "IDRAC.2.8.SYS518: data sources unavailable" in rf_errors.describe_body(as_object)
    assert rf_errors.has_message(as_object, {"SYS518"})
    assert rf_errors.has_message(as_list, {"TransferProtocolType"})
    assert rf_errors.describe_body("plain\ntext") == "plain text"


@pytest.mark.parametrize(
    ("status", "body", "cls"),
    [
        (503, {}, rf_errors.BmcBusy),
        (500, "oops", rf_errors.BmcBusy),
        (501, {}, rf_errors.BmcUnsupported),
        (405, {}, rf_errors.BmcUnsupported),
        (401, {}, rf_errors.BmcAuthFailed),
        (403, {}, rf_errors.BmcAuthFailed),
        (404, {}, rf_errors.BmcRejected),
        (400, {"error": {"@Message.ExtendedInfo": [
            {"MessageId": "iLO.2.15.UnableToModifyDuringSystemPOST"}]}}, rf_errors.BmcBusy),
        (400, {"error": {"code": "Base.1.8.PropertyValueNotInList"}}, rf_errors.BmcRejected),
    ],
)
def test_status_table(status: int, body: object, cls: type[Exception]) -> None:
    error = rf_errors.http_error(bmc="https://b", operation="op", method="POST", path="/x",
                                 status=status, body=body,
                                 race_ids={"UnableToModifyDuringSystemPOST"})
    assert type(error) is cls
    assert str(error).startswith("BMC https://b: op: ")


def _self_signed(tmp_path: Path) -> tuple[str, str]:
    """A CA-less self-signed certificate for 127.0.0.1 (it is its own CA bundle)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bmc.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "bmc.pem", tmp_path / "bmc.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_file), str(key_file)


def test_tls_verify_modes(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    with VendorBmc(vendors.nokia(), tls=(cert, key)) as server:
        def state(verify: bool | Path) -> PowerState:
            endpoint = BmcEndpoint(server.url, server.username, server.password, verify=verify)
            return Bmc(endpoint, FAST).power_state()

        assert server.url.startswith("https://")
        assert state(Path(cert)) == PowerState.ON  # CA bundle
        assert state(False) == PowerState.ON  # verification off
        with pytest.raises(rf_errors.BmcTlsError, match="certificate verify failed"):
            state(True)  # system CA store does not know this certificate


def test_wait_power_rides_out_a_bmc_busy_during_the_transition(dell: VendorBmc) -> None:
    dell.power = "Off"
    bmc_ = driver(dell)
    assert bmc_.power_state() == PowerState.OFF  # connected, connect-time read used up
    dell._fail_gets_left = 4  # one whole poll (3 GET attempts) fails, then the next succeeds
    bmc_.wait_power(PowerState.OFF, 5)
    assert dell.count("GET", r"/Systems/System.Embedded.1$") >= 5


def test_power_on_while_powering_on_sends_nothing(dell: VendorBmc) -> None:
    dell.power = "PoweringOn"
    driver(dell).power_on()
    assert dell.count("POST", ".") == 0


def test_uefi_http_boot_then_clear(dell: VendorBmc) -> None:
    uki = "http://198.18.0.1:8080/artifacts/abc/uki.efi"
    bmc_ = driver(dell)
    bmc_.set_boot("UefiHttp", "Once", uki)
    assert dell.bodies("PATCH", r"/Systems/System.Embedded.1$")[-1] == {"Boot": {
        "BootSourceOverrideTarget": "UefiHttp", "BootSourceOverrideEnabled": "Once",
        "BootSourceOverrideMode": "UEFI", "HttpBootUri": uki}}  # the seed's body
    bmc_.clear_boot_override()
    assert dell.bodies("PATCH", r"/Systems/System.Embedded.1$")[-1] == {"Boot": {
        "BootSourceOverrideTarget": "Hdd", "BootSourceOverrideEnabled": "Continuous",
        "BootSourceOverrideMode": "UEFI", "HttpBootUri": ""}}
    assert dell.boot["HttpBootUri"] == "" and dell.boot["BootSourceOverrideTarget"] == "Hdd"
