"""``FakeBmc``: the :class:`~reconciler.adapters.redfish.driver.BmcDriver` interface over an
in-memory System, fed by recorded Redfish JSON, for other areas' fast unit tests.

It follows the real driver's rules where a caller could notice: insert ejects first and
checks the URL (Q11), power_on on a host that is on does nothing, PowerCycle falls back when
the recording does not allow it, set_boot refuses UefiHttp on a System without HttpBootUri.
Every call is appended to ``calls``; ``fail_next(method, error)`` makes the next call of a
method raise (e.g. a ``BmcBusy`` to test the engine's retry path). Power transitions land
after ``transition_polls`` calls of ``power_state``/``wait_power`` (0 = immediately).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from reconciler.adapters.redfish import errors, inventory, oob
from reconciler.adapters.redfish.driver import (
    Bmc,
    BmcDriver,
    BootEnabled,
    BootTarget,
    OffResult,
    PowerState,
    check_image_url,
)
from reconciler.adapters.redfish.inventory import Inventory
from reconciler.adapters.redfish.quirks import GENERIC
from reconciler.errors import InputError, ReconcilerError

RECORDINGS = Path(__file__).with_name("recordings")


class FakeBmc:
    """In-memory BMC. ``documents``: {"system": {...}, "nics": [...], "drives": [...],
    "cpus": [...], "dimms": [...]} as recorded from a Redfish service; for
    :meth:`oob_inventory` also, when given, "manager": {...}, "firmware": [...] (members of
    FirmwareInventory), "simple_storage": [...] and "oob_unavailable": [...] (notes to
    report, e.g. to test a consumer of a partial inventory)."""

    def __init__(
        self,
        documents: Mapping[str, Any],
        *,
        name: str = "fake://bmc",
        transition_polls: int = 0,
    ) -> None:
        self.docs = copy.deepcopy(dict(documents))
        self.system: dict[str, Any] = self.docs["system"]
        self.name = name
        self.calls: list[tuple[str, tuple[object, ...]]] = []
        self.media: str | None = None
        self._failures: dict[str, list[ReconcilerError]] = {}
        self._transition_polls = transition_polls
        self._pending: tuple[PowerState, int] | None = None

    @classmethod
    def from_recording(cls, name: str = "emulator", **kwargs: Any) -> FakeBmc:
        """Load ``recordings/<name>.json`` (``emulator`` = sushy-tools, ``dell`` = iDRAC-shaped)."""
        path = Path(name) if name.endswith(".json") else RECORDINGS / f"{name}.json"
        return cls(json.loads(path.read_text()), **kwargs)

    def fail_next(self, method: str, error: ReconcilerError) -> None:
        self._failures.setdefault(method, []).append(error)

    def _call(self, method: str, *args: object) -> None:
        self.calls.append((method, args))
        pending = self._failures.get(method)
        if pending:
            raise pending.pop(0)

    def _settle(self) -> None:
        if self._pending is not None:
            state, polls = self._pending
            if polls <= 0:
                self.system["PowerState"] = str(state)
                self._pending = None
            else:
                self._pending = (state, polls - 1)

    def _set_power(self, state: PowerState) -> None:
        self._pending = (state, self._transition_polls)
        self._settle()

    def _allowed_resets(self) -> Sequence[str]:
        action = self.system.get("Actions", {}).get("#ComputerSystem.Reset", {})
        return list(action.get("ResetType@Redfish.AllowableValues") or ())

    def power_state(self) -> PowerState:
        self._call("power_state")
        self._settle()
        return PowerState(self.system["PowerState"])

    def power_on(self) -> None:
        self._call("power_on")
        if self.system["PowerState"] != "On":
            self._set_power(PowerState.ON)

    def graceful_off(self, timeout: float = 120.0) -> OffResult:
        self._call("graceful_off", timeout)
        if self.system["PowerState"] == "Off" and self._pending is None:
            return OffResult.ALREADY_OFF
        self._set_power(PowerState.OFF)
        self._pending = None
        self.system["PowerState"] = "Off"
        return OffResult.GRACEFUL

    def request_off(self, *, force: bool = False) -> bool:
        self._call("request_off", force)
        if self.system["PowerState"] == "Off" and self._pending is None:
            return False
        if not force and self.system.get("ignores_graceful"):
            return True  # an OS that ignores ACPI: only ForceOff works
        self._set_power(PowerState.OFF)
        return True

    def power_cycle(self) -> str:
        self._call("power_cycle")
        if self.system["PowerState"] == "Off":
            self._set_power(PowerState.ON)
            return "On"
        allowed = self._allowed_resets()
        used = "PowerCycle" if not allowed or "PowerCycle" in allowed else "ForceRestart"
        self._set_power(PowerState.ON)
        return used

    def wait_power(self, state: PowerState, timeout: float) -> None:
        self._call("wait_power", state, timeout)
        for _ in range(self._transition_polls + 1):
            self._settle()
            if self.system["PowerState"] == state:
                return
        raise errors.make(
            errors.BmcTimeout, bmc=self.name, operation=f"wait for power {state}",
            text=f"still {self.system['PowerState']} after {timeout:g}s",
        )

    def eject_all_media(self) -> None:
        self._call("eject_all_media")
        self.media = None

    def insert_cd(self, url: str) -> str:
        self._call("insert_cd", url)
        check_image_url(url, GENERIC)
        self.media = url
        return f"{self.system.get('@odata.id', '/redfish/v1/Systems/fake')}/VirtualMedia/Cd"

    def set_boot(
        self,
        target: BootTarget,
        enabled: BootEnabled = BootEnabled.ONCE,
        http_uri: str | None = None,
    ) -> None:
        self._call("set_boot", str(target), str(enabled), http_uri)
        boot = self.system.setdefault("Boot", {})
        if BootTarget(target) == BootTarget.UEFI_HTTP:
            if not http_uri:
                raise InputError("boot http: a URL is required")
            if "HttpBootUri" not in boot:
                raise errors.make(
                    errors.BmcUnsupported, bmc=self.name, operation="boot UefiHttp",
                    text="the System has no Boot.HttpBootUri property",
                )
            boot["HttpBootUri"] = http_uri
        elif "HttpBootUri" in boot:
            boot["HttpBootUri"] = ""
        boot.update(
            BootSourceOverrideTarget=str(target),
            BootSourceOverrideEnabled=str(enabled),
            BootSourceOverrideMode="UEFI",
        )

    def clear_boot_override(self) -> None:
        self.set_boot(BootTarget.HDD, BootEnabled.CONTINUOUS)

    def nic_macs(self) -> list[str]:
        self._call("nic_macs")
        found = (inventory.nic_from(d) for d in self.docs.get("nics", ()))
        return sorted({nic.mac for nic in found if nic is not None})

    def inventory(self) -> Inventory:
        self._call("inventory")
        return inventory.from_documents(
            self.system,
            nics=self.docs.get("nics", ()),
            drives=self.docs.get("drives", ()),
            cpus=self.docs.get("cpus", ()),
            dimms=self.docs.get("dimms", ()),
            profile="fake",
        )

    def oob_inventory(self) -> oob.OobInventory:
        """The out-of-band record (:mod:`reconciler.adapters.redfish.oob`) of the recorded
        documents, parsed by the same code as :meth:`Bmc.oob_inventory`."""
        self._call("oob_inventory")
        notes = oob.Notes()
        for note in self.docs.get("oob_unavailable", ()):
            notes.add(str(note))
        return oob.from_documents(
            self.system,
            manager=self.docs.get("manager"),
            nics=self.docs.get("nics", ()),
            drives=self.docs.get("drives", ()),
            simple_storage=self.docs.get("simple_storage", ()),
            firmware=self.docs.get("firmware", ()),
            notes=notes,
        )


def _conforms(fake: FakeBmc, real: Bmc) -> tuple[BmcDriver, BmcDriver]:
    """Never called: mypy checks here that both classes implement BmcDriver."""
    return fake, real
