"""The one client of the build service's REST API (schemas/openapi.yaml), as any client uses
it: the reconcile engine, the lab and the tests.

Blocking (urllib, a timeout on every request); the engine calls it from its thread pool. Long
waits are the caller's: :meth:`BuildClient.submit` returns the status document at once and the
caller polls :meth:`BuildClient.build` on its next check. Failures are classified: no answer or
a 5xx / 503 (queue full) is a :class:`TemporaryError`, a 4xx is a :class:`PermanentError`
naming the endpoint and the service's error text.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from reconciler.errors import PermanentError, TemporaryError

TIMEOUT = 30.0


class BuildClient:
    def __init__(self, base_url: str, *, timeout: float = TIMEOUT) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, body: object | None = None,
              ok: tuple[int, ...] = (200,)) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        where = f"{method} {path}"
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        except (OSError, urllib.error.URLError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TemporaryError(f"build service {self.base_url}: {where}: {reason}",
                                 delay=5) from None
        text = raw.decode(errors="replace")
        try:
            doc = json.loads(text) if text.strip() else None
        except json.JSONDecodeError:
            doc = None
        if status in ok:
            return doc
        detail = doc.get("error") if isinstance(doc, dict) else text.strip()[:300]
        message = f"build service: {where} answered {status}: {detail}"
        if status >= 500 or status == 429:
            raise TemporaryError(message, delay=10)
        raise PermanentError(message)

    def submit(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """POST /api/v1/builds: the build's status document (202, or 200 for a known one)."""
        doc = self._call("POST", "/api/v1/builds", request, ok=(200, 202))
        if not isinstance(doc, dict) or not isinstance(doc.get("id"), str):
            raise PermanentError("build service: POST /api/v1/builds answered no build id")
        return doc

    def build(self, build_id: str) -> dict[str, Any] | None:
        """GET /api/v1/builds/{id}; None when the service does not know it (404)."""
        try:
            doc = self._call("GET", f"/api/v1/builds/{build_id}")
        except PermanentError as exc:
            if " answered 404" in str(exc):
                return None
            raise
        if not isinstance(doc, dict):
            raise PermanentError(f"build service: GET /api/v1/builds/{build_id}: not JSON")
        return doc

    def register_checkin(self, checkin_id: str) -> None:
        self._call("POST", f"/api/v1/checkins/{checkin_id}", {"addresses": []},
                   ok=(200, 201, 204))

    def checkin(self, checkin_id: str) -> list[str]:
        """The addresses a booted server reported (empty until it checks in)."""
        doc = self._call("GET", f"/api/v1/checkins/{checkin_id}", ok=(200, 404))
        if isinstance(doc, dict):
            return [str(a) for a in doc.get("addresses") or []]
        return []

    def delete_checkin(self, checkin_id: str) -> None:
        self._call("DELETE", f"/api/v1/checkins/{checkin_id}", ok=(200, 204, 404))

    def healthy(self) -> bool:
        try:
            request = urllib.request.Request(self.base_url + "/healthz")
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return bool(response.status == 200)
        except OSError:
            return False
