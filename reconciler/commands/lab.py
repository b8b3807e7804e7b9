"""``reconciler lab up|status|down``: the virtual lab of UEFI VMs behind a Redfish emulator."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
from pathlib import Path
from typing import Any

import yaml

from reconciler.errors import InputError, ToolMissing
from reconciler.lab import lifecycle
from reconciler.lab.spec import LabPaths
from reconciler.lab.state import LabState

LOG = logging.getLogger(__name__)

# What `lab up` needs from the 'lab' extra (pyproject.toml), which a plain install lacks:
# bcrypt writes the emulator's htpasswd file; gunicorn runs the sushy-tools emulator, whose
# libvirt driver imports libvirt-python.
LAB_EXTRA_MODULES = ("bcrypt", "gunicorn", "sushy_tools", "libvirt")


def require_lab_extra() -> None:
    """A missing module of the 'lab' extra is a one-line error naming the extra."""
    for name in LAB_EXTRA_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            raise ToolMissing(
                "the lab needs the 'lab' extra: pip install 'reconciler[lab]' "
                f"(missing module: {exc.name or name})"
            ) from None


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "lab",
        help="bring up a virtual lab: UEFI VMs behind a Redfish emulator in a network namespace",
        description="A virtual lab in a network namespace of its own: a bridge on "
        "198.18.0.0/24, dnsmasq, libvirtd, the sushy-tools Redfish emulator and N OVMF VMs.",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where the lab keeps its files (default: $RECONCILER_LAB_DIR or var/lab)",
    )
    sub = parser.add_subparsers(dest="lab_command", metavar="ACTION", required=True)

    p_up = sub.add_parser("up", help="create the lab (tearing down a crashed one first)")
    p_up.add_argument("--hosts", type=int, default=2, help="number of VMs (default 2)")
    p_up.add_argument("--arch", default="amd64", help="VM architecture (amd64)")
    p_up.add_argument(
        "--accel", default="auto", help="auto (KVM only with VMX/SVM), tcg or kvm"
    )
    p_up.add_argument(
        "--secrets-dir",
        type=Path,
        default=None,
        help="where the lab-bmc credentials go (default: $RECONCILER_SECRETS_DIR or "
        "/etc/reconciler/secrets)",
    )
    p_up.add_argument(
        "--images",
        type=Path,
        default=None,
        help="base artifacts directory: also run the build service in the lab with it",
    )
    p_up.add_argument(
        "--service-only", action="store_true",
        help="with --images: run only the build service (`reconciler serve`), not the "
        "reconciler on the lab's inventory repository",
    )
    p_up.add_argument(
        "--output", type=Path, default=None, help="also write the lab description to this YAML"
    )
    p_up.set_defaults(func=cmd_up)

    p_status = sub.add_parser("status", help="show the lab and whether its daemons run")
    p_status.set_defaults(func=cmd_status)

    p_down = sub.add_parser("down", help="remove everything `lab up` created")
    p_down.set_defaults(func=cmd_down)

    p_boot = sub.add_parser(
        "boot",
        help="boot a lab host into the ephemeral OS through Redfish (needs up --images)",
    )
    p_boot.add_argument("--host", type=int, default=1, help="lab host number (default 1)")
    p_boot.add_argument(
        "--inventory",
        type=Path,
        default=None,
        help="inventory directory whose server with the host's BMC system or MAC to boot "
        "(default: the lab's inventory repository)",
    )
    p_boot.add_argument(
        "--inspect",
        action="store_true",
        help="inspection instead: DHCP, checkin, SSH, hw-inventory (no inventory identity)",
    )
    p_boot.add_argument("--timeout", type=float, default=600, help="seconds to wait for SSH")
    p_boot.set_defaults(func=cmd_boot)


def lab_paths(args: argparse.Namespace) -> LabPaths:
    root = args.state_dir
    if root is None:
        env = os.environ.get("RECONCILER_LAB_DIR")
        root = Path(env) if env else lifecycle.default_state_dir()
    return LabPaths(root.resolve())


def cmd_up(args: argparse.Namespace) -> int:
    require_lab_extra()
    paths = lab_paths(args)
    service = None
    if args.images is not None:
        if not args.images.is_dir():
            raise InputError(f"--images: {args.images} is not a directory",
                             hint="reconciler images ensure prints the directory")
        if not (args.images / args.arch).is_dir():
            raise InputError(
                f"--images: {args.images} has no {args.arch}/ directory of base artifacts",
                hint="reconciler images ensure prints one, or reconciler images build --out DIR",
            )
        service = lifecycle.ServiceOptions(args.images, reconcile=not args.service_only)
    options = lifecycle.UpOptions(
        hosts=args.hosts,
        arch=args.arch,
        accel=args.accel,
        secrets_dir=args.secrets_dir,
        service=service,
    )
    state = lifecycle.up(paths, options)
    text = describe(state)
    if args.output is not None:
        from reconciler.lab.state import write_atomic

        write_atomic(args.output, yaml.safe_dump(state.to_record(), sort_keys=False))
    print(text)
    print(f"state: {paths.state_file}")
    return 0


def describe(state: LabState) -> str:
    lines = [
        f"lab up in network namespace {state.namespace} (accel {state.accel})",
        f"  subnet {state.subnet}, gateway/DNS {state.gateway}, "
        f"DHCP {state.dhcp_range[0]}-{state.dhcp_range[1]}",
        f"  BMC {state.bmc_url} (credentials {state.credentials}: {state.secrets_file})",
        f"  build service {state.service_url}"
        + ("" if state.service_running else " (not started: pass --images)"),
    ]
    for host in state.hosts:
        lines.append(
            f"  {host.name}: system {host.system_id} mac {host.mac} disk {host.disk_serial}"
        )
    if state.inventory_repo:
        lines += [
            f"  reconciler: follows {state.inventory_repo} (main), data {state.reconciler_data}",
            f"    status:  reconciler status --data-dir {state.reconciler_data}",
            f"    change:  git clone {state.inventory_repo} inventory && cd inventory",
            "             (edit servers/*.yaml) && git commit -am '...' && git push",
        ]
    lines.append(f"  enter it: ip netns exec {state.namespace} bash")
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    paths = lab_paths(args)
    st = lifecycle.status(paths)
    if st.state is None:
        print(f"no lab at {paths.root}")
        return 3
    print(describe(st.state))
    print(f"  namespace present: {'yes' if st.namespace else 'NO'}")
    for name, pid in st.daemons.items():
        if name == "service" and not st.state.service_running:
            continue
        print(f"  {name}: {'pid ' + str(pid) if pid else 'NOT RUNNING'}")
    for name, dom_state in st.domains.items():
        print(f"  {name}: {dom_state}")
    for mac, address in sorted(st.leases.items()):
        print(f"  lease {mac} -> {address}")
    return 0 if st.healthy else 1


def cmd_boot(args: argparse.Namespace) -> int:
    """A thin call of the engine: run its provision (or inspect) workflow on one lab host, from
    inside the lab's network namespace, with a state directory of its own (``<lab>/boot``)."""
    import json

    from reconciler.lab import gitops, netns
    from reconciler.lab.state import load
    from reconciler.model.inventory import read_directory
    from reconciler.paths import example_inventory

    paths = lab_paths(args)
    state = load(paths.state_file)
    if state is None:
        raise InputError(f"no lab at {paths.root}", hint="run `reconciler lab up --images DIR`")
    if not state.service_running:
        raise InputError("the lab runs no build service", hint="`reconciler lab up --images DIR`")
    if state.reconciler_data and not args.inspect:
        raise InputError(
            f"the lab's hosts are provisioned by `reconciler run` from {state.inventory_repo}",
            hint="change a server by pushing to that repository; for hand-driven boots "
            "bring the lab up with --service-only")
    hosts = {h.index: h for h in state.hosts}
    if args.host not in hosts:
        raise InputError(f"--host: the lab has hosts 1..{len(hosts)}")
    lab_host = hosts[args.host]
    workflow = "inspect" if args.inspect else "provision"
    if args.inventory is not None:
        source, files = str(args.inventory), read_directory(args.inventory)
    elif state.inventory_repo:
        source, files = state.inventory_repo, gitops.inventory_files(paths)
    else:
        source, files = str(example_inventory()), read_directory(example_inventory())
    host, templates = _lab_server(source, files, lab_host.mac, lab_host.system_id)
    data = paths.root / "boot"
    result = netns.call_in_netns(state.namespace, lambda: asyncio.run(
        _engine_boot(state, data, host, templates, workflow, args.timeout)))
    print(f"{lab_host.name} ({host.name}): {workflow} {result['outcome']}")
    for line in result["steps"]:
        print(f"  {line}")
    if result["report"] is not None:
        print(json.dumps(result["report"], indent=2, sort_keys=True))
    print(f"  serial console log: {paths.serial_log(lab_host)}")
    return 0 if result["ok"] else 1


