"""libvirt domain XML for a lab host: UEFI (OVMF pflash), q35, a virtio disk with a serial,
a virtio NIC with a fixed MAC on the lab bridge, the serial console in a file. Pure."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from reconciler.lab.spec import (
    ARCHES,
    BRIDGE,
    MEMORY_MIB,
    OVMF_CODE,
    OVMF_VARS,
    VCPUS,
    LabHost,
)

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"

# Accelerator -> libvirt domain type and CPU element. TCG is the default on these machines:
# /dev/kvm is a software nested hypervisor QEMU cannot run OVMF under (LAB.md).
ACCELS: dict[str, tuple[str, dict[str, str]]] = {
    "tcg": ("qemu", {"mode": "custom", "match": "exact"}),
    "kvm": ("kvm", {"mode": "host-passthrough"}),
}


@dataclass(frozen=True, slots=True)
class DomainFiles:
    disk: Path
    nvram: Path
    serial_log: Path


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrs)
    if text is not None:
        element.text = text
    return element


def domain_xml(
    host: LabHost, files: DomainFiles, *, arch: str = "amd64", accel: str = "tcg"
) -> str:
    """The domain definition of ``host``; raises KeyError for an unknown arch or accel."""
    lv_arch, machine, emulator = ARCHES[arch]
    domain_type, cpu_attrs = ACCELS[accel]
    ET.register_namespace("qemu", QEMU_NS)
    dom = ET.Element("domain", {"type": domain_type})
    _sub(dom, "name", host.name)
    _sub(dom, "uuid", host.system_id)
    _sub(dom, "memory", str(MEMORY_MIB), unit="MiB")
    _sub(dom, "vcpu", str(VCPUS))
    os_el = _sub(dom, "os")
    _sub(os_el, "type", "hvm", arch=lv_arch, machine=machine)
    _sub(os_el, "loader", str(OVMF_CODE), readonly="yes", type="pflash", secure="no")
    _sub(os_el, "nvram", str(files.nvram), template=str(OVMF_VARS))
    _sub(os_el, "boot", dev="hd")
    features = _sub(dom, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    cpu = _sub(dom, "cpu", **cpu_attrs)
    if accel == "tcg":
        _sub(cpu, "model", "qemu64", fallback="allow")
    _sub(dom, "clock", offset="utc")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")
    devices = _sub(dom, "devices")
    _sub(devices, "emulator", emulator)
    disk = _sub(devices, "disk", type="file", device="disk")
    _sub(disk, "driver", name="qemu", type="qcow2")
    _sub(disk, "source", file=str(files.disk))
    _sub(disk, "target", dev="vda", bus="virtio")
    _sub(disk, "serial", host.disk_serial)
    # The emulator attaches virtual media as a SATA CD on q35 (no IDE there); an empty drive
    # from the start lets "boot Cd" be set before media is inserted, as on a real BMC.
    _sub(devices, "controller", type="sata", index="0")
    cd = _sub(devices, "disk", type="file", device="cdrom")
    _sub(cd, "driver", name="qemu", type="raw")
    _sub(cd, "target", dev="sda", bus="sata")
    _sub(cd, "readonly")
    nic = _sub(devices, "interface", type="bridge")
    _sub(nic, "mac", address=host.mac)
    _sub(nic, "source", bridge=BRIDGE)
    _sub(nic, "model", type="virtio")
    # No iPXE option ROM: the lab boots by virtual media, never PXE.
    _sub(nic, "rom", enabled="no")
    serial = _sub(devices, "serial", type="file")
    _sub(serial, "source", path=str(files.serial_log), append="on")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="file")
    _sub(console, "source", path=str(files.serial_log), append="on")
    _sub(console, "target", type="serial", port="0")
    _sub(devices, "rng", model="virtio").append(_backend_random())
    # OVMF otherwise spends about a minute on IPv6 PXE before the next boot option.
    cmdline = ET.SubElement(dom, f"{{{QEMU_NS}}}commandline")
    for value in (
        "-fw_cfg",
        "name=opt/org.tianocore/IPv6PXESupport,string=n",
        "-fw_cfg",
        "name=opt/org.tianocore/IPv4PXESupport,string=n",
    ):
        ET.SubElement(cmdline, f"{{{QEMU_NS}}}arg", {"value": value})
    ET.indent(dom)
    return ET.tostring(dom, encoding="unicode") + "\n"


def _backend_random() -> ET.Element:
    # virtio-rng: cloud-init's host key generation otherwise waits on entropy under TCG.
    backend = ET.Element("backend", {"model": "random"})
    backend.text = "/dev/urandom"
    return backend
