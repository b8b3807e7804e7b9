"""The workflows' steps: one async function per step name of
:mod:`reconciler.machines.workflows`, each ``(ctx) -> Done | Wait``.

A step does one thing or asks for one thing and returns :class:`Wait` to be checked again
("asked now, checked next step": a graceful shutdown is requested, then the power state is read
every few seconds; nothing sleeps inside a driver). The executor enforces the step's timeout
across checks and persists ``ctx.scratch`` (build id, artifact URLs, disk, bytes written) after
every check, so a restart continues with what was learnt. Failures are raised classified: a
:class:`TemporaryError` is retried from the step's resume point after a backoff, a
:class:`PermanentError` stalls the server until its desired state changes.

Redfish goes through ``ctx.redfish`` (the driver in the executor's bounded thread pool, one
call at a time per BMC address), SSH through :mod:`reconciler.adapters.ssh` with the host key
pinned, builds through the build service's REST API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncssh

from reconciler.adapters import ssh
from reconciler.adapters.buildclient import BuildClient
from reconciler.adapters.redfish.driver import BmcDriver, BootEnabled, BootTarget, PowerState
from reconciler.engine import remote
from reconciler.errors import PermanentError, TemporaryError
from reconciler.model.desired import DesiredHost
from reconciler.model.evidence import contradictions
from reconciler.render.renderer import RenderedHost

LOG = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Done:
    note: str = ""


@dataclass(frozen=True, slots=True)
class Wait:
    delay: float
    note: str = ""


Outcome = Done | Wait


class WrongMachine(PermanentError):
    """The BMC or the booted OS is not the server the file describes."""

    reason = "WrongMachine"


class Contradicted(PermanentError):
    """The server file contradicts what inspection found on the server (a MAC or a disk it
    does not have, a disk smaller than the image): fix the file (``reconciler scaffold``)."""

    reason = "EvidenceContradicts"


@dataclass
class StepContext:
    host: DesiredHost
    target: str
    rendered: RenderedHost | None  # the provisioning workflow's seed and build request
    instance_id: str
    host_keys: Mapping[str, tuple[str, str]]  # stage -> (private, public)
    build: BuildClient
    redfish: Callable[[Callable[[BmcDriver], Any]], Awaitable[Any]]
    blocking: Callable[[Callable[[], Any]], Awaitable[Any]]
    client_key: asyncssh.SSHKey
    now: Callable[[], float]
    save: Callable[[], None]
    started: float
    graceful_timeout: float = 60.0
    ssh_port: int = 22
    scratch: dict[str, Any] = field(default_factory=dict)
    connect: Callable[..., Awaitable[ssh.Connection]] = ssh.connect
    # The server's hardware evidence (its committed inspection report, with what was collected
    # since): a destructive workflow that contradicts it is refused.
    evidence: Callable[[], Mapping[str, Any] | None] = lambda: None

    @property
    def address(self) -> str:
        """Where SSH goes: the address a checkin proved (inspection), else the IPAM one."""
        if self.scratch.get("address"):
            return str(self.scratch["address"])
        if self.host.address is None:
            raise PermanentError(f"{self.host.file}: no static or auto primary address")
        return str(self.host.address)

    async def shell(self, stage: str) -> ssh.Connection:
        """One SSH connection to the server's address, ``stage``'s host key pinned."""
        pinned = asyncssh.import_public_key(self.host_keys[stage][1])
        return await self.connect(self.address, key=self.client_key, port=self.ssh_port,
                                  host_key=pinned, timeout=10)


# --- build --------------------------------------------------------------------------------


def _rendered(ctx: StepContext) -> RenderedHost:
    if ctx.rendered is None:
        raise PermanentError(f"{ctx.host.name}: this workflow renders no boot image")
    return ctx.rendered


async def build(ctx: StepContext) -> Outcome:
    request = _rendered(ctx).build_request
    build_id = ctx.scratch.get("build_id")
    if build_id is None:
        doc = await ctx.blocking(lambda: ctx.build.submit(request))
        ctx.scratch["build_id"] = build_id = str(doc["id"])
        ctx.save()
    doc = await ctx.blocking(lambda: ctx.build.build(str(build_id)))
    if doc is None:  # the service lost it (purged): submit again
        ctx.scratch.pop("build_id", None)
        return Wait(0, "build unknown to the service, submitting again")
    state = doc.get("state")
    if state == "completed":
        artifacts = doc.get("artifacts") or {}
        ctx.scratch["iso_url"] = str(artifacts.get("isoUrl") or "")
        ctx.scratch["uki_url"] = str(artifacts.get("ukiUrl") or "")
        return Done(f"build {build_id} completed")
    if state == "failed":
        ctx.scratch.pop("build_id", None)  # a failed build is retried on resubmission
        raise TemporaryError(f"build {build_id} failed: {doc.get('error')}", delay=30)
    return Wait(2, f"build {build_id} {state}")


# --- Redfish ------------------------------------------------------------------------------


async def check_bmc(ctx: StepContext) -> Outcome:
    """Wrong-machine guard, first half: the BMC's NICs must include the primary MAC, and
    neither they nor the server's inspection report may contradict the server file."""
    primary = next((i.mac for i in ctx.host.interfaces if i.primary), None)
    if primary is None:
        primary = ctx.host.interfaces[0].mac if ctx.host.interfaces else None
    macs = await ctx.redfish(lambda bmc: bmc.nic_macs())
    if macs and primary is not None and primary.lower() not in macs:
        system = ctx.host.bmc.system_id or "(the only system)"
        raise WrongMachine(
            f"wrong machine: {ctx.host.file} says primary MAC {primary}, but BMC "
            f"{ctx.host.bmc.address} system {system} reports {', '.join(macs)}")
    report = ctx.evidence()
    found = contradictions(ctx.host, report, live_macs=set(macs) if macs else None)
    if found:
        raise Contradicted("refusing to write the disk: " + "; ".join(map(str, found)))
    if not macs or primary is None:
        return Done("the BMC reports no NIC MACs: the instance-id check guards alone")
    return Done(f"BMC reports {primary}" + ("; no contradiction with inspection/"
                                            f"{ctx.host.name}.yaml" if report else ""))


