"""The virtual lab: UEFI VMs behind a Redfish BMC in a network namespace of its own."""
