"""Bare-metal provisioning from git: Redfish, UKIs and ISOs, no PXE."""

__version__ = "0.1.0"