async def power_off(ctx: StepContext) -> Outcome:
    """GracefulShutdown, checked on later calls; ForceOff after ``graceful_timeout``."""
    if "off_requested" not in ctx.scratch:
        asked = await ctx.redfish(lambda bmc: bmc.request_off())
        if not asked:
            return Done("already off")
        ctx.scratch["off_requested"] = ctx.now()
        ctx.save()
        return Wait(2, "graceful shutdown requested")
    power = await ctx.redfish(lambda bmc: bmc.power_state())
    if power == PowerState.OFF:
        forced = ctx.scratch.pop("off_forced", False)
        ctx.scratch.pop("off_requested", None)
        return Done("forced off" if forced else "off (graceful)")
    waited = ctx.now() - float(ctx.scratch["off_requested"])
    if waited >= ctx.graceful_timeout and not ctx.scratch.get("off_forced"):
        await ctx.redfish(lambda bmc: bmc.request_off(force=True))
        ctx.scratch["off_forced"] = True
        ctx.save()
        return Wait(2, f"no graceful shutdown in {waited:.0f} s: forced off")
    return Wait(2, f"waiting for power off ({power})")


async def eject(ctx: StepContext) -> Outcome:
    await ctx.redfish(lambda bmc: bmc.eject_all_media())
    return Done()


def _boot_method(ctx: StepContext) -> str:
    return ctx.host.boot_method


async def attach(ctx: StepContext) -> Outcome:
    if _boot_method(ctx) == "cd":
        url = ctx.scratch["iso_url"]
        await ctx.redfish(lambda bmc: bmc.insert_cd(url))
        return Done(f"inserted {url}")
    return Done("UEFI HTTP boot: the URI is set with the boot override")


async def boot_once(ctx: StepContext) -> Outcome:
    if _boot_method(ctx) == "cd":
        await ctx.redfish(lambda bmc: bmc.set_boot(BootTarget.CD, BootEnabled.ONCE))
        return Done("boot Cd once")
    url = ctx.scratch["uki_url"]
    await ctx.redfish(lambda bmc: bmc.set_boot(BootTarget.UEFI_HTTP, BootEnabled.ONCE, url))
    return Done(f"boot UefiHttp once from {url}")


