"""Building the base artifacts: the ephemeral OS (kernel + initramfs) and the lab target image.

``ephemeral`` builds ``vmlinuz-<arch>``, ``initramfs-<arch>.img`` and ``manifest.json`` from
Debian bookworm packages; ``target`` builds a small UEFI-bootable Debian qcow2 with
cloud-init NoCloud. Inputs live in ``images/`` (package lists, root filesystem files).
"""
