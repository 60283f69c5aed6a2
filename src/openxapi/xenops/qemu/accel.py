"""Which accelerator to use: KVM only once a probe boot proved it works, else TCG.

Opening /dev/kvm is not proof: nested or paravirtual KVM may accept KVM_CREATE_VM and then
fail mid-boot. The probe boots the real guest kernel under KVM with a bound on time and
accepts KVM only if the kernel reaches userspace; its answer is cached per QEMU binary.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path

log = logging.getLogger("openxapi.qemu")

PROBE_TIMEOUT = 15.0
MARKER = b"TINYVM-READY"


def _binary_id(binary: str) -> str:
    import shutil

    path = shutil.which(binary) or binary
    try:
        st = os.stat(path)
    except OSError:
        return path
    return f"{path}:{st.st_size}:{int(st.st_mtime)}"


def cached(cache: Path, binary: str) -> str | None:
    """The cached verdict ("kvm" or "tcg") for this QEMU binary, if any."""
    try:
        data = json.loads(cache.read_text())
    except (OSError, ValueError):
        return None
    if data.get("binary") == _binary_id(binary) and data.get("accel") in ("kvm", "tcg"):
        return str(data["accel"])
    return None


async def probe(
    cache: Path, binary: str, kernel: str, initrd: str, timeout: float = PROBE_TIMEOUT
) -> str:
    """Boot the guest under KVM for at most ``timeout`` seconds; cache and return the verdict."""
    hit = cached(cache, binary)
    if hit is not None:
        return hit
    verdict = "tcg"
    reason = ""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        reason = "/dev/kvm is not usable"
    elif not (kernel and Path(kernel).exists()):
        reason = "no probe kernel"
    else:
        ok, reason = await _boot(binary, kernel, initrd, timeout)
        if ok:
            verdict = "kvm"
    log.info("accelerator: %s (%s)", verdict, reason or "probe boot reached userspace")
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(
        json.dumps(
            {"binary": _binary_id(binary), "accel": verdict, "reason": reason, "at": time.time()}
        )
    )
    os.replace(tmp, cache)
    return verdict


async def _boot(binary: str, kernel: str, initrd: str, timeout: float) -> tuple[bool, str]:
    with tempfile.TemporaryDirectory(prefix="openxapi-kvm-probe-") as d:
        serial = Path(d) / "serial"
        argv = [
            binary,
            "-accel",
            "kvm",
            "-cpu",
            "host",
            "-m",
            "128",
            "-smp",
            "1",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
            "-kernel",
            kernel,
            "-append",
            "console=ttyS0 quiet panic=-1 agent=none",
            "-chardev",
            f"file,id=s0,path={serial}",
            "-serial",
            "chardev:s0",
        ]
        if initrd:
            argv[argv.index("-append") : argv.index("-append")] = ["-initrd", initrd]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if serial.exists() and MARKER in serial.read_bytes():
                    return True, ""
                if proc.returncode is not None:
                    err = (await proc.stderr.read()).decode(errors="replace") if proc.stderr else ""
                    return False, f"probe exited: {err.strip()[:200]}"
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 0.2)
            return False, f"probe did not boot within {timeout:.0f} s"
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