async def power_on(ctx: StepContext) -> Outcome:
    await ctx.redfish(lambda bmc: bmc.power_on())
    return Done()


async def boot_disk(ctx: StepContext) -> Outcome:
    await ctx.redfish(lambda bmc: bmc.clear_boot_override())
    return Done("boot override Hdd, continuous")


async def power_cycle(ctx: StepContext) -> Outcome:
    used = await ctx.redfish(lambda bmc: bmc.power_cycle())
    return Done(str(used))


# --- SSH ----------------------------------------------------------------------------------


async def _connect_or_wait(ctx: StepContext, stage: str) -> ssh.Connection | Wait:
    try:
        return await ctx.shell(stage)
    except TemporaryError as exc:
        return Wait(3, str(exc))


async def ssh_ephemeral(ctx: StepContext) -> Outcome:
    conn = await _connect_or_wait(ctx, "ephemeral")
    if isinstance(conn, Wait):
        return conn
    async with conn:
        await _verify(conn, ctx)
    return Done(f"ephemeral OS at {ctx.address}, instance-id {ctx.instance_id}")


async def _verify(conn: ssh.Connection, ctx: StepContext) -> None:
    try:
        await remote.verify_instance_id(conn, ctx.instance_id)
    except PermanentError as exc:
        raise WrongMachine(str(exc)) from None


async def find_disk(ctx: StepContext) -> Outcome:
    disk = ctx.host.disk
    if disk is None:
        raise PermanentError(f"{ctx.host.file}: disk: provisioning needs a serial or a WWN")
    async with await ctx.shell("ephemeral") as conn:
        await _verify(conn, ctx)
        device = await remote.find_disk(conn, serial=disk.serial, wwn=disk.wwn)
    ctx.scratch["disk"] = device
    return Done(device)


_PROGRESS = (
    f"stat -c %s {remote.DOWNLOAD} 2>/dev/null || echo 0; "
    "p=$(pgrep -xo qemu-img) && awk '/^write_bytes/ {print $2}' /proc/$p/io || echo 0"
)


async def _watch_progress(conn: ssh.Connection, ctx: StepContext) -> None:
    """Every few seconds: bytes downloaded and bytes written, into the persisted scratch."""
    while True:
        await asyncio.sleep(3)
        try:
            out = (await conn.run(_PROGRESS, timeout=20, check=False)).stdout.split()
            downloaded, written = (int(x) for x in out[:2])
        except (TemporaryError, ValueError):
            continue
        ctx.scratch["downloaded_bytes"] = max(downloaded, ctx.scratch.get("downloaded_bytes", 0))
        ctx.scratch["written_bytes"] = written
        ctx.save()


async def write_image(ctx: StepContext) -> Outcome:
    """Destructive: only after the instance-id (and the pinned key) proved the machine."""
    image = ctx.host.image
    if image is None:
        raise PermanentError(f"{ctx.host.file}: image: provisioning needs an image")
    device = ctx.scratch.get("disk")
    if not device:
        raise TemporaryError("no target disk recorded: find it again", delay=0)
    ctx.scratch.pop("written_bytes", None)
    async with await ctx.shell("ephemeral") as conn:
        await _verify(conn, ctx)
        # A write cut off by a reconciler restart may still run in the ephemeral OS (its SSH
        # session ended, not its processes): stop it before writing again.
        await conn.run("pkill -x qemu-img; pkill -x curl; while pgrep -x qemu-img >/dev/null;"
                       " do sleep 1; done; true", timeout=120, check=False)
        watcher = asyncio.create_task(_watch_progress(conn, ctx))
        try:
            await remote.write_image(conn, image.url, image.sha256, device)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
    ctx.scratch["image_written"] = image.sha256
    return Done(f"{image.url} written to {device}")


async def seed(ctx: StepContext) -> Outcome:
    device = ctx.scratch["disk"]
    async with await ctx.shell("ephemeral") as conn:
        await _verify(conn, ctx)
        part = await remote.find_root_partition(conn, device, ctx.host.architecture)
        seed_files = _rendered(ctx).seed
        await remote.seed_nocloud(conn, part, seed_files["meta-data"], seed_files["user-data"],
                                  seed_files.get("network-config"))
    return Done(f"NoCloud seed on {part}")


