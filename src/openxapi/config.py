"""Server configuration: embedded defaults (rulings §10) overridden by the command line."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def _is_root() -> bool:
    return os.geteuid() == 0


def default_data_dir() -> Path:
    if _is_root():
        return Path("/var/lib/openxapi")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "openxapi"


def default_guest_image_dir() -> Path:
    """Where the tiny test guest's kernel and initrd are (built by ``scripts/guest-image``)."""
    env = os.environ.get("OPENXAPI_GUEST_IMAGE_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / ".cache" / "guest-image"


@dataclass(slots=True)
class Config:
    """Everything ``openxapi serve`` can be told; each field has a working default."""

    data_dir: Path = field(default_factory=default_data_dir)
    listen: str = ""  # "" = all addresses for HTTPS; plain HTTP always also on loopback
    http_port: int = field(default_factory=lambda: 80 if _is_root() else 8080)
    https_port: int = field(default_factory=lambda: 443 if _is_root() else 8443)
    http_listen: str | None = None  # None: plain HTTP on loopback only (or on --listen if set)
    unix_socket: Path | None = None
    backend: str = "auto"  # auto | simulator | qemu
    iso_dir: Path | None = None  # the ISO library's directory (default <data-dir>/iso)
    plugin_dir: Path | None = None  # host.call_plugin's programs (default <data-dir>/plugins)
    extension_dir: Path | None = None  # API extensions (default <data-dir>/extensions)
    sim_storage: bool = False  # first start: "Local storage" simulated instead of qcow2 files
    sim_host_memory: int = 4096 << 30  # simulator backend: the simulated host's memory (bytes)
    sim_host_cpus: int = 64  # simulator backend: the simulated host's CPUs
    sim_boot_time: float = 0.0  # simulator backend: seconds until a guest's agent reports
    sim_shutdown_time: float = 0.0  # simulator backend: seconds a guest takes to shut down
    qemu_binary: str = "qemu-system-x86_64"  # QEMU backend: the emulator to run
    accel: str = "auto"  # QEMU backend: auto (KVM once a probe boot proved it) | kvm | tcg
    guest_nat: bool = False  # QEMU backend: guests on the NAT network may connect out
    guest_image_dir: Path = field(default_factory=lambda: default_guest_image_dir())
    allow_custom_uefi_certs: bool = False  # pool.set_custom_uefi_certificates is allowed
    vm_shutdown_timeout: float = 1200.0  # clean shutdown/reboot wait (the reference's default)
    cert_file: Path | None = None
    key_file: Path | None = None
    durable: bool = True  # benchmark-only switch: False keeps the store in memory only
    auth_fail_delay: float = 5.0
    session_idle_timeout: float = 86400.0
    max_anonymous_sessions: int = 400
    max_sessions_per_group: int = 500
    session_gc_interval: float = 60.0
    max_connections_per_address: int = 4096
    request_rate: float = 100_000.0
    request_burst: float = 200_000.0

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "state.db"

    @property
    def socket_path(self) -> Path:
        if self.unix_socket is not None:
            return Path(self.unix_socket)
        if _is_root():
            return Path("/var/lib/xcp/xapi")
        return self.data_dir / "xapi.sock"

    @property
    def tls_cert(self) -> Path:
        return self.cert_file or self.data_dir / "tls" / "server.pem"

    @property
    def tls_key(self) -> Path:
        return self.key_file or self.data_dir / "tls" / "server.key"

    @property
    def plugins_path(self) -> Path:
        """Where host plugins live (the reference's /etc/xapi.d/plugins)."""
        return Path(self.plugin_dir) if self.plugin_dir is not None else self.data_dir / "plugins"

    @property
    def extensions_path(self) -> Path:
        """Where API extensions live (the reference's /etc/xapi.d/extensions)."""
        if self.extension_dir is not None:
            return Path(self.extension_dir)
        return self.data_dir / "extensions"

    @property
    def pool_secret_path(self) -> Path:
        return self.data_dir / "ptoken"
