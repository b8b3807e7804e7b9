"""Redfish BMC adapter over sushy: the only way this project talks to a BMC.

``Bmc`` (driver.py) runs the operations; ``client.py`` owns timeouts, retries, TLS and Basic
auth; ``quirks.py`` holds vendor behaviour as data; ``errors.py`` classifies failures;
``inventory.py`` parses hardware facts; ``FakeBmc`` (fake.py) implements the same interface
in memory for unit tests. See docs/redfish.md.
"""

from __future__ import annotations

from reconciler.adapters.redfish import quirks
from reconciler.adapters.redfish.client import BmcEndpoint, ClientSettings
from reconciler.adapters.redfish.driver import (
    Bmc,
    BmcDriver,
    BootEnabled,
    BootTarget,
    OffResult,
    PowerState,
    Status,
)
from reconciler.adapters.redfish.inventory import Inventory
from reconciler.adapters.redfish.quirks import PROFILES, Quirks

__all__ = [
    "PROFILES",
    "Bmc",
    "BmcDriver",
    "BmcEndpoint",
    "BootEnabled",
    "BootTarget",
    "ClientSettings",
    "Inventory",
    "OffResult",
    "PowerState",
    "Quirks",
    "Status",
    "quirks",
]
