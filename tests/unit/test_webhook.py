"""POST /api/v1/hooks/git: published example deliveries verify; tampered, SHA-1-only, unsigned
and wrongly signed ones are refused (401, logged without body or signature); only a push to the
watched branch wakes the loop, and a burst of pushes costs one or two passes of the real loop.
The secret's reference resolves at start; an empty one is a configuration error."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from werkzeug.datastructures import Headers

from reconciler.engine.config import RunSettings, load_run_settings, resolve_webhook_secret
from reconciler.engine.loop import run_forever
from reconciler.errors import InputError
from reconciler.log import redact
from reconciler.web.hooks import verify
from tests.fixtures.fleet_app import UNTRUSTED, FleetApi, fleet_app

SECRET = b"It's a Secret to Everybody"
# GitHub's documented test vector ("Validating webhook deliveries"): this secret, this body.
GITHUB_VECTOR = (b"Hello, World!",
                 "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17")


def sign(body: bytes, secret: bytes = SECRET) -> str:
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def push(ref: str = "refs/heads/main") -> bytes:
    """A push delivery's body, shaped like Gitea's documented example."""
    return json.dumps({
        "ref": ref,
        "before": "28e1879d029cb852e4844d9c718537df08844e03",
        "after": "bffeb74224043ba2feb48d137756c8a9331c449a",
        "commits": [{"id": "bffeb74224043ba2feb48d137756c8a9331c449a",
                     "message": "Webhooks Yay!"}],
        "repository": {"full_name": "gitea/webhooks"},
    }).encode()


def github(body: bytes, event: str = "push", secret: bytes = SECRET) -> dict[str, str]:
    return {"X-GitHub-Event": event, "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
            "X-Hub-Signature-256": "sha256=" + sign(body, secret),
            "Content-Type": "application/json"}


def gitea(body: bytes, event: str = "push") -> dict[str, str]:
    """What Gitea sends: its own, Gogs' and GitHub's event headers, its signatures (and the
    SHA-1 one, which is never what verifies it)."""
    sha1 = hmac.new(SECRET, body, hashlib.sha1).hexdigest()
    return {"X-Gitea-Event": event, "X-Gogs-Event": event, "X-GitHub-Event": event,
            "X-Gitea-Delivery": "f6266f16-1bf3-46a5-9ea4-602e06ead473",
            "X-Gitea-Signature": sign(body), "X-Gogs-Signature": sign(body),
            "X-Hub-Signature": f"sha1={sha1}", "X-Hub-Signature-256": f"sha256={sign(body)}",
            "Content-Type": "application/json"}


def post(api: FleetApi, body: bytes, headers: dict[str, str], *,
         client: str = "127.0.0.1") -> Any:
    return api.call("POST", "/api/v1/hooks/git", data=body, headers=headers, client=client)


@pytest.fixture
def api(tmp_path: Path) -> Any:
    with fleet_app(tmp_path, secret=SECRET) as made:
        yield made


# --- signatures -------------------------------------------------------------------------------


def test_github_s_published_test_vector_verifies() -> None:
    body, header = GITHUB_VECTOR
    assert "sha256=" + sign(body) == header
    assert verify(Headers({"X-Hub-Signature-256": header}), body, SECRET) is None
    assert verify(Headers({"X-Hub-Signature-256": header.upper().replace("SHA256", "sha256")}),
                  body, SECRET) is None  # hex digits in either case
    assert verify(Headers({"X-Hub-Signature-256": header}), body + b" ", SECRET) is not None
    assert verify(Headers({"X-Hub-Signature-256": header.replace("sha256", "sha1")}), body,
                  SECRET) is not None


@pytest.mark.parametrize(("headers", "why"), [
    ({}, "not signed"),
    ({"X-Hub-Signature": "sha1=" + hmac.new(SECRET, push(), hashlib.sha1).hexdigest()},
     "X-Hub-Signature (HMAC-SHA1) is not accepted"),
    ({"X-Hub-Signature-256": "sha256=" + sign(push(), b"another secret")},
     "X-Hub-Signature-256: does not match"),
    ({"X-Hub-Signature-256": sign(push())}, "X-Hub-Signature-256: does not match"),
    ({"X-Gitea-Signature": "00" * 32}, "X-Gitea-Signature: does not match"),
    ({"X-Gitlab-Token": "It's a secret to everybody"}, "X-Gitlab-Token: does not match"),
    ({"X-Gitlab-Token": ""}, "X-Gitlab-Token: does not match"),
    # Every signature present must verify, not just one of them.
    ({"X-Hub-Signature-256": "sha256=" + sign(push()), "X-Gitea-Signature": "ab" * 32},
     "X-Gitea-Signature: does not match"),
    ({"X-Hub-Signature-256": "sha256=ünïcode"}, "does not match"),
])  # fmt: skip
def test_refused_signatures(headers: dict[str, str], why: str) -> None:
    assert why in (verify(Headers(headers), push(), SECRET) or "")


def test_a_gitea_delivery_wakes_the_loop(api: FleetApi) -> None:
    response = post(api, push(), gitea(push()))
    assert response.status_code == 202
    assert response.json == {"result": "fetch", "message": "push to refs/heads/main: fetching now"}
    assert api.wakes == [1]


def test_forgejo_and_gitlab_deliveries_wake_the_loop(api: FleetApi) -> None:
    body = push()
    forgejo = {"X-Forgejo-Event": "push", "X-Forgejo-Signature": sign(body),
               "Content-Type": "application/json"}
    gitlab = {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": SECRET.decode(),
              "Content-Type": "application/json"}
    assert post(api, body, forgejo).status_code == 202
    assert post(api, body, gitlab).status_code == 202
    assert api.wakes == [1, 1]


def test_a_github_delivery_from_an_untrusted_network_wakes_the_loop(api: FleetApi) -> None:
    response = post(api, push(), github(push()), client=UNTRUSTED)
    assert response.status_code == 202 and response.json["result"] == "fetch"
    assert api.wakes == [1]
    # The webhook is the one operation of this kind open to it.
    assert api.call("POST", "/api/v1/pause", client=UNTRUSTED).status_code == 403


def test_github_s_form_encoded_delivery(api: FleetApi) -> None:
    from urllib.parse import urlencode

    body = urlencode({"payload": push().decode()}).encode()
    headers = {**github(body), "Content-Type": "application/x-www-form-urlencoded"}
    assert post(api, body, headers).status_code == 202
    assert api.wakes == [1]


@pytest.mark.parametrize("case", ["tampered", "sha1-only", "missing", "wrong-secret"])
def test_refused_deliveries_are_401_logged_without_body_or_signature(
        api: FleetApi, case: str, caplog: pytest.LogCaptureFixture) -> None:
    body = push()
    headers = github(body)
    if case == "tampered":
        body = body.replace(b"refs/heads/main", b"refs/heads/evil")
    elif case == "sha1-only":
        del headers["X-Hub-Signature-256"]
        headers["X-Hub-Signature"] = "sha1=" + hmac.new(SECRET, body, hashlib.sha1).hexdigest()
    elif case == "missing":
        del headers["X-Hub-Signature-256"]
    else:
        headers = github(body, secret=b"guessed")
    with caplog.at_level(logging.INFO, logger="reconciler.web.hooks"):
        response = post(api, body, headers, client=UNTRUSTED)
    assert response.status_code == 401
    assert response.json["message"].startswith("webhook refused: ")
    assert api.wakes == []
    logged = caplog.text
    assert "refused" in logged and UNTRUSTED in logged
    for leak in ("refs/heads", "Webhooks Yay", SECRET.decode(),
                 *(v for k, v in headers.items() if "Signature" in k)):
        assert leak.split("=")[-1] not in logged
        assert leak.split("=")[-1] not in response.get_data(as_text=True)


# --- events ---------------------------------------------------------------------------------


def test_a_ping_is_answered_and_starts_nothing(api: FleetApi) -> None:
    body = json.dumps({"zen": "Design for failure.", "hook_id": 1}).encode()
    response = post(api, body, github(body, event="ping"))
    assert response.status_code == 200 and response.json["result"] == "pong"
    assert api.wakes == []


@pytest.mark.parametrize("ref", ["refs/heads/develop", "refs/tags/main", "refs/heads/main2"])
def test_a_push_to_another_ref_is_ignored(api: FleetApi, ref: str) -> None:
    response = post(api, push(ref), gitea(push(ref)))
    assert response.status_code == 202 and response.json["result"] == "ignored"
    assert "not the watched branch refs/heads/main" in response.json["message"]
    assert api.wakes == []


def test_a_replayed_non_push_event_never_wakes(api: FleetApi) -> None:
    body = json.dumps({"action": "opened", "issue": {"number": 1}, "ref": "refs/heads/main"})
    headers = github(body.encode(), event="issues")
    for _ in range(3):  # the same signed delivery, again and again
        response = post(api, body.encode(), headers)
        assert response.status_code == 202 and response.json["result"] == "ignored"
    assert api.wakes == []


@pytest.mark.parametrize(("body", "headers", "message"), [
    (b"{}", {"X-Hub-Signature-256": "sha256=" + sign(b"{}")}, "no event header"),
    (b"{}", github(b"{}"), "ref: required"),
    (b"[1]", github(b"[1]"), "ref: required"),
    (b"{not json", github(b"{not json"), "not valid JSON"),
])  # fmt: skip
def test_a_verified_but_malformed_delivery_is_400(api: FleetApi, body: bytes,
                                                  headers: dict[str, str], message: str) -> None:
    response = post(api, body, headers)
    assert response.status_code == 400 and message in response.json["message"]
    assert api.wakes == []


def test_the_body_is_bounded(api: FleetApi) -> None:
    body = b'{"ref": "refs/heads/main", "pad": "' + b"x" * 70000 + b'"}'
    response = post(api, body, github(body))
    assert response.status_code == 413 and api.wakes == []


def test_no_secret_or_no_loop_is_404(tmp_path: Path) -> None:
    with fleet_app(tmp_path / "a", secret=None) as api:
        response = post(api, push(), github(push()))
        assert response.status_code == 404 and "webhook_secret" in response.json["message"]
    with fleet_app(tmp_path / "b", fleet=False) as api:
        assert post(api, push(), github(push())).status_code == 404


# --- the secret -----------------------------------------------------------------------------


def settings(tmp_path: Path, ref: str) -> RunSettings:
    return load_run_settings({"repo": "x", "webhook_secret": ref, "secrets_dir": str(tmp_path)},
                             "reconciler.yaml", env={})


def test_the_secret_resolves_from_a_file_or_the_environment(tmp_path: Path) -> None:
    (tmp_path / "hook").write_text("It's a Secret to Everybody\n")
    assert resolve_webhook_secret(settings(tmp_path, "hook"), env={}) == SECRET
    assert redact("sig It's a Secret to Everybody") == "sig ***"  # registered: never logged
    assert resolve_webhook_secret(settings(tmp_path, "hook"),
                                  env={"RECONCILER_CRED_HOOK": "from-env"}) == b"from-env"
    assert resolve_webhook_secret(RunSettings(repo="x"), env={}) is None  # not configured


@pytest.mark.parametrize("content", ["", "\n", "   \n", "\t"])
def test_an_empty_secret_is_a_configuration_error(tmp_path: Path, content: str) -> None:
    (tmp_path / "hook").write_text(content)
    with pytest.raises(InputError, match=r"^webhook_secret: .*hook is empty"):
        resolve_webhook_secret(settings(tmp_path, "hook"), env={})
    with pytest.raises(InputError, match="webhook_secret: environment variable "
                       "RECONCILER_CRED_HOOK is empty"):
        resolve_webhook_secret(settings(tmp_path, "hook"), env={"RECONCILER_CRED_HOOK": content})


@pytest.mark.parametrize("value", ["", "  ", "has spaces in it", "../etc/passwd"])
def test_the_setting_is_a_reference_never_empty(tmp_path: Path, value: str) -> None:
    with pytest.raises(InputError, match="^reconciler.yaml: webhook_secret: ") as info:
        settings(tmp_path, value)
    if value.strip():
        assert value not in str(info.value)  # it may be a secret put there by mistake


def test_a_missing_reference_names_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="webhook_secret: credentials 'nope' not found") as info:
        resolve_webhook_secret(settings(tmp_path, "nope"), env={})
    assert "RECONCILER_CRED_NOPE" in str(info.value) and str(tmp_path / "nope") in str(info.value)


# --- coalescing, with the real loop -----------------------------------------------------------


class Stub:
    """The loop's view of a Reconciler: ``tick()``. A pass holds at ``gate`` (a fetch that
    takes as long as the test wants)."""

    def __init__(self) -> None:
        self.passes = 0
        self.running = False
        self.gate = asyncio.Event()
        self.gate.set()

    async def tick(self) -> list[Any]:
        self.running = True
        self.passes += 1
        try:
            await self.gate.wait()
        finally:
            self.running = False
        return []


async def until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)  # polling the loop's state with a deadline


def test_a_burst_of_pushes_costs_one_or_two_passes(tmp_path: Path) -> None:
    body = push()
    headers = github(body)

    async def go() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        wake, stop = asyncio.Event(), asyncio.Event()
        stub = Stub()
        with fleet_app(tmp_path, secret=SECRET,
                       wake=lambda: loop.call_soon_threadsafe(wake.set)) as api:
            task = asyncio.create_task(run_forever(stub, 300, stop, wake=wake))  # type: ignore[arg-type]
            await until(lambda: stub.passes == 1 and not stub.running)  # the pass at start
            stub.gate.clear()

            def burst() -> None:
                for _ in range(100):
                    assert post(api, body, headers).status_code == 202

            await loop.run_in_executor(None, burst)
            stub.gate.set()
            await until(lambda: not wake.is_set() and not stub.running)
            stop.set()
            await task
            return len(api.wakes), stub.passes - 1

    wakes, passes = asyncio.run(go())
    assert wakes == 100
    assert 1 <= passes <= 2
