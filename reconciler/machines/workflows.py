"""The workflows as data: their steps, which are destructive or disruptive, where a restart
resumes, and how long each may take (ironic's ``states.py`` and Metal3's state machine are the
model: a table, not branches).

A workflow drives one server to one desired state. The engine runs its steps in order; before a
step starts its name is committed to the state database, so after ``kill -9`` the server is
found in that step and resumes at the step's ``resume`` point: the earliest step from which
running again is safe and sufficient. Steps after the disk write resume after it, so a finished
write is never repeated once the seed is on the disk.

- ``destructive``: writes the target disk (needs the committed state to ask for it; refused on a
  ``protected`` server; counted against the revision's ``max_destructive``).
- ``disruptive``: changes the power or boot of a running server (never on an ``unmanaged`` one).

``inspected`` runs :data:`INSPECT`: disruptive (the server reboots into the ephemeral OS) and
never destructive; its report is committed back to git by the loop (docs/engine.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    timeout: float  # seconds the step may take in all, across checks
    summary: str
    destructive: bool = False
    disruptive: bool = False
    resume: str | None = None  # step to restart from after a crash inside this one


@dataclass(frozen=True, slots=True)
class Workflow:
    name: str
    reaches: str  # the desired state it establishes
    steps: tuple[Step, ...]

    @property
    def destructive(self) -> bool:
        return any(s.destructive for s in self.steps)

    @property
    def disruptive(self) -> bool:
        return any(s.disruptive for s in self.steps)

    @property
    def first(self) -> str:
        return self.steps[0].name

    def step(self, name: str) -> Step:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(f"workflow {self.name} has no step {name!r}")

    def index(self, name: str) -> int:
        return self.steps.index(self.step(name))

    def after(self, name: str) -> str | None:
        """The step that follows ``name``; None when ``name`` is the last."""
        i = self.index(name) + 1
        return self.steps[i].name if i < len(self.steps) else None

    def resume_point(self, name: str) -> str:
        return self.step(name).resume or name

    def destructive_from(self, name: str) -> bool:
        """Whether running on from step ``name`` still writes the disk."""
        return any(s.destructive for s in self.steps[self.index(name):])


S = Step

# The seed's Redfish sequence that boots our image once: a crash anywhere in it starts it over.
BOOT_EPHEMERAL = (
    S("power-off", 300, "power off: graceful, then forced", disruptive=True),
    S("eject", 120, "eject virtual media", disruptive=True, resume="power-off"),
    S("attach", 300, "insert the ISO or set HttpBootUri", disruptive=True, resume="power-off"),
    S("boot-once", 120, "boot override once: Cd or UefiHttp", disruptive=True,
      resume="power-off"),
    S("power-on", 300, "power on", disruptive=True, resume="power-off"),
)

# The seed's "Provisioning a Known Server", end to end.
PROVISION = Workflow("provision", "provisioned", (
    S("build", 900, "build the boot image (network-config, no checkin URL)"),
    S("check-bmc", 120, "wrong-machine guard: the BMC reports the primary MAC"),
    *BOOT_EPHEMERAL,
    S("ssh-ephemeral", 900, "SSH on the IPAM address, pinned host key, verify instance-id"),
    S("find-disk", 120, "target disk by serial or WWN", resume="ssh-ephemeral"),
    S("write-image", 3600, "download, check sha256, qemu-img convert onto the disk",
      destructive=True, resume="ssh-ephemeral"),
    S("seed", 300, "root partition by GPT type; NoCloud seed; unmount", destructive=True,
      resume="ssh-ephemeral"),
    S("eject-after", 120, "eject virtual media", disruptive=True),
    S("boot-disk", 120, "boot override Hdd, continuous", disruptive=True, resume="eject-after"),
    S("power-cycle", 300, "power cycle into the installed OS", disruptive=True,
      resume="eject-after"),
    S("ssh-installed", 900, "SSH on the installed OS, pinned host key, verify instance-id"),
))

POWER_OFF = Workflow("power-off", "off", (
    S("power-off", 300, "power off: graceful, then forced", disruptive=True),
    S("eject", 120, "eject virtual media", disruptive=True, resume="power-off"),
))

POWER_ON = Workflow("power-on", "provisioned", (
    S("power-on", 300, "power on (found off with nothing else to do)", disruptive=True),
))

# The seed's "Inspection": a server known only by its BMC boots the ephemeral OS with DHCP and a
# checkin URL; the reconciler SSHes to each reported address until one answers with this
# inspection's id, reads the hardware inventory, and leaves the server off. Never touches a disk.
INSPECT = Workflow("inspect", "inspected", (
    S("build", 900, "build the boot image (no network-config, a checkin URL)"),
    S("register-checkin", 60, "register the checkin id"),
    *BOOT_EPHEMERAL,
    S("wait-checkin", 900, "the booted OS reports its DHCP addresses"),
    S("ssh-checkin", 300, "SSH to each address until one answers with this inspection id"),
    S("hw-inventory", 300, "run hw-inventory", resume="ssh-checkin"),
    S("power-off-after", 300, "power off: graceful, then forced", disruptive=True),
    S("eject-after", 120, "eject virtual media", disruptive=True),
    S("boot-disk", 120, "clear the boot override (Hdd, continuous)", disruptive=True),
    S("delete-checkin", 60, "delete the checkin"),
))

WORKFLOWS: Mapping[str, Workflow] = MappingProxyType(
    {w.name: w for w in (PROVISION, POWER_OFF, POWER_ON, INSPECT)}
)

# Desired state -> the workflow that reaches it from anywhere (None: nothing to run).
STATE_WORKFLOW: Mapping[str, Workflow | None] = MappingProxyType({
    "provisioned": PROVISION,
    "off": POWER_OFF,
    "inspected": INSPECT,
    "unmanaged": None,
})
