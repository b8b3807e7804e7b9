"""BMC operations over Redfish (sushy), with vendor quirks switched by a profile.

:class:`Bmc` is what the reconcile engine and the lab use::

    with Bmc(BmcEndpoint("http://198.18.0.1:8000", "admin", pw, system_id=uuid)) as bmc:
        bmc.graceful_off(120)
        bmc.insert_cd("http://198.18.0.1:8080/artifacts/ID/boot.iso")
        bmc.set_boot(BootTarget.CD, BootEnabled.ONCE)
        bmc.power_on()

Nothing touches the network until the first operation (then: GET service root, GET the
System, and, only if a profile depends on it, GET the Manager for its firmware version).
A ``Bmc`` is not thread-safe: use one per thread.

Reads use sushy resources where sushy has them (service root, system collection, System,
Manager, processors, NICs, storage) and plain GETs through sushy's connector where it has
none (Memory) or where vendors misbehave in ways sushy's classes would hide (VirtualMedia:
we must see ``ConnectedVia``, stale ``Image`` values and missing actions). Action bodies are
built here from the profile rather than by sushy's helpers, so each workaround is a named,
tested switch in :mod:`reconciler.adapters.redfish.quirks` instead of a vendor test buried
in a library.
"""

from __future__ import annotations

import logging
import posixpath
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, TypeVar
from urllib import parse as urlparse

import sushy
from sushy import exceptions as sushy_exc

from reconciler.adapters.redfish import errors, inventory, oob, quirks
from reconciler.adapters.redfish.client import (
    BmcEndpoint,
    ClientSettings,
    Connector,
    HttpFailure,
    TransportFailure,
    open_root,
)
from reconciler.adapters.redfish.inventory import Inventory
from reconciler.adapters.redfish.quirks import Quirks, Retry
from reconciler.errors import InputError, ReconcilerError

LOG = logging.getLogger(__name__)

Doc = Mapping[str, Any]
T = TypeVar("T")


class PowerState(StrEnum):
    ON = "On"
    OFF = "Off"
    POWERING_ON = "PoweringOn"
    POWERING_OFF = "PoweringOff"
    PAUSED = "Paused"


class BootTarget(StrEnum):
    CD = "Cd"
    UEFI_HTTP = "UefiHttp"
    HDD = "Hdd"


class BootEnabled(StrEnum):
    ONCE = "Once"
    CONTINUOUS = "Continuous"


class OffResult(StrEnum):
    ALREADY_OFF = "already-off"
    GRACEFUL = "graceful"
    FORCED = "forced"


@dataclass(frozen=True, slots=True)
class MediaSlot:
    path: str
    location: str  # "System" or "Manager"
    doc: Doc

    @property
    def media_types(self) -> frozenset[str]:
        return frozenset(str(t) for t in self.doc.get("MediaTypes") or ())

    def action(self, name: str) -> str | None:
        actions = self.doc.get("Actions") or {}
        entry = actions.get(f"#VirtualMedia.{name}") if isinstance(actions, Mapping) else None
        target = entry.get("target") if isinstance(entry, Mapping) else None
        return str(target) if target else None


@dataclass(frozen=True, slots=True)
class Status:
    """What ``reconciler bmc status`` prints."""

    bmc: str
    system_id: str
    power_state: str
    boot_target: str | None
    boot_enabled: str | None
    boot_mode: str | None
    http_boot_uri: str | None
    media: tuple[tuple[str, str], ...]  # (slot path, image or "")
    profile: str


class BmcDriver(Protocol):
    """The interface the engine depends on; :class:`Bmc` and ``FakeBmc`` implement it."""

    def power_state(self) -> PowerState: ...
    def power_on(self) -> None: ...
    def graceful_off(self, timeout: float = 120.0) -> OffResult: ...
    def request_off(self, *, force: bool = False) -> bool: ...
    def power_cycle(self) -> str: ...
    def wait_power(self, state: PowerState, timeout: float) -> None: ...
    def eject_all_media(self) -> None: ...
    def insert_cd(self, url: str) -> str: ...
    def set_boot(
        self, target: BootTarget, enabled: BootEnabled = BootEnabled.ONCE,
        http_uri: str | None = None,
    ) -> None: ...
    def clear_boot_override(self) -> None: ...
    def nic_macs(self) -> list[str]: ...
    def inventory(self) -> Inventory: ...
    def oob_inventory(self) -> oob.OobInventory: ...


def check_image_url(url: str, q: Quirks, *, what: str = "image URL") -> None:
    """Refuse URLs BMCs cannot mount, before any side effect (catalogue Q11)."""
    parsed = urlparse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise InputError(f"{what} {url!r}: expected an http:// or https:// URL")
    if q.iso_url_rules:
        if parsed.query or parsed.fragment or "=" in parsed.path:
            raise InputError(
                f"{what} {url!r}: BMCs (Supermicro X12 and others) refuse URLs with '?' or '='",
                hint="serve the image at a plain path",
            )
        if not parsed.path.lower().endswith(".iso"):
            raise InputError(
                f"{what} {url!r}: virtual media images must end in .iso",
                hint="use the build's boot.iso URL",
            )