def _lab_server(source: str, files: dict[str, bytes], mac: str,
                system_id: str) -> tuple[Any, dict[str, str]]:
    """The inventory's server for a lab host (by BMC system id, else by MAC)."""
    from reconciler.model.desired import desired_hosts
    from reconciler.model.inventory import parse_inventory

    inventory, problems = parse_inventory(files)
    if problems:
        raise InputError(f"{source}: {problems[0]}", hint=f"{len(problems)} problem(s)")
    found = desired_hosts(inventory)
    for h in found.values():
        if h.bmc.system_id == system_id or any(i.mac == mac for i in h.interfaces):
            return h, dict(inventory.templates)
    raise InputError(f"{source}: no server has BMC system {system_id} or MAC {mac}")


async def _engine_boot(state: LabState, data: Path, host: Any, templates: dict[str, str],
                       workflow: str, timeout: float) -> dict[str, Any]:
    from dataclasses import replace

    from reconciler.commands.run import last_operation
    from reconciler.engine.compose import open_engine
    from reconciler.engine.config import RunSettings
    from reconciler.render.renderer import Renderer

    settings = replace(RunSettings(), repo="lab", data_dir=data,
                       secrets_dir=Path(state.secrets_file).parent,
                       build_service_url=state.service_url, graceful_timeout=30.0,
                       max_attempts=1)
    async with open_engine(settings) as engine:
        engine.renderer = Renderer(templates, engine.render_settings)
        st = await asyncio.wait_for(engine.executor.run_workflow(host, workflow), timeout)
        history = engine.db.history(host.name, limit=40)
    ready = st.condition("Ready")
    reached = "inspected" if workflow == "inspect" else "provisioned"
    ok = st.applied_state == reached and ready is not None and ready.status == "True"
    steps = [f"{h['step']}: {h['result']} {h['seconds'] or ''} {h['message'] or ''}".rstrip()
             for h in last_operation(history)]
    return {"ok": ok, "outcome": "done" if ok else f"failed: {st.last_error}",
            "steps": steps, "report": st.inspection}


def cmd_down(args: argparse.Namespace) -> int:
    paths = lab_paths(args)
    removed = lifecycle.down(paths)
    print("removed: " + (", ".join(removed) if removed else "nothing (no lab was up)"))
    return 0