async def ssh_installed(ctx: StepContext) -> Outcome:
    try:
        conn = await _connect_or_wait(ctx, "installed")
    except PermanentError:
        # Right after the power cycle the ephemeral OS may still answer (its own pinned key):
        # not there yet. Any third key stays an error.
        try:
            async with await ctx.shell("ephemeral"):
                return Wait(3, "the ephemeral OS still answers")
        except (PermanentError, TemporaryError):
            pass
        raise
    if isinstance(conn, Wait):
        return conn
    async with conn:
        await _verify(conn, ctx)
        fstype = (await conn.run("findmnt -n -o FSTYPE /", timeout=30)).stdout.strip()
        # What the first boot wrote (cloud-init's host keys, its per-instance markers) is on
        # the disk before the server is called Ready: a hard reset right after must not leave
        # empty key files behind (sshd then fails to start).
        await conn.run("sync", timeout=120)
    if fstype in ("tmpfs", "ramfs", "rootfs", ""):
        raise TemporaryError(f"{ctx.address}: / is {fstype or 'unknown'}: not the installed OS "
                             "yet", delay=10)
    return Done(f"installed OS at {ctx.address}, root on {fstype}")


# --- inspection (the seed's "Inspection") --------------------------------------------------


async def register_checkin(ctx: StepContext) -> Outcome:
    checkin = ctx.instance_id
    await ctx.blocking(lambda: ctx.build.register_checkin(checkin))
    return Done(f"checkin {checkin} registered")


async def wait_checkin(ctx: StepContext) -> Outcome:
    checkin = ctx.instance_id
    addresses = await ctx.blocking(lambda: ctx.build.checkin(checkin))
    if not addresses:
        return Wait(3, "no checkin yet")
    ctx.scratch["checkin_addresses"] = addresses
    return Done(f"checked in from {', '.join(addresses)}")


async def ssh_checkin(ctx: StepContext) -> Outcome:
    """A DHCP address is no proof of identity: the address whose OS answers with this
    inspection's id (over the pinned key) is the server."""
    tried = []
    for address in ctx.scratch.get("checkin_addresses") or []:
        ctx.scratch["address"] = address
        try:
            async with await ctx.shell("ephemeral") as conn:
                got = await remote.read_instance_id(conn)
        except (TemporaryError, PermanentError) as exc:
            tried.append(f"{address}: {exc}")
            continue
        if got == ctx.instance_id:
            return Done(f"{address} answers with {got}")
        tried.append(f"{address}: instance-id {got}")
    ctx.scratch.pop("address", None)
    if ctx.now() - ctx.started > 60:
        raise WrongMachine("no checked-in address answers with inspection id "
                           f"{ctx.instance_id}: {'; '.join(tried)}")
    return Wait(3, "; ".join(tried) or "no address to try")


async def hw_inventory(ctx: StepContext) -> Outcome:
    async with await ctx.shell("ephemeral") as conn:
        await _verify(conn, ctx)
        found = await remote.hw_inventory(conn, ctx.instance_id)
    ctx.scratch["hardware"] = dict(found.raw)
    return Done(f"{len(found.disks)} disks, {len(found.nics)} NICs")


async def delete_checkin(ctx: StepContext) -> Outcome:
    checkin = ctx.instance_id
    await ctx.blocking(lambda: ctx.build.delete_checkin(checkin))
    return Done()


# Step name -> implementation; machines.workflows names the steps, this gives them bodies.
STEPS: Mapping[str, Callable[[StepContext], Awaitable[Outcome]]] = {
    "build": build,
    "check-bmc": check_bmc,
    "power-off": power_off,
    "eject": eject,
    "attach": attach,
    "boot-once": boot_once,
    "power-on": power_on,
    "ssh-ephemeral": ssh_ephemeral,
    "find-disk": find_disk,
    "write-image": write_image,
    "seed": seed,
    "eject-after": eject,
    "boot-disk": boot_disk,
    "power-cycle": power_cycle,
    "ssh-installed": ssh_installed,
    "register-checkin": register_checkin,
    "wait-checkin": wait_checkin,
    "ssh-checkin": ssh_checkin,
    "hw-inventory": hw_inventory,
    "power-off-after": power_off,
    "delete-checkin": delete_checkin,
}