class Bmc:
    """One Redfish System behind one BMC. See the module docstring."""

    def __init__(
        self,
        endpoint: BmcEndpoint,
        settings: ClientSettings | None = None,
        *,
        quirks_override: Quirks | None = None,
        profiles: tuple[Quirks, ...] = quirks.PROFILES,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoint = endpoint
        self.settings = settings or ClientSettings()
        self._override = quirks_override
        self._profiles = profiles
        self._sleep = sleep
        self._clock = clock
        self._root: sushy.Sushy | None = None
        self._conn: Connector | None = None
        self._system: Any = None  # sushy System
        self._quirks: Quirks | None = None
        self._depth = 0
        # The System document read while connecting, handed to the first operation so it
        # does not GET the System twice in a row.
        self._connect_doc: dict[str, Any] | None = None
        self._connect_doc_at = 0.0
        # Where the virtual media slots are: hardware, so listed once per Bmc.
        self._slot_paths: list[tuple[str, str]] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Bmc:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    @property
    def name(self) -> str:
        return self.endpoint.name

    @property
    def requests_sent(self) -> int:
        return self._conn.requests_sent if self._conn is not None else 0

    @property
    def quirks(self) -> Quirks:
        """The vendor profile in use (connects on first use)."""
        self._connect()
        assert self._quirks is not None
        return self._quirks

    @property
    def system_path(self) -> str:
        self._connect()
        return str(self._system.path)

    def _connect(self) -> None:
        if self._system is not None:
            return
        with self._operation("connect"):
            root, conn = open_root(self.endpoint, self.settings, sleep=self._sleep)
            self._root, self._conn = root, conn
            self._system = self._resolve_system(root)
            self._connect_doc, self._connect_doc_at = dict(self._system.json), self._clock()
            if self._override is not None:
                self._quirks = self._override
            else:
                manufacturer = str(self._system.manufacturer or "")
                model = str(self._system.model or "")
                firmware = None
                if quirks.needs_firmware(manufacturer, model, self._profiles):
                    firmware = self._manager_firmware()
                self._quirks = quirks.select(manufacturer, model, firmware, self._profiles)
            LOG.info(
                "BMC %s: system %s (%s %s), quirk profile %s",
                self.name, self._system.identity, self._system.manufacturer,
                self._system.model, self._quirks.name,
            )

    def _resolve_system(self, root: sushy.Sushy) -> Any:
        wanted = self.endpoint.system_id
        if wanted:
            base = str(root.json.get("Systems", {}).get("@odata.id", "/redfish/v1/Systems"))
            path = wanted if wanted.startswith("/") else (
                f"{base.rstrip('/')}/{urlparse.quote(wanted, safe='')}"
            )
            try:
                return root.get_system(path)
            except HttpFailure as failure:
                if failure.status != 404:
                    raise
                known = sorted(root.get_system_collection().members_identities)
                raise errors.make(
                    errors.BmcRejected, bmc=self.name, operation="connect",
                    text=f"no system {wanted!r}; the BMC lists {_few(known)}",
                    hint="pass --system with one of those ids",
                ) from None
        members = sorted(root.get_system_collection().members_identities)
        if len(members) != 1:
            raise errors.make(
                errors.BmcRejected, bmc=self.name, operation="connect",
                text=f"the BMC lists {len(members)} systems ({_few(members)}), cannot pick one",
                hint="pass --system ID",
            )
        return root.get_system(members[0])

    def _manager_firmware(self) -> str | None:
        """The first Manager's FirmwareVersion; ``None`` when the System links none, or links
        it malformed or off this BMC (the link is checked: it would get our credentials)."""
        links = self._system_doc_cached().get("Links")
        managers = links.get("ManagedBy") if isinstance(links, Mapping) else None
        if not isinstance(managers, list) or not managers:
            return None
        try:
            path = oob.link(managers[0], "the System", "Links.ManagedBy[0]",
                            self.endpoint.base_url)
        except oob.Malformed as exc:
            LOG.warning("BMC %s: no Manager firmware for the quirk profile: %s", self.name, exc)
            return None
        return str(self._get(path).get("FirmwareVersion") or "") or None

    # -- error mapping -----------------------------------------------------------------------

    @contextmanager
    def _operation(self, name: str) -> Iterator[None]:
        """Turn transport/HTTP/sushy failures into classified one-line errors naming ``name``.

        Only the outermost operation maps, so a nested call keeps the caller's name.
        """
        self._depth += 1
        try:
            yield
        except ReconcilerError:
            raise
        except HttpFailure as failure:
            if self._depth > 1:
                raise
            race = self._quirks.race_ids if self._quirks else quirks.GENERIC_RACE_IDS
            raise errors.http_error(
                bmc=self.name, operation=name, method=failure.method, path=failure.path,
                status=failure.status, body=failure.body, race_ids=race,
            ) from None
        except TransportFailure as failure:
            if self._depth > 1:
                raise
            raise _transport_error(self.name, name, failure) from None
        except (sushy_exc.SushyError, KeyError, TypeError, ValueError) as exc:
            if self._depth > 1:
                raise
            raise errors.make(
                errors.BmcProtocolError, bmc=self.name, operation=name,
                text=f"unexpected Redfish answer: {exc}",
            ) from None
        finally:
            self._depth -= 1

    # -- raw requests through sushy's connector ----------------------------------------------

    def _get(self, path: str) -> dict[str, Any]:
        assert self._conn is not None
        response = self._conn.get(path)
        data = response.json() if response.content else {}
        if not isinstance(data, dict):
            raise sushy_exc.SushyError(f"GET {path}: expected a JSON object")
        return data

    def _post(self, path: str, body: object, *, timeout: float | None = None) -> None:
        assert self._conn is not None
        self._conn.post(path, data=body, timeout=timeout)

    def _patch(self, path: str, body: object, *, timeout: float | None = None) -> None:
        assert self._conn is not None
        self._conn.patch(path, data=body, timeout=timeout)

    def _system_doc(self) -> dict[str, Any]:
        """A fresh GET of the System (one request; sushy's refresh() would refetch
        every loaded sub-resource)."""
        self._connect()
        doc, self._connect_doc = self._connect_doc, None
        if doc is not None and self._clock() - self._connect_doc_at < 1.0:
            return doc
        return self._get(str(self._system.path))

    def _system_doc_cached(self) -> Doc:
        return dict(self._system.json)

    def _retrying(self, retry: Retry, fn: Callable[[], T], *, on_5xx: bool = False) -> T:
        """Call ``fn``; after an explicit race answer (a MessageId in the profile's race_ids)
        or, with ``on_5xx``, a 5xx answer, wait and call it again. The BMC *refused* the
        request in both cases, so resending is safe; a request without an answer
        (TransportFailure) is never retried here."""
        delays = retry.delays()
        while True:
            try:
                return fn()
            except HttpFailure as failure:
                racy = errors.has_message(failure.body, self.quirks.race_ids)
                busy = on_5xx and failure.status >= 500 and failure.status != 501
                if not (racy or busy) or not delays:
                    raise
                delay = delays.pop(0)
                LOG.warning(
                    "BMC %s: %s %s answered %s (%s); retrying in %.1fs",
                    self.name, failure.method, failure.path, failure.status,
                    errors.describe_body(failure.body) or "no detail", delay,
                )
                self._sleep(delay)

    # -- power -------------------------------------------------------------------------------

    def power_state(self) -> PowerState:
        """The System's PowerState (one GET)."""
        with self._operation("power state"):
            return _power(self._system_doc())

    def _reset_info(self, doc: Doc) -> tuple[str, frozenset[str] | None]:
        action = (doc.get("Actions") or {}).get("#ComputerSystem.Reset")
        if not isinstance(action, Mapping) or not action.get("target"):
            raise errors.make(
                errors.BmcUnsupported, bmc=self.name, operation="reset",
                text=f"{doc.get('@odata.id', 'the System')} has no ComputerSystem.Reset action",
            )
        allowed = action.get("ResetType@Redfish.AllowableValues")
        info = action.get("@Redfish.ActionInfo")
        if allowed is None and info:
            for param in self._get(str(info)).get("Parameters") or ():
                if isinstance(param, Mapping) and param.get("Name") == "ResetType":
                    allowed = param.get("AllowableValues")
        return str(action["target"]), (frozenset(map(str, allowed)) if allowed else None)

    def _reset(self, doc: Doc, reset_type: str) -> None:
        target, allowed = self._reset_info(doc)
        if allowed is not None and reset_type not in allowed:
            raise errors.make(
                errors.BmcUnsupported, bmc=self.name, operation=f"reset {reset_type}",
                text=f"ResetType {reset_type} is not allowed "
                f"(allowed: {', '.join(sorted(allowed))})",
            )
        LOG.info("BMC %s: reset %s", self.name, reset_type)
        self._retrying(
            self.quirks.race_retry,
            lambda: self._post(target, {"ResetType": reset_type}),
        )

    def power_on(self) -> None:
        """Power on unless already on. Quirks: Q22 (409/400 right after power-off: retried
        per the profile's race_retry)."""
        with self._operation("power on"):
            doc = self._system_doc()
            if _power(doc) in (PowerState.ON, PowerState.POWERING_ON):
                return
            self._reset(doc, "On")

    def wait_power(self, state: PowerState, timeout: float) -> None:
        """Poll (one GET per ``settings.poll_interval``) until PowerState is ``state``;
        BmcTimeout after ``timeout`` seconds. Transitions land seconds after the 204. A BMC
        that is briefly unreachable or answers 5xx while the host changes state is polled
        again until the deadline."""
        with self._operation(f"wait for power {state}"):
            deadline = self._clock() + timeout
            while True:
                try:
                    current: str = _power(self._system_doc())
                except (TransportFailure, HttpFailure) as failure:
                    if isinstance(failure, HttpFailure) and not 500 <= failure.status < 600:
                        raise
                    if self._clock() >= deadline:
                        raise
                    current = f"unknown ({failure})"
                if current == state:
                    return
                if self._clock() >= deadline:
                    raise errors.make(
                        errors.BmcTimeout, bmc=self.name, operation=f"wait for power {state}",
                        text=f"still {current} after {timeout:g}s",
                    )
                self._sleep(self.settings.poll_interval)

    def graceful_off(self, timeout: float = 120.0, force_timeout: float = 60.0) -> OffResult:
        """GracefulShutdown, wait up to ``timeout`` s, then ForceOff and wait up to
        ``force_timeout`` s. Skips GracefulShutdown when the BMC does not allow it.
        Quirks: Q22 (race answers retried)."""
        with self._operation("graceful shutdown"):
            doc = self._system_doc()
            if _power(doc) == PowerState.OFF:
                return OffResult.ALREADY_OFF
            _, allowed = self._reset_info(doc)
            if _power(doc) == PowerState.POWERING_OFF:
                try:  # already on its way down: just wait for it
                    self.wait_power(PowerState.OFF, timeout)
                    return OffResult.GRACEFUL
                except errors.BmcTimeout:
                    pass
            elif allowed is None or "GracefulShutdown" in allowed:
                self._reset(doc, "GracefulShutdown")
                try:
                    self.wait_power(PowerState.OFF, timeout)
                    return OffResult.GRACEFUL
                except errors.BmcTimeout:
                    LOG.warning(
                        "BMC %s: no graceful shutdown within %gs, forcing off", self.name, timeout
                    )
            self._reset(self._system_doc(), "ForceOff")
            self.wait_power(PowerState.OFF, force_timeout)
            return OffResult.FORCED

    def request_off(self, *, force: bool = False) -> bool:
        """Ask for GracefulShutdown (``force``: ForceOff) and return without waiting: the
        engine reads the power state on its next check ("asked now, checked next step").
        False when the System is already off. A BMC that does not allow GracefulShutdown gets
        ForceOff. Quirks: Q22 (race answers retried)."""
        with self._operation("force off" if force else "request graceful shutdown"):
            doc = self._system_doc()
            power = _power(doc)
            if power == PowerState.OFF:
                return False
            if power == PowerState.POWERING_OFF and not force:
                return True
            _, allowed = self._reset_info(doc)
            graceful = not force and (allowed is None or "GracefulShutdown" in allowed)
            self._reset(doc, "GracefulShutdown" if graceful else "ForceOff")
            return True

    def power_cycle(self) -> str:
        """PowerCycle; when the BMC does not allow it (not listed, or 400/405/501), the
        profile's ``cycle_fallbacks`` (ForceRestart), else ForceOff, wait, On. A host that is
        off is just powered on. Returns the ResetType(s) used."""
        with self._operation("power cycle"):
            doc = self._system_doc()
            if _power(doc) == PowerState.OFF:
                self._reset(doc, "On")
                return "On"
            _, allowed = self._reset_info(doc)
            if allowed is None or "PowerCycle" in allowed:
                try:
                    self._reset(doc, "PowerCycle")
                    return "PowerCycle"
                except HttpFailure as failure:
                    if failure.status not in (400, 405, 501):
                        raise
                    LOG.warning(
                        "BMC %s: PowerCycle refused (%s), falling back", self.name, failure.status
                    )
            for reset_type in self.quirks.cycle_fallbacks:
                if allowed is None or reset_type in allowed:
                    self._reset(doc, reset_type)
                    return reset_type
            self._reset(doc, "ForceOff")
            self.wait_power(PowerState.OFF, 60.0)
            self._reset(self._system_doc(), "On")
            return "ForceOff+On"

    # -- virtual media -----------------------------------------------------------------------

    def media_slots(self, system: Doc | None = None) -> list[MediaSlot]:
        """Every VirtualMedia slot, looked up under the places the profile names, in order
        (Q1: System, Manager, or both), each slot listed once. Where the slots are is read
        once per Bmc; each call GETs every slot's current state."""
        with self._operation("list virtual media"):
            if self._slot_paths is None:
                self._slot_paths = self._find_slots(system or self._system_doc())
            return [MediaSlot(path, location, self._get(path))
                    for path, location in self._slot_paths]

    def _find_slots(self, system: Doc) -> list[tuple[str, str]]:
        seen: set[str] = set()
        found: list[tuple[str, str]] = []
        for location in self.quirks.vmedia_locations:
            for collection in self._vmedia_collections(system, location):
                if collection in seen:
                    continue  # the emulator's Manager links the System's collection
                seen.add(collection)
                for ref in self._get(collection).get("Members") or ():
                    path = str(ref.get("@odata.id", "")) if isinstance(ref, Mapping) else ""
                    if path and path not in seen:
                        seen.add(path)
                        found.append((path, location))
        return found

    def _vmedia_collections(self, system: Doc, location: str) -> list[str]:
        if location == "System":
            link = (system.get("VirtualMedia") or {}).get("@odata.id")
            return [str(link)] if link else []
        out = []
        for ref in (system.get("Links") or {}).get("ManagedBy") or ():
            path = ref.get("@odata.id") if isinstance(ref, Mapping) else None
            if path:
                link = (self._get(str(path)).get("VirtualMedia") or {}).get("@odata.id")
                if link:
                    out.append(str(link))
        return out

    def _occupied(self, doc: Doc) -> bool:
        """Q6: a NotConnected slot is empty even when Image/ImageName still show a name."""
        if self.quirks.not_connected_is_empty and doc.get("ConnectedVia") == "NotConnected":
            return False
        return bool(doc.get("Inserted")) or bool(doc.get("Image")) or bool(doc.get("ImageName"))

    def _is_cd(self, slot: MediaSlot) -> bool:
        """Q4: DVD-only slots count as CD drives."""
        return bool(slot.media_types & self.quirks.cd_media_types)

    def eject_all_media(self) -> None:
        """Eject whatever is mounted, then verify every slot reads empty.

        Quirks: Q7 (all slots, not only the CD: leftover media from another tool blocks the
        insert), Q6 (NotConnected = empty), Q12 (EjectMedia body ``{}``; "no media" errors
        are fine if the slot reads empty), Q29 (power off first on profiles that need it),
        Q2 (PATCH form where there is no EjectMedia action), Q5 (stale state after eject:
        wait for the slot to read empty)."""
        with self._operation("eject media"):
            self._eject_all()

    def _eject_all(self) -> list[MediaSlot]:
        """Eject as :meth:`eject_all_media` does; return every slot with its state after."""
        slots = self.media_slots()
        busy = [
            s for s in slots
            if (self.quirks.eject_all_slots or self._is_cd(s)) and self._occupied(s.doc)
        ]
        if not busy:
            return slots
        if self.quirks.power_off_before_eject and self.power_state() != PowerState.OFF:
            LOG.info("BMC %s: powering off before eject (profile %s)",
                     self.name, self.quirks.name)
            self.graceful_off()
        for slot in busy:
            self._eject(slot)
        after = {
            slot.path: self._wait_slot(slot, lambda d: not self._occupied(d), "empty after eject")
            for slot in busy
        }
        return [MediaSlot(s.path, s.location, after.get(s.path, s.doc)) for s in slots]

    def _eject(self, slot: MediaSlot) -> None:
        target = slot.action("EjectMedia")
        try:
            if target:
                body: dict[str, Any] | None = {} if self.quirks.eject_json_body else None
                self._post(target, body)
            elif self.quirks.patch_when_no_action or self.quirks.insert_via == "patch":
                self._patch(slot.path, {"Image": None, "Inserted": False})
            else:
                raise errors.make(
                    errors.BmcUnsupported, bmc=self.name, operation="eject media",
                    text=f"{slot.path} has no EjectMedia action",
                )
        except HttpFailure as failure:
            if not (self.quirks.eject_absent_ok and 400 <= failure.status < 500
                    and failure.status not in (401, 403, 415)):
                raise
            if self._occupied(self._get(slot.path)):
                raise
            LOG.info("BMC %s: %s was already empty (%s)", self.name, slot.path, failure.status)

    def _wait_slot(
        self, slot: MediaSlot, ok: Callable[[Doc], bool], wanted: str
    ) -> dict[str, Any]:
        deadline = self._clock() + self.quirks.insert_settle
        while True:
            doc = self._get(slot.path)
            if ok(doc):
                return doc
            if self._clock() >= deadline:
                raise errors.make(
                    errors.BmcRejected, bmc=self.name, operation="virtual media",
                    text=f"{slot.path} not {wanted} after {self.quirks.insert_settle:g}s "
                    f"(Image={doc.get('Image')!r}, Inserted={doc.get('Inserted')!r}, "
                    f"ConnectedVia={doc.get('ConnectedVia')!r})",
                )
            self._sleep(self.settings.poll_interval)

    def insert_cd(self, url: str) -> str:
        """Eject everything, insert ``url`` into the first CD/DVD slot that takes it, verify
        the slot shows it inserted. Returns the slot path.

        Quirks: Q11 (URL checked before anything is sent), Q5/Q7 (eject first, always; retry
        the insert on 5xx; verify instead of trusting stale "Inserted"), Q1 (System and
        Manager slots), Q4 (DVD), Q3 (slots without InsertMedia or answering 400/405 are
        skipped), Q2 (PATCH form), Q9 (Inserted/WriteProtected only in the PATCH form),
        Q8 (TransferProtocolType), Q10 (UserName/Password)."""
        with self._operation("insert media"):
            check_image_url(url, self.quirks)
            cd_slots = [s for s in self._eject_all() if self._is_cd(s)]
            if not cd_slots:
                raise errors.make(
                    errors.BmcUnsupported, bmc=self.name, operation="insert media",
                    text="no CD/DVD virtual media slot under "
                    + " or ".join(self.quirks.vmedia_locations),
                )
            refused: list[str] = []
            for slot in cd_slots:
                try:
                    if not self._insert(slot, url):
                        refused.append(f"{slot.path}: no InsertMedia action")
                        continue
                except HttpFailure as failure:
                    if failure.status not in self.quirks.next_slot_statuses:
                        raise
                    refused.append(
                        f"{slot.path}: HTTP {failure.status} "
                        f"{errors.describe_body(failure.body)}".strip()
                    )
                    LOG.info("BMC %s: slot %s refused the image, trying the next one",
                             self.name, slot.path)
                    continue
                self._wait_slot(slot, lambda d: self._shows(d, url), f"showing {url}")
                LOG.info("BMC %s: %s inserted into %s", self.name, url, slot.path)
                return slot.path
            raise errors.make(
                errors.BmcRejected, bmc=self.name, operation="insert media",
                text="no CD/DVD slot accepted the image: " + "; ".join(refused),
            )

    def _shows(self, doc: Doc, url: str) -> bool:
        if not doc.get("Inserted") or not self._occupied(doc):
            return False
        image = str(doc.get("Image") or "")
        name = str(doc.get("ImageName") or "")
        return image == url or (not image and name == posixpath.basename(url))

    def _insert(self, slot: MediaSlot, url: str) -> bool:
        """Send the insert; False when the slot has no way to take an image (Q3)."""
        q = self.quirks
        target = slot.action("InsertMedia")
        use_patch = q.insert_via == "patch" or (target is None and q.patch_when_no_action)
        if target is None and not use_patch:
            return False
        body: dict[str, Any] = {"Image": url}
        protocol = "HTTPS" if url.startswith("https:") else "HTTP"
        if q.transfer_protocol == "always":
            body["TransferProtocolType"] = protocol
        if q.media_credentials == "always":
            body.update(UserName="none", Password="none")  # public image: dummy credentials
        timeout = self.settings.action_timeout
        if use_patch:
            if q.patch_insert_flags:
                body.update(Inserted=True, WriteProtected=True)
            self._retrying(
                q.insert_retry, lambda: self._patch(slot.path, body, timeout=timeout), on_5xx=True
            )
            return True
        if q.post_insert_flags:
            body.update(Inserted=True, WriteProtected=True)
        assert target is not None
        while True:
            try:
                self._retrying(
                    q.insert_retry, lambda: self._post(target, body, timeout=timeout),
                    on_5xx=True,
                )
                return True
            except HttpFailure as failure:
                if (q.transfer_protocol == "on_demand" and "TransferProtocolType" not in body
                        and errors.has_message(failure.body, {"TransferProtocolType"})):
                    LOG.info("BMC %s: InsertMedia wants TransferProtocolType", self.name)
                    body["TransferProtocolType"] = protocol
                    continue
                if (q.media_credentials == "on_demand" and "UserName" not in body
                        and errors.has_message(failure.body, {"UserName", "Password"})):
                    LOG.info("BMC %s: InsertMedia wants UserName/Password", self.name)
                    body.update(UserName="none", Password="none")
                    continue
                raise

    # -- boot override -----------------------------------------------------------------------

    def set_boot(
        self,
        target: BootTarget,
        enabled: BootEnabled = BootEnabled.ONCE,
        http_uri: str | None = None,
    ) -> None:
        """Set the boot override in UEFI mode (the seed's PATCH body) and read it back.

        Quirks: Q28 (Cd or UsbCd: the first of the profile's names the BMC allows), Q15
        (whole payload every time; mode re-synced if it reads back Legacy; an override
        that reads back Once after asking Continuous is an error), Q21 (POST race retried).
        A BMC without ``HttpBootUri`` (or refusing it) raises BmcUnsupported for UefiHttp."""
        target, enabled = BootTarget(target), BootEnabled(enabled)
        with self._operation(f"boot {target}"):
            if target == BootTarget.UEFI_HTTP:
                if not http_uri:
                    raise InputError("boot http: a URL is required")
                check_image_url(http_uri, self.quirks.with_changes(iso_url_rules=False),
                                what="HTTP boot URL")
            q = self.quirks
            doc = self._system_doc()
            boot = doc.get("Boot") or {}
            allowed = boot.get("BootSourceOverrideTarget@Redfish.AllowableValues")
            name = self._boot_name(target, allowed)
            body: dict[str, Any] = {"BootSourceOverrideTarget": name}
            if q.boot_full_payload or boot.get("BootSourceOverrideEnabled") != enabled:
                body["BootSourceOverrideEnabled"] = str(enabled)
            if "BootSourceOverrideMode" in boot and (
                q.boot_full_payload or boot.get("BootSourceOverrideMode") != "UEFI"
            ):
                body["BootSourceOverrideMode"] = "UEFI"
            if target == BootTarget.UEFI_HTTP:
                if "HttpBootUri" not in boot:
                    raise errors.make(
                        errors.BmcUnsupported, bmc=self.name, operation="boot UefiHttp",
                        text="the System has no Boot.HttpBootUri property",
                        hint="boot from virtual media instead (boot cd URL)",
                    )
                body["HttpBootUri"] = http_uri
            elif "HttpBootUri" in boot and boot.get("HttpBootUri"):
                body["HttpBootUri"] = ""
            path = str(doc.get("@odata.id") or self._system.path)
            try:
                self._retrying(
                    q.race_retry,
                    lambda: self._patch(path, {"Boot": body}, timeout=self.settings.action_timeout),
                )
            except HttpFailure as failure:
                if target == BootTarget.UEFI_HTTP and 400 <= failure.status < 500 and \
                        failure.status not in (401, 403):
                    raise errors.make(
                        errors.BmcUnsupported, bmc=self.name, operation="boot UefiHttp",
                        text=f"HttpBootUri refused: HTTP {failure.status} "
                        f"{errors.describe_body(failure.body)}",
                        hint="boot from virtual media instead (boot cd URL)",
                    ) from None
                raise
            self._verify_boot(path, name, enabled, http_uri if target == BootTarget.UEFI_HTTP
                              else None)

    def _boot_name(self, target: BootTarget, allowed: object) -> str:
        names = self.quirks.cd_boot_targets if target == BootTarget.CD else (str(target),)
        if not isinstance(allowed, list) or not allowed:
            return names[0]
        for name in names:
            if name in allowed:
                return name
        raise errors.make(
            errors.BmcUnsupported, bmc=self.name, operation=f"boot {target}",
            text=f"boot target {'/'.join(names)} not allowed "
            f"(allowed: {', '.join(map(str, allowed))})",
        )

    def _verify_boot(self, path: str, name: str, enabled: BootEnabled, uri: str | None) -> None:
        boot = self._get(path).get("Boot") or {}
        got_mode = boot.get("BootSourceOverrideMode")
        if got_mode is not None and got_mode != "UEFI" and self.quirks.boot_resync_mode:
            LOG.warning("BMC %s: boot mode read back %s, setting UEFI again", self.name, got_mode)
            self._retrying(
                self.quirks.race_retry,
                lambda: self._patch(path, {"Boot": {"BootSourceOverrideMode": "UEFI"}}),
            )
            boot = self._get(path).get("Boot") or {}
            got_mode = boot.get("BootSourceOverrideMode")
        problems = []
        got_target = boot.get("BootSourceOverrideTarget")
        # The sushy-tools emulator (and libvirt-backed BMCs) show an HttpBootUri boot as Cd.
        if got_target != name and not (uri and got_target == "Cd"):
            problems.append(f"target {got_target!r} (wanted {name})")
        if got_mode is not None and got_mode != "UEFI":
            problems.append(f"mode {got_mode!r} (wanted UEFI)")
        got_enabled = boot.get("BootSourceOverrideEnabled")
        if enabled == BootEnabled.CONTINUOUS and got_enabled != "Continuous":
            # Q15: the override would silently revert after one boot.
            problems.append(f"enabled {got_enabled!r} (wanted Continuous)")
        elif enabled == BootEnabled.ONCE and got_enabled not in ("Once", None):
            # Harmless for our flow (we clear the override afterwards); the sushy-tools fake
            # driver always reports Continuous.
            LOG.warning("BMC %s: boot override reads %s, asked Once", self.name, got_enabled)
        if problems:
            raise errors.make(
                errors.BmcRejected, bmc=self.name, operation=f"boot {name}",
                text="BMC accepted the boot override but reads back " + ", ".join(problems),
            )

    def clear_boot_override(self) -> None:
        """Back to the installed OS: the seed's "Clear boot settings" body (HttpBootUri "",
        target Hdd, Continuous, UEFI). Same quirks as :meth:`set_boot`."""
        self.set_boot(BootTarget.HDD, BootEnabled.CONTINUOUS)

    # -- read-only views ---------------------------------------------------------------------

    def status(self) -> Status:
        with self._operation("status"):
            doc = self._system_doc()
            boot = doc.get("Boot") or {}
            media = tuple(
                (s.path, str(s.doc.get("Image") or "") if self._occupied(s.doc) else "")
                for s in self.media_slots(doc)
            )
            return Status(
                bmc=self.name,
                system_id=str(doc.get("Id", "")),
                power_state=str(doc.get("PowerState", "")),
                boot_target=_opt(boot.get("BootSourceOverrideTarget")),
                boot_enabled=_opt(boot.get("BootSourceOverrideEnabled")),
                boot_mode=_opt(boot.get("BootSourceOverrideMode")),
                http_boot_uri=_opt(boot.get("HttpBootUri")),
                media=media,
                profile=self.quirks.name,
            )

    def get_json(self, path: str) -> dict[str, Any]:
        """A raw GET (for resources sushy has no class for), errors classified."""
        with self._operation(f"GET {path}"):
            self._connect()
            return self._get(path)

    def nic_macs(self) -> list[str]:
        """The System's NIC MACs, lower case (permanent MAC preferred), for the engine's
        wrong-machine guard: only the EthernetInterfaces collection is read, so a BMC whose
        storage or memory resources fail (the emulator's libvirt driver answers 500 for
        Storage) still answers. Empty when the BMC does not expose NICs."""
        with self._operation("NIC MACs"):
            self._connect()
            system = self._system
            docs = [dict(n.json) for n in self._optional(lambda: system.ethernet_interfaces)]
        return sorted({nic.mac for nic in map(inventory.nic_from, docs) if nic is not None})

    def inventory(self) -> Inventory:
        """UUID, serial, model, NIC MACs, drives (serial, WWN, size), CPUs, DIMMs.

        sushy resources for System, NICs, processors and storage; raw GETs for Memory
        (no sushy class). A missing optional collection (404, or not linked) is empty; a
        5xx fails the whole inventory (TemporaryError) rather than returning a partial one."""
        with self._operation("inventory"):
            self._connect()
            assert self._root is not None
            # A new System object (one GET): refresh() would refetch every sub-resource
            # an earlier call loaded.
            system = self._system = self._root.get_system(str(self._system.path))
            doc = dict(system.json)
            nics = [dict(n.json) for n in self._optional(lambda: system.ethernet_interfaces)]
            cpus = [dict(p.json) for p in self._optional(lambda: system.processors)]
            drives: list[dict[str, Any]] = []
            for storage in self._optional(lambda: system.storage):
                for ref in storage.json.get("Drives") or ():
                    if isinstance(ref, Mapping) and ref.get("@odata.id"):
                        drives.append(self._get(str(ref["@odata.id"])))
            simple: list[dict[str, Any]] = []
            if not drives:
                simple = [dict(s.json) for s in self._optional(lambda: system.simple_storage)]
            dimms: list[dict[str, Any]] = []
            memory_link = (doc.get("Memory") or {}).get("@odata.id")
            if memory_link:
                try:
                    members = self._get(str(memory_link)).get("Members") or ()
                except HttpFailure as failure:
                    if failure.status != 404:
                        raise
                    members = ()
                dimms = [self._get(str(m["@odata.id"])) for m in members if "@odata.id" in m]
            return inventory.from_documents(
                doc, nics=nics, drives=drives, simple_storage=simple, cpus=cpus, dimms=dimms,
                profile=self.quirks.name,
            )

    def oob_inventory(self) -> oob.OobInventory:
        """The out-of-band inventory record (see :mod:`reconciler.adapters.redfish.oob`):
        system identity, Manager, NIC MACs, drives, firmware versions. GETs only.

        Plain GETs, not sushy resources, so every link is checked before it is followed (a
        link to another host would receive our credentials) and every collection is bounded
        (``oob.MAX_*``; the rest is logged and noted). Each part fails alone: an HTTP error
        or a malformed document in the Manager, NICs, drives or firmware becomes a line in
        ``unavailable`` and that part is empty. Drives come from ``Storage/*/Drives/*``, or
        from ``SimpleStorage`` when Storage is absent, failing or lists no drive (older BMCs;
        the sushy-tools libvirt driver, whose Storage answers 500). The whole call fails
        only when the System itself cannot be read or the BMC stops answering (unreachable,
        no answer, TLS): a classified error as for every operation."""
        with self._operation("out-of-band inventory"):
            self._connect()
            assert self._root is not None
            notes = oob.Notes(secrets=(self.endpoint.password,))
            doc = self._system_doc()
            system = oob.system_part(doc, notes)
            manager_doc = self._oob_part(
                "manager", notes, None, lambda: self._oob_manager(doc, notes))
            manager = oob.manager_part(manager_doc, notes)
            nics: list[oob.OobNic] = self._oob_part(
                "nics", notes, [], lambda: self._oob_nics(doc, notes))
            drives: list[oob.OobDrive] = self._oob_drives(doc, notes)
            root = dict(self._root.json)
            firmware: list[oob.OobFirmware] = self._oob_part(
                "firmware", notes, [], lambda: self._oob_firmware(root, notes))
            record = oob.assemble(system, manager, nics, drives, firmware, notes)
            if record["unavailable"]:
                LOG.info("BMC %s: out-of-band inventory incomplete: %s", self.name,
                         "; ".join(record["unavailable"]))
            return record

    def _oob_part(self, part: str, notes: oob.Notes, default: T, read: Callable[[], T]) -> T:
        """``read()``, or ``default`` with a note when the BMC answers an error or a malformed
        document. Transport failures propagate: a BMC that stopped answering fails the call."""
        try:
            return read()
        except HttpFailure as failure:
            notes.add(f"{part}: {_http_note(failure)}")
        except oob.Malformed as exc:
            notes.add(f"{part}: {exc}")
        return default

    def _oob_member(self, part: str, notes: oob.Notes, path: str) -> dict[str, Any] | None:
        """One collection member, or ``None`` with a note (the other members are still read)."""
        return self._oob_part(part, notes, None, lambda: self._oob_get(path))

    def _oob_get(self, path: str) -> dict[str, Any]:
        try:
            return self._get(path)
        except (sushy_exc.SushyError, ValueError):
            raise oob.Malformed(f"GET {path}: not a JSON object") from None

    def _oob_link(self, doc: Doc, field: str, at: str) -> str | None:
        return oob.optional_link(doc, field, at, self.endpoint.base_url)

    def _oob_members(self, path: str, part: str, limit: int, notes: oob.Notes) -> list[str]:
        """The member paths of a collection, following ``Members@odata.nextLink``; at most
        ``limit`` (the rest logged and noted), each checked by :func:`oob.link`."""
        found: list[str] = []
        seen: set[str] = set()
        total = 0
        page: str | None = path
        for _ in range(oob.MAX_PAGES):
            if page is None:
                break
            doc = self._oob_get(page)
            members = doc.get("Members")
            if not isinstance(members, list):
                raise oob.Malformed(
                    f"{page}: Members is a {type(members).__name__}, expected a list")
            total += len(members)
            count = doc.get("Members@odata.count")  # the whole collection, all pages
            if isinstance(count, int) and not isinstance(count, bool) and count > total:
                total = count
            for i, ref in enumerate(members):
                if len(found) >= limit:
                    break
                try:
                    member = oob.link(ref, page, f"Members[{i}]", self.endpoint.base_url)
                except oob.Malformed as exc:
                    notes.add(f"{part}: {exc}")
                    continue
                if member not in seen:
                    seen.add(member)
                    found.append(member)
            page = self._oob_link(doc, "Members@odata.nextLink", page) \
                if isinstance(doc.get("Members@odata.nextLink"), str) and len(found) < limit \
                else None
        if total > limit:
            LOG.warning("BMC %s: %s lists %d members; reading the first %d",
                        self.name, path, total, limit)
            notes.add(f"{part}: {path} lists {total} members, read the first {limit}")
        return found

    def _oob_manager(self, system: Doc, notes: oob.Notes) -> dict[str, Any] | None:
        at = oob.where(system, "the System")
        links = system.get("Links")
        refs = links.get("ManagedBy") if isinstance(links, Mapping) else None
        if refs is None or refs == []:
            notes.add("manager: the System links no Manager (Links.ManagedBy)")
            return None
        if not isinstance(refs, list):
            raise oob.Malformed(f"{at}: Links.ManagedBy is a {type(refs).__name__}, "
                                "expected a list")
        path = oob.link(refs[0], at, "Links.ManagedBy[0]", self.endpoint.base_url)
        return self._oob_get(path)

    def _oob_nics(self, system: Doc, notes: oob.Notes) -> list[oob.OobNic]:
        at = oob.where(system, "the System")
        collection = self._oob_link(system, "EthernetInterfaces", at)
        if collection is None:
            notes.add("nics: the System links no EthernetInterfaces")
            return []
        return self._oob_entries(collection, "nics", oob.MAX_NICS, notes, oob.nic_entry)

    def _oob_drives(self, system: Doc, notes: oob.Notes) -> list[oob.OobDrive]:
        """Storage/*/Drives/*, else SimpleStorage/* (see :meth:`oob_inventory`)."""
        at = oob.where(system, "the System")
        drives: list[oob.OobDrive] = self._oob_part(
            "drives", notes, [], lambda: self._oob_storage_drives(system, at, notes))
        if drives:
            return drives
        try:
            simple = self._oob_link(system, "SimpleStorage", at)
        except oob.Malformed as exc:
            notes.add(f"drives: {exc}")
            return []
        if simple is None:
            if self._oob_link_or_none(system, "Storage", at) is None:
                notes.add("drives: the System links neither Storage nor SimpleStorage")
            return []
        return self._oob_part(
            "drives", notes, [], lambda: self._oob_simple_drives(simple, notes))

    def _oob_simple_drives(self, collection: str, notes: oob.Notes) -> list[oob.OobDrive]:
        out: list[oob.OobDrive] = []
        for path in self._oob_members(collection, "drives", oob.MAX_CONTROLLERS, notes):
            doc = self._oob_member("drives", notes, path)
            if doc is None:
                continue
            try:
                out.extend(oob.simple_storage_drives(doc, notes))
            except oob.Malformed as exc:
                notes.add(f"drives: {exc}")
        return out[:oob.MAX_DRIVES]

    def _oob_link_or_none(self, doc: Doc, field: str, at: str) -> str | None:
        try:
            return self._oob_link(doc, field, at)
        except oob.Malformed:
            return None

    def _oob_storage_drives(
        self, system: Doc, at: str, notes: oob.Notes
    ) -> list[oob.OobDrive]:
        collection = self._oob_link(system, "Storage", at)
        if collection is None:
            return []
        out: list[oob.OobDrive] = []
        seen: set[str] = set()
        for controller in self._oob_members(collection, "drives", oob.MAX_CONTROLLERS, notes):
            doc = self._oob_member("drives", notes, controller)
            refs = doc.get("Drives") if doc is not None else None
            if refs is None:
                continue
            if not isinstance(refs, list):
                notes.add(f"drives: {controller}: Drives is a {type(refs).__name__}, "
                          "expected a list")
                continue
            for i, ref in enumerate(refs):
                try:
                    path = oob.link(ref, controller, f"Drives[{i}]", self.endpoint.base_url)
                except oob.Malformed as exc:
                    notes.add(f"drives: {exc}")
                    continue
                if path in seen:
                    continue  # one drive listed by two controllers
                if len(seen) >= oob.MAX_DRIVES:
                    LOG.warning("BMC %s: more than %d drives; reading the first %d",
                                self.name, oob.MAX_DRIVES, oob.MAX_DRIVES)
                    notes.add(f"drives: more than {oob.MAX_DRIVES}, read the first "
                              f"{oob.MAX_DRIVES}")
                    return out
                seen.add(path)
                drive = self._oob_member("drives", notes, path)
                entry = oob.drive_entry(drive, notes) if drive is not None else None
                if entry is not None:
                    out.append(entry)
        return out

    def _oob_firmware(self, root: Doc, notes: oob.Notes) -> list[oob.OobFirmware]:
        update = self._oob_link(root, "UpdateService", "the service root")
        if update is None:
            notes.add("firmware: the service root links no UpdateService")
            return []
        service = self._oob_get(update)
        collection = self._oob_link(service, "FirmwareInventory", update)
        if collection is None:
            notes.add(f"firmware: {update} links no FirmwareInventory")
            return []
        return self._oob_entries(collection, "firmware", oob.MAX_FIRMWARE, notes,
                                 oob.firmware_entry)

    def _oob_entries(self, collection: str, part: str, limit: int, notes: oob.Notes,
                     entry: Callable[[Doc, oob.Notes], T | None]) -> list[T]:
        """``entry`` of each member of ``collection`` (at most ``limit``); a member that
        cannot be read or parsed is a note, not a failure."""
        out: list[T] = []
        for path in self._oob_members(collection, part, limit, notes):
            doc = self._oob_member(part, notes, path)
            found = entry(doc, notes) if doc is not None else None
            if found is not None:
                out.append(found)
        return out

    def _optional(self, get_collection: Callable[[], Any]) -> list[Any]:
        try:
            collection = get_collection()
        except sushy_exc.MissingAttributeError:
            return []
        except HttpFailure as failure:
            if failure.status == 404:
                return []
            raise
        try:
            return list(collection.get_members())
        except HttpFailure as failure:
            if failure.status == 404:
                return []
            raise


def _power(doc: Doc) -> PowerState:
    value = doc.get("PowerState")
    try:
        return PowerState(str(value))
    except ValueError:
        raise sushy_exc.SushyError(f"unknown PowerState {value!r}") from None


def _http_note(failure: HttpFailure) -> str:
    """A short line for ``unavailable``: status, request, Redfish's own words (truncated)."""
    detail = errors.describe_body(failure.body)
    if len(detail) > 80:
        detail = detail[:77] + "..."
    return f"HTTP {failure.status} from {failure.method} {failure.path}" + (
        f": {detail}" if detail else "")


def _opt(value: object) -> str | None:
    return None if value in (None, "", "None") else str(value)


def _few(items: list[str], limit: int = 5) -> str:
    names = [posixpath.basename(i.rstrip("/")) for i in items]
    if len(names) <= limit:
        return ", ".join(names) or "none"
    return ", ".join(names[:limit]) + f", ... ({len(names)} in all)"


def _transport_error(bmc: str, operation: str, failure: TransportFailure) -> ReconcilerError:
    table: dict[str, tuple[type[ReconcilerError], str, str | None]] = {
        "unreachable": (errors.BmcUnreachable, "BMC unreachable", None),
        "tls": (errors.BmcTlsError, "TLS failure", "pass --ca-bundle FILE, or --insecure "
                "for a lab BMC with a self-signed certificate"),
        "no-answer": (errors.BmcOutcomeUnknown, "no answer", None),
        "broken": (errors.BmcOutcomeUnknown, "connection broken", None),
    }
    cls, reason, hint = table[failure.kind]
    text = f"{reason} on {failure.method} {failure.path}: {failure.detail}"
    if failure.method not in ("GET", "HEAD") and failure.kind in ("no-answer", "broken"):
        text += " (not resent: it may have taken effect)"
    return errors.make(cls, bmc=bmc, operation=operation, text=text, hint=hint)
