"""The accelerator probe: KVM only after a bounded probe boot succeeded, cached per binary."""

from __future__ import annotations

import json
import time
from pathlib import Path

import XenAPI

from openxapi.xenops.qemu import accel
from tests.guestimage import guest_image_dir
from tests.serverproc import ROOT_PASSWORD, ServerProcess


async def test_a_binary_that_cannot_boot_means_tcg(tmp_path: Path) -> None:
    cache = tmp_path / "accel.json"
    image = guest_image_dir()
    verdict = await accel.probe(
        cache, "/bin/false", str(image / "vmlinuz"), str(image / "initrd.gz"), timeout=5
    )
    assert verdict == "tcg"
    data = json.loads(cache.read_text())
    assert data["accel"] == "tcg" and data["reason"]
    assert accel.cached(cache, "/bin/false") == "tcg"
    assert accel.cached(cache, "qemu-system-x86_64") is None  # another binary: ask again


async def test_probe_is_bounded_and_cached(tmp_path: Path) -> None:
    cache = tmp_path / "accel.json"
    image = guest_image_dir()
    t0 = time.monotonic()
    verdict = await accel.probe(
        cache, "qemu-system-x86_64", str(image / "vmlinuz"), str(image / "initrd.gz")
    )
    assert time.monotonic() - t0 < accel.PROBE_TIMEOUT + 5
    assert verdict in ("kvm", "tcg")
    assert json.loads(cache.read_text())["accel"] == verdict
    t1 = time.monotonic()
    assert await accel.probe(cache, "qemu-system-x86_64", "", "") == verdict
    assert time.monotonic() - t1 < 1  # answered from the cache


def test_server_answers_logins_while_probing(tmp_path: Path) -> None:
    srv = ServerProcess(
        tmp_path,
        extra_args=[
            "--backend",
            "qemu",
            "--accel",
            "auto",
            "--guest-image-dir",
            str(guest_image_dir()),
        ],
    )
    took = srv.start()
    try:
        assert took < 5
        session = XenAPI.Session(srv.http_url)
        session.xenapi.login_with_password("root", ROOT_PASSWORD, "1.0", "accel")
        session.xenapi.session.logout()
        session("close")()
        cache = tmp_path / "qemu" / "accel.json"
        deadline = time.monotonic() + accel.PROBE_TIMEOUT + 10
        while not cache.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert json.loads(cache.read_text())["accel"] in ("kvm", "tcg")
    finally:
        srv.stop()
