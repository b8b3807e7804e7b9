"""Canonical forms of hardware identifiers, so a MAC or a disk WWN compares equal whichever
tool reported it (a BMC over Redfish, lsblk/udev in the ephemeral OS, a server file).

Pure string functions; both raise ``ValueError`` naming the value for anything that is not an
identifier, and callers decide whether that skips the item or fails the input.
"""

from __future__ import annotations

import re

_HEX = frozenset("0123456789abcdef")

# Six pairs with one separator (the Redfish schema's MACAddress pattern allows ':' or '-'),
# Cisco's dotted triplets, or twelve bare digits.
_MAC_FORMS = (
    re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}"),
    re.compile(r"[0-9a-f]{2}(-[0-9a-f]{2}){5}"),
    re.compile(r"[0-9a-f]{4}(\.[0-9a-f]{4}){2}"),
    re.compile(r"[0-9a-f]{12}"),
)

# Longest first: "wwn-0x" before "0x", "nvme-eui." before "eui.".
_WWN_PREFIXES = ("nvme-eui.", "wwn-0x", "nguid.", "naa.", "eui.", "wwn-", "0x")
_WWN_LENGTHS = (16, 32)


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def normalise_mac(value: str) -> str:
    """``aa:bb:cc:dd:ee:ff`` (lower case, colons) from ``AA-BB-CC-DD-EE-FF``,
    ``aabb.ccdd.eeff``, ``AABBCCDDEEFF`` or the colon form in any case.

    Surrounding whitespace is ignored; anything else (single-digit groups, mixed separators,
    a wrong length) raises ``ValueError``. An all-zero MAC is well-formed and returned as is:
    whether it means "no MAC" is the caller's decision."""
    if not isinstance(value, str):
        raise ValueError(f"{_shown(value)} is not a MAC address (not a string)")
    text = value.strip().lower()
    if not any(form.fullmatch(text) for form in _MAC_FORMS):
        raise ValueError(
            f"{_shown(value)} is not a MAC address (expected six hex pairs like aa:bb:cc:dd:ee:ff)"
        )
    digits = re.sub(r"[^0-9a-f]", "", text)
    return ":".join(digits[i:i + 2] for i in range(0, 12, 2))


def normalise_wwn(value: str) -> str:
    """A disk's world wide name as bare lower-case hex: ``5000c500a1b2c3d4``.

    The rule, applied the same way to Redfish ``Drive.Identifiers[].DurableName`` (formats
    NAA, EUI, NGUID, FC_WWN) and to what Linux reports (lsblk ``WWN``, udev ``ID_WWN``,
    ``/sys/block/*/wwid``, ``/dev/disk/by-id`` names):

    1. strip surrounding whitespace and lower-case;
    2. drop one leading prefix: ``nvme-eui.``, ``wwn-0x``, ``nguid.``, ``naa.``, ``eui.``,
       ``wwn-`` or ``0x``;
    3. drop ``:`` and ``-`` separators (``50:00:c5:00:...``, FC style);
    4. what is left must be 16 hex digits (NAA type 5, EUI-64, FC WWN) or 32 (NAA type 6,
       NVMe NGUID) and not all zeros.

    Anything else raises ``ValueError`` (e.g. Linux's ``nvme.<vid>-<serial>-...`` fallback
    wwid, which is not a WWN)."""
    if not isinstance(value, str):
        raise ValueError(f"{_shown(value)} is not a WWN (not a string)")
    text = value.strip().lower()
    for prefix in _WWN_PREFIXES:
        if text.startswith(prefix):
            text = text[len(prefix):]
            break
    text = text.replace(":", "").replace("-", "")
    if len(text) not in _WWN_LENGTHS or not set(text) <= _HEX:
        raise ValueError(f"{_shown(value)} is not a WWN (expected 16 or 32 hex digits)")
    if set(text) == {"0"}:
        raise ValueError(f"{_shown(value)} is not a WWN (all zeros)")
    return text
