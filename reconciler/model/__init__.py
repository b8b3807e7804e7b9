"""The inventory model: pure, frozen, validated. The public API is small on purpose.

- :func:`load_inventory` (a directory) / :func:`parse_inventory` (files as bytes)
  ``-> (Inventory, list[Problem])``: every problem at once; servers with problems are listed in
  ``Inventory.rejected`` and must be left alone, the others are usable.
- :func:`desired_hosts` ``(inventory) -> dict[name, DesiredHost]`` with addresses assigned by
  IPAM and digests that say what a change needs (rebuild, reprovision).
- :class:`Problem` prints as ``file:line: path: message``.
"""

from __future__ import annotations

from reconciler.model.desired import DesiredHost, Digests, NetworkInterface, desired_hosts
from reconciler.model.inventory import (
    Bmc,
    CloudInit,
    Disk,
    Image,
    Inventory,
    Server,
    Subnet,
    load_inventory,
    parse_inventory,
    read_directory,
)
from reconciler.model.problems import Problem

__all__ = [
    "Bmc",
    "CloudInit",
    "DesiredHost",
    "Digests",
    "Disk",
    "Image",
    "Inventory",
    "NetworkInterface",
    "Problem",
    "Server",
    "Subnet",
    "desired_hosts",
    "load_inventory",
    "parse_inventory",
    "read_directory",
]
