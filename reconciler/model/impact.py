"""What a change to each field of a desired host does: the one table.

The build and provision digests (:mod:`reconciler.model.desired`), the pull-request plan
(:mod:`reconciler.plan.inventory_diff`) and the reconcile loop's decision
(:mod:`reconciler.plan.decide`) all derive from :data:`FIELD_EFFECTS`; a test walks every schema
field and checks that they agree.

A field has one or more effects:

- ``STATE``: selects the workflow (provisioned, inspected, off, unmanaged).
- ``DISK``: ends up on the target disk (image, disk, network identity, cloud-init seed); a
  server that is provisioned with other values must be reprovisioned -- its disk is wiped.
- ``BOOT_IMAGE``: goes into the ephemeral-OS boot image (kernel, initramfs, command line,
  overlay). The image is built when a workflow next boots the server; a converged server is not
  touched for it.
- ``DELIVERY``: how the reconciler reaches the BMC and hands it the image (address,
  credentials, boot method); used from the next Redfish call on, never a reason to act.
- ``SAFETY``: what the reconciler may do (protected, suspend).
- ``INSPECT``: changes what an inspection must re-collect: ``inspect_generation`` (bumped by a
  commit to ask for one), the ephemeral OS that runs hw-inventory (architecture, kernel,
  initramfs, command line: a new kernel may see other devices, name drivers differently, count
  memory differently) and the BMC identity (of ``bmc`` only its address's host and the system
  id: another system is another machine; credentials and TLS settings are how, not what). A
  server in ``state: inspected`` is inspected again when :attr:`DesiredHost.inspect_digest`
  changes; no other state acts on it. Not in it: SSH keys, the target image, the disk, the
  interfaces (inspection renders no network-config) and the templates.
- ``NONE``: bookkeeping (the file the server came from).

Templates receive the whole host, so an inventory's template override could put any field into
the boot image or the seed; the fields an override can reach that way but the project's
templates do not use (``user_data`` in the ephemeral image) are counted conservatively.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from types import MappingProxyType


class Effect(StrEnum):
    STATE = "state"
    DISK = "disk"
    BOOT_IMAGE = "boot-image"
    DELIVERY = "delivery"
    SAFETY = "safety"
    INSPECT = "inspect"
    NONE = "none"


E = Effect

# Top-level field of DesiredHost.to_record() -> its effects. Every record field is here
# (tests/unit/test_impact.py checks it against the record and the server schema).
FIELD_EFFECTS: Mapping[str, frozenset[Effect]] = MappingProxyType({
    "name": frozenset({E.BOOT_IMAGE, E.DISK}),  # hostname in meta-data and instance-id
    "file": frozenset({E.NONE}),
    "state": frozenset({E.STATE}),
    "protected": frozenset({E.SAFETY}),
    "suspend": frozenset({E.SAFETY}),
    "architecture": frozenset({E.BOOT_IMAGE, E.DISK, E.INSPECT}),
    "bmc": frozenset({E.DELIVERY, E.INSPECT}),  # INSPECT: its identity only (see above)
    "boot_method": frozenset({E.DELIVERY}),
    "kernel": frozenset({E.BOOT_IMAGE, E.INSPECT}),
    "initramfs": frozenset({E.BOOT_IMAGE, E.INSPECT}),
    "cmdline": frozenset({E.BOOT_IMAGE, E.INSPECT}),
    "interfaces": frozenset({E.BOOT_IMAGE, E.DISK}),  # network-config of both stages
    "disk": frozenset({E.DISK}),
    "image": frozenset({E.DISK}),
    "ssh_keys": frozenset({E.BOOT_IMAGE, E.DISK}),  # authorized_keys of both stages
    "user_data": frozenset({E.BOOT_IMAGE, E.DISK}),
    "templates_digest": frozenset({E.BOOT_IMAGE, E.DISK}),
    "inspect_generation": frozenset({E.INSPECT}),
})


def fields_with(effect: Effect) -> tuple[str, ...]:
    """Record fields having ``effect``, sorted (the digest of those fields is canonical)."""
    return tuple(sorted(k for k, v in FIELD_EFFECTS.items() if effect in v))


BUILD_FIELDS = fields_with(Effect.BOOT_IMAGE)
PROVISION_FIELDS = fields_with(Effect.DISK)
INSPECT_FIELDS = fields_with(Effect.INSPECT)


def effects_of(fields: Iterable[str]) -> frozenset[Effect]:
    """Union of the effects of these top-level fields (a dotted path counts by its head)."""
    out: set[Effect] = set()
    for path in fields:
        out |= FIELD_EFFECTS[path.split(".", 1)[0].split("[", 1)[0]]
    return frozenset(out)
