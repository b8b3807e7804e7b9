"""Vendor quirks as data.

A :class:`Quirks` profile switches named behaviours of the driver; :data:`PROFILES` says which
profile applies to which Manufacturer / Model / BMC firmware. The driver's flow never tests a
vendor name: supporting a new vendor means adding a row here (and a vendor-shaped fixture in
``tests/fixtures/redfish_vendors.py`` that reproduces its behaviour).

Quirk numbers (``Qn``) refer to the catalogue in ``/work/shared/redfish-quirks.md``, which
cites the OpenStack ironic/sushy release notes and issues each behaviour comes from.

The ``generic`` profile is defensive on purpose: every workaround that is harmless on a
standards-following BMC is on by default (try System and Manager virtual media, accept DVD,
eject everything first, send ``{}`` to EjectMedia, send the whole boot payload, ...). Vendor
profiles then change what a standard BMC would not tolerate (UsbCd, mandatory
TransferProtocolType, power off before eject) or what needs other timing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Literal

Ask = Literal["never", "on_demand", "always"]


@dataclass(frozen=True, slots=True)
class Retry:
    """``attempts`` tries in all, sleeping ``delay`` then ``delay*factor`` ... between them."""

    attempts: int = 1
    delay: float = 2.0
    factor: float = 2.0
    max_delay: float = 30.0

    def delays(self) -> list[float]:
        out, d = [], self.delay
        for _ in range(self.attempts - 1):
            out.append(min(d, self.max_delay))
            d *= self.factor
        return out


@dataclass(frozen=True, slots=True)
class Match:
    """Which BMCs a profile is for. Regexes are searched case-insensitively; the firmware
    range is ``[firmware_min, firmware_below)`` on the dotted numeric version."""

    manufacturer: str = ""
    model: str = ""
    firmware_min: tuple[int, ...] | None = None
    firmware_below: tuple[int, ...] | None = None

    @property
    def needs_firmware(self) -> bool:
        return self.firmware_min is not None or self.firmware_below is not None

    def matches(self, manufacturer: str, model: str, firmware: str | None) -> bool:
        if self.manufacturer and not re.search(self.manufacturer, manufacturer, re.I):
            return False
        if self.model and not re.search(self.model, model, re.I):
            return False
        if self.needs_firmware:
            version = parse_version(firmware or "")
            if version is None:
                return False
            if self.firmware_min is not None and version < self.firmware_min:
                return False
            if self.firmware_below is not None and version >= self.firmware_below:
                return False
        return True


def parse_version(text: str) -> tuple[int, ...] | None:
    """``"6.10.30.00"`` -> ``(6, 10, 30, 0)``; ``"iLO 5 v2.72"`` -> ``(2, 72)``."""
    found = re.search(r"(\d+(?:\.\d+)+)", text)
    if not found:
        return None
    return tuple(int(p) for p in found.group(1).split("."))


GENERIC_RACE_IDS = frozenset(
    {
        # Q21 (HPE iLO): boot settings refused while the host runs POST.
        "UnableToModifyDuringSystemPOST",
        # Q22 (HPE iLO): "invalid for system state" right after a power transition.
        "InvalidOperationForSystemState",
        # Q23 (Dell iDRAC): "data sources unavailable" while the previous job settles.
        "SYS518",
    }
)


@dataclass(frozen=True, slots=True)
class Quirks:
    """One vendor profile. Field comments name the catalogue row each switch handles."""

    name: str
    match: Match = field(default_factory=Match)
    notes: str = ""
    # Q1: where to look for virtual media slots, in order ("System" and/or "Manager").
    vmedia_locations: tuple[str, ...] = ("System", "Manager")
    # Q2: insert by PATCHing Image/Inserted when a slot has no InsertMedia action;
    # "patch" forces the PATCH form even when the action is advertised.
    insert_via: Literal["action", "patch"] = "action"
    patch_when_no_action: bool = True
    # Q3: statuses from InsertMedia on one slot that mean "try the next slot".
    next_slot_statuses: frozenset[int] = frozenset({400, 405})
    # Q4: MediaTypes that count as a CD drive.
    cd_media_types: frozenset[str] = frozenset({"CD", "DVD"})
    # Q5: InsertMedia retried on 5xx (eject still in progress); insert verified by re-reading
    # the slot until Image and Inserted show it (stale state after eject).
    insert_retry: Retry = Retry(attempts=3, delay=2.0)
    insert_settle: float = 20.0
    # Q6: a slot whose ConnectedVia is NotConnected is empty whatever Image/Inserted say.
    not_connected_is_empty: bool = True
    # Q7: eject media from every virtual media slot before inserting, not only the CD slot.
    eject_all_slots: bool = True
    # Q8: TransferProtocolType in InsertMedia: never, after the BMC asks for it, or always.
    transfer_protocol: Ask = "on_demand"
    # Q9: Inserted/WriteProtected are rejected as read-only in the InsertMedia POST (omit
    # them there) but required in the PATCH form.
    post_insert_flags: bool = False
    patch_insert_flags: bool = True
    # Q10: UserName/Password in InsertMedia (dummy ones: our images are public URLs).
    media_credentials: Ask = "on_demand"
    # Q11: refuse image URLs that do not end in .iso or carry a query, before any request.
    iso_url_rules: bool = True
    # Q12: EjectMedia with an empty JSON body {}; "no media present" errors count as done.
    eject_json_body: bool = True
    eject_absent_ok: bool = True
    # Q15: send Target, Enabled and Mode in every boot PATCH (else some BMCs revert Enabled
    # to Once or Mode to Legacy); re-PATCH the mode if it read back wrong.
    boot_full_payload: bool = True
    boot_resync_mode: bool = True
    # Q21/Q22/Q23: MessageIds meaning "busy right now, retry", and how to retry power/boot.
    race_ids: frozenset[str] = GENERIC_RACE_IDS
    race_retry: Retry = Retry(attempts=4, delay=3.0)
    # Q28: boot target names for the virtual CD, first one the BMC allows wins.
    cd_boot_targets: tuple[str, ...] = ("Cd",)
    # Q29: power the host off before ejecting (ejecting under a running OS corrupts it).
    power_off_before_eject: bool = False
    # Reset types tried, in order, when PowerCycle is not allowed (then ForceOff + On).
    cycle_fallbacks: tuple[str, ...] = ("ForceRestart",)

    def with_changes(self, **changes: object) -> Quirks:
        """A copy with some switches changed (tests, per-host overrides)."""
        return replace(self, **changes)  # type: ignore[arg-type]


GENERIC = Quirks(name="generic", notes="standards-following BMC, defensive defaults")

# Most specific first; the first match wins; GENERIC is the fallback.
PROFILES: tuple[Quirks, ...] = (
    Quirks(
        name="dell-idrac-5x",
        match=Match(manufacturer=r"^dell", firmware_min=(5,), firmware_below=(6,)),
        notes="iDRAC 5.x needs ~20 s between operations (Q23)",
        vmedia_locations=("Manager", "System"),
        race_ids=GENERIC_RACE_IDS | {"ActionParameterValueConflict"},
        race_retry=Retry(attempts=5, delay=10.0, factor=1.5),
        insert_retry=Retry(attempts=4, delay=10.0),
        power_off_before_eject=True,
    ),
    Quirks(
        name="dell-idrac",
        match=Match(manufacturer=r"^dell"),
        notes="iDRAC 9/10: vmedia under System on iDRAC10 (Q1), eject races (Q5, Q7), "
        "409 on power-on after off (Q22), power off before eject (Q29)",
        vmedia_locations=("System", "Manager"),
        race_ids=GENERIC_RACE_IDS | {"ActionParameterValueConflict"},
        race_retry=Retry(attempts=5, delay=3.0),
        insert_retry=Retry(attempts=4, delay=3.0),
        power_off_before_eject=True,
    ),
    Quirks(
        name="hpe-ilo",
        match=Match(manufacturer=r"^(hpe|hp)\b"),
        notes="iLO: EjectMedia needs {} and errors on absent media (Q12); POST race on boot "
        "settings (Q21); power-on refused in transition (Q22)",
        vmedia_locations=("Manager", "System"),
        race_retry=Retry(attempts=6, delay=5.0, factor=1.5),
    ),
    Quirks(
        name="supermicro-x11",
        match=Match(manufacturer=r"supermicro", model=r"X11|X12|H12|H11"),
        notes="X11/X12: Inserted/WriteProtected read-only in POST (Q9), .iso URLs (Q11), "
        "NotConnected slots (Q6), boot override persistence (Q15), UsbCd (Q28)",
        cd_boot_targets=("UsbCd", "Cd"),
        vmedia_locations=("Manager", "System"),
    ),
    Quirks(
        name="supermicro",
        match=Match(manufacturer=r"supermicro"),
        notes="newer boards boot virtual media as Cd (Q28 varies within Supermicro)",
        cd_boot_targets=("Cd", "UsbCd"),
        vmedia_locations=("Manager", "System"),
    ),
    Quirks(
        name="lenovo-xcc",
        match=Match(manufacturer=r"lenovo"),
        notes="no InsertMedia action on SD530/SR630 v2: PATCH with Inserted (Q2, Q9)",
        insert_via="patch",
        vmedia_locations=("System", "Manager"),
    ),
    Quirks(
        name="cisco",
        match=Match(manufacturer=r"cisco"),
        notes="KVM-only slots without InsertMedia, 400/405 on internal slots (Q3); DVD only (Q4)",
        vmedia_locations=("Manager", "System"),
    ),
    Quirks(
        name="nokia",
        match=Match(manufacturer=r"nokia"),
        notes="InsertMedia requires TransferProtocolType (Q8)",
        transfer_protocol="always",
    ),
    Quirks(
        name="nvidia-dgx",
        match=Match(manufacturer=r"nvidia"),
        notes="InsertMedia requires UserName/Password even for public images (Q10)",
        media_credentials="always",
    ),
    GENERIC,
)


def needs_firmware(manufacturer: str, model: str, profiles: tuple[Quirks, ...] = PROFILES) -> bool:
    """Whether choosing a profile needs the BMC firmware version (one more GET)."""
    return any(
        p.match.needs_firmware and replace(p.match, firmware_min=None, firmware_below=None)
        .matches(manufacturer, model, None)
        for p in profiles
    )


def select(
    manufacturer: str,
    model: str,
    firmware: str | None,
    profiles: tuple[Quirks, ...] = PROFILES,
) -> Quirks:
    """The first profile whose match accepts this BMC; GENERIC when none does."""
    for profile in profiles:
        if profile.match.matches(manufacturer, model, firmware):
            return profile
    return GENERIC


def by_name(name: str, profiles: tuple[Quirks, ...] = PROFILES) -> Quirks | None:
    for profile in profiles:
        if profile.name == name:
            return profile
    return None
