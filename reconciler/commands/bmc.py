"""``reconciler bmc``: operate one BMC by hand, through the same driver the reconciler uses.

    reconciler bmc --bmc https://HOST [--system ID] --credentials REF \\
        {status | power on|off|cycle | media insert URL | media eject |
         boot cd|http URL|hdd | inventory [--oob] [--format json|yaml]}

Errors print as one line (the BMC, the operation, and Redfish's own message).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from reconciler.adapters import secrets
from reconciler.adapters.redfish import (
    Bmc,
    BmcEndpoint,
    BootEnabled,
    BootTarget,
    ClientSettings,
    PowerState,
    quirks,
)
from reconciler.errors import InputError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bmc",
        help="operate one BMC over Redfish (power, virtual media, boot override, inventory)",
        description="Operate one BMC over Redfish with the reconciler's own driver.",
    )
    parser.add_argument("--bmc", required=True, metavar="URL", help="https://HOST[:PORT]")
    parser.add_argument("--system", metavar="ID", help="System id (default: the only one)")
    parser.add_argument("--credentials", required=True, metavar="REF",
                        help="credentials reference (RECONCILER_CRED_<REF> or secrets file)")
    tls = parser.add_mutually_exclusive_group()
    tls.add_argument("--ca-bundle", type=Path, metavar="FILE",
                     help="verify the BMC's certificate against this CA bundle")
    tls.add_argument("--insecure", action="store_true",
                     help="do not verify the BMC's certificate (lab BMCs only)")
    parser.add_argument("--timeout", type=float, default=120.0, metavar="S",
                        help="deadline for power transitions (default 120)")
    parser.add_argument("--connect-timeout", type=float, default=3.0, metavar="S")
    parser.add_argument("--read-timeout", type=float, default=20.0, metavar="S")
    parser.add_argument("--profile", metavar="NAME",
                        help="force a quirk profile: "
                        + ", ".join(p.name for p in quirks.PROFILES))
    parser.add_argument("--persistent", action="store_true",
                        help="boot: keep the override (Continuous) instead of Once")
    parser.add_argument("--wait", action="store_true",
                        help="power on/cycle: wait until the host reports On")
    actions = parser.add_subparsers(dest="bmc_action", metavar="ACTION", required=True)
    actions.add_parser("status", help="power, boot override, mounted media, profile")
    power = actions.add_parser("power", help="power on|off|cycle")
    power.add_argument("state", choices=("on", "off", "cycle"))
    media = actions.add_parser("media", help="media insert URL | media eject")
    media_actions = media.add_subparsers(dest="media_action", metavar="insert|eject",
                                         required=True)
    media_actions.add_parser("insert", help="eject all, insert URL as CD").add_argument("url")
    media_actions.add_parser("eject", help="eject all virtual media")
    boot = actions.add_parser("boot", help="boot cd | boot http URL | boot hdd")
    boot_actions = boot.add_subparsers(dest="boot_target", metavar="cd|http|hdd", required=True)
    boot_actions.add_parser("cd", help="boot the virtual CD")
    boot_actions.add_parser("http", help="UEFI HTTP boot from URL").add_argument("url")
    boot_actions.add_parser("hdd", help="boot the disk (clears HttpBootUri, Continuous)")
    inventory = actions.add_parser(
        "inventory", help="hardware inventory (--oob: the record inspection reports hold)")
    inventory.add_argument(
        "--oob", action="store_true",
        help="the out-of-band inventory record (system, manager, NIC MACs, drives, firmware; "
        "no volatile values), as committed to inspection/<server>.yaml")
    inventory.add_argument("--format", choices=("json", "yaml"), default="json",
                           help="output format (default json)")
    parser.set_defaults(func=handler)


def _bmc(args: argparse.Namespace) -> Bmc:
    creds = secrets.resolve(args.credentials)
    verify: bool | Path = True
    if args.insecure:
        verify = False
    elif args.ca_bundle is not None:
        verify = args.ca_bundle
    endpoint = BmcEndpoint(args.bmc, creds.username, creds.password, verify=verify,
                           system_id=args.system)
    override = None
    if args.profile:
        override = quirks.by_name(args.profile)
        if override is None:
            raise InputError(f"--profile {args.profile!r}: no such quirk profile",
                             hint="one of " + ", ".join(p.name for p in quirks.PROFILES))
    if args.timeout <= 0:
        raise InputError("--timeout must be positive")
    settings = ClientSettings(connect_timeout=args.connect_timeout,
                              read_timeout=args.read_timeout)
    return Bmc(endpoint, settings, quirks_override=override)


def handler(args: argparse.Namespace) -> int:
    with _bmc(args) as bmc:
        action = args.bmc_action
        if action == "status":
            status = bmc.status()
            print(f"system:   {status.system_id}")
            print(f"power:    {status.power_state}")
            print(f"boot:     {status.boot_target} ({status.boot_enabled}, {status.boot_mode})"
                  + (f" {status.http_boot_uri}" if status.http_boot_uri else ""))
            for path, image in status.media:
                print(f"media:    {path} {image or '(empty)'}")
            print(f"profile:  {status.profile}")
        elif action == "power":
            if args.state == "on":
                bmc.power_on()
                print("power on requested")
                if args.wait:
                    bmc.wait_power(PowerState.ON, args.timeout)
                    print("power: On")
            elif args.state == "off":
                result = bmc.graceful_off(args.timeout)
                print(f"power: Off ({result})")
            else:
                used = bmc.power_cycle()
                print(f"power cycle: {used}")
                if args.wait:
                    bmc.wait_power(PowerState.ON, args.timeout)
                    print("power: On")
        elif action == "media":
            if args.media_action == "insert":
                slot = bmc.insert_cd(args.url)
                print(f"inserted {args.url} into {slot}")
            else:
                bmc.eject_all_media()
                print("ejected")
        elif action == "boot":
            enabled = BootEnabled.CONTINUOUS if args.persistent else BootEnabled.ONCE
            if args.boot_target == "cd":
                bmc.set_boot(BootTarget.CD, enabled)
            elif args.boot_target == "http":
                bmc.set_boot(BootTarget.UEFI_HTTP, enabled, args.url)
            else:
                bmc.clear_boot_override()
                enabled = BootEnabled.CONTINUOUS
            print(f"boot override: {args.boot_target} ({enabled})")
        else:
            record: Any = (dict(bmc.oob_inventory()) if args.oob
                           else bmc.inventory().to_record())
            if args.format == "yaml":
                sys.stdout.write(yaml.safe_dump(record, sort_keys=True))
            else:
                json.dump(record, sys.stdout, indent=2, sort_keys=True)
                print()
    return 0
