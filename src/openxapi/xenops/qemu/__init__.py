"""The QEMU domain backend: one qemu-system-x86_64 process per running VM, driven over QMP."""

from openxapi.xenops.qemu.backend import QemuBackend, QemuSettings

__all__ = ["QemuBackend", "QemuSettings"]
