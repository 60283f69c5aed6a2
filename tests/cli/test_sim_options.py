"""``openxapi serve`` options of the simulator backend and of VM shutdown."""

from __future__ import annotations

from openxapi.cli.main import build_parser, config_from
from openxapi.config import Config


def _serve(*args: str) -> Config:
    return config_from(build_parser().parse_args(["serve", *args]))


def test_defaults_hold_a_thousand_default_vms_and_wait_like_the_reference() -> None:
    cfg = _serve()
    assert cfg.sim_host_memory >= 1000 * (2 << 30) and cfg.sim_host_cpus >= 1
    assert cfg.vm_shutdown_timeout == 1200.0
    assert cfg.sim_boot_time == 0.0 and cfg.sim_shutdown_time == 0.0


def test_simulator_options() -> None:
    cfg = _serve(
        "--backend", "simulator",
        "--sim-host-memory", "64G",
        "--sim-host-cpus", "8",
        "--sim-boot-time", "1.5",
        "--sim-shutdown-time", "0.5",
        "--vm-shutdown-timeout", "3",
    )  # fmt: skip
    assert cfg.backend == "simulator"
    assert cfg.sim_host_memory == 64 << 30 and cfg.sim_host_cpus == 8
    assert (cfg.sim_boot_time, cfg.sim_shutdown_time, cfg.vm_shutdown_timeout) == (1.5, 0.5, 3.0)
    assert _serve("--sim-host-memory", "1048576").sim_host_memory == 1 << 20
    assert _serve("--sim-host-memory", "2TiB").sim_host_memory == 2 << 40
