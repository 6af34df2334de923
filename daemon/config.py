"""gpuprofd's configuration: a TOML file, overridden by command-line flags, validated before use."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpuprof.client.wire.errors import ConfigError

DEFAULT_CONFIG = "/etc/gpuprof/gpuprofd.toml"
DEFAULT_ENDPOINT = "ipc:///run/gpuprof/gpuprofd.sock"
DEFAULT_STATE_DIR = "/var/lib/gpuprof"
DEFAULT_KEYS_DIR = "/etc/gpuprof/keys"
DEFAULT_SERVER_KEY = "/var/lib/gpuprof/server.key_secret"
TUPLE_ITEMS: dict[str, type] = {"gpus": int, "admin_groups": str, "dvfs_users": str, "dvfs_groups": str}


@dataclass(frozen=True)
class DaemonConfig:
    """Everything gpuprofd needs to start; every field has a TOML key of the same name."""

    endpoint: str = DEFAULT_ENDPOINT
    pub_endpoint: str = ""  # default: derived from endpoint (NAME-pub.sock)
    tcp_endpoint: str = ""  # e.g. tcp://*:5555 for remote clients, who must use CURVE; "": off
    tcp_pub_endpoint: str = ""  # default: tcp_endpoint's port + 1
    keys_dir: str = DEFAULT_KEYS_DIR  # users' CURVE public keys, USER.key (gpuprofd keys add USER FILE)
    server_key: str = DEFAULT_SERVER_KEY  # the daemon's CURVE secret certificate; made on first use
    state_dir: str = DEFAULT_STATE_DIR
    simulate: bool = False
    gpus: tuple[int, ...] = ()  # empty: every GPU NVML reports
    rate_hz: float = 1000.0
    energy_rate_hz: float = 50.0  # between counter updates; back to back around each (sampler/backend.py)
    history_s: float = 600.0
    max_message_bytes: int = 1 << 20
    pub_hwm: int = 1000
    publish_interval_ms: float = 2.0
    users_group: str = "gpuprof"  # members may submit jobs and watch the GPUs
    admin_groups: tuple[str, ...] = ()  # members see and cancel every job (root and the daemon's user always)
    allow_dvfs: bool = False  # clock changes (a job's dvfs: section); also needs the unit's DVFS drop-in
    dvfs_users: tuple[str, ...] = ()  # who may change clocks when allow_dvfs (root and the daemon's user may)
    dvfs_groups: tuple[str, ...] = ()  # members may change clocks when allow_dvfs
    allow_trust_remote_code: bool = False  # llm jobs may run a model repository's own Python code
    allow_remote_commands: bool = False  # command jobs from remote (CURVE) clients; local ones always may
    socket_group: str = "gpuprof"  # the ipc socket files' group (mode 0660); "" leaves them the daemon's
    sampler_realtime_priority: int = 10  # SCHED_FIFO for the sampler's fast loop; 0: normal scheduling
    default_timeout_s: float = 3600.0
    max_timeout_s: float = 86400.0
    worker_memory_limit_mb: int = 0  # resident memory of a job's processes; 0: 80% of the node's memory
    worker_output_limit_mb: int = 1024  # what a job may write: each file, and its directory in all
    max_queued_jobs_per_user: int = 100  # a submit beyond it is refused (quota_exceeded)
    request_rate_per_user: float = 200.0  # requests a second, a second's worth at once (rate_limited)
    request_time_share_per_user: float = 0.5  # of gpuprofd's time one user's requests may take
    slurm_jobs_dir: str = "/run/gpuprof/slurm"  # the Slurm prolog's records (docs/slurm.md); "": none
    slurm_enforce_gpus: bool = False  # users' jobs only on their Slurm job's GPUs (admins exempt)

    def __post_init__(self) -> None:
        checks = [
            (
                self.endpoint.startswith("ipc://"),
                "endpoint must start with ipc:// (remote clients use tcp_endpoint, with CURVE)",
            ),
            (
                not self.tcp_endpoint or tcp_port(self.tcp_endpoint) is not None,
                "tcp_endpoint must be tcp://HOST:PORT with a port number",
            ),
            (
                not self.tcp_pub_endpoint or tcp_port(self.tcp_pub_endpoint) is not None,
                "tcp_pub_endpoint must be tcp://HOST:PORT with a port number",
            ),
            (0 < self.rate_hz <= 100_000, "rate_hz must be in (0, 100000]"),
            (0 <= self.energy_rate_hz <= 1000, "energy_rate_hz must be in [0, 1000]"),
            (
                10 <= self.history_s <= 3600,
                "history_s must be in [10, 3600] (memory: 48 bytes per GPU-sample)",
            ),
            (1024 <= self.max_message_bytes <= 1 << 30, "max_message_bytes must be in [1024, 2**30]"),
            (1 <= self.pub_hwm <= 1_000_000, "pub_hwm must be in [1, 1000000]"),
            (0.5 <= self.publish_interval_ms <= 1000, "publish_interval_ms must be in [0.5, 1000]"),
            (0 <= self.sampler_realtime_priority <= 99, "sampler_realtime_priority must be in [0, 99]"),
            (
                0 < self.default_timeout_s <= self.max_timeout_s,
                "default_timeout_s must be in (0, max_timeout_s]",
            ),
            (all(g >= 0 for g in self.gpus), "gpus must be indices >= 0"),
            (
                self.worker_memory_limit_mb == 0 or self.worker_memory_limit_mb >= 16,
                "worker_memory_limit_mb must be 0 (80% of the node's memory) or at least 16",
            ),
            (1 <= self.worker_output_limit_mb <= 1 << 30, "worker_output_limit_mb must be in [1, 2**30]"),
            (bool(self.users_group), "users_group must name a group"),
            (
                not self.slurm_jobs_dir or self.slurm_jobs_dir.startswith("/"),
                'slurm_jobs_dir must be an absolute path, or "" for none',
            ),
            (
                not self.slurm_enforce_gpus or bool(self.slurm_jobs_dir),
                "slurm_enforce_gpus needs slurm_jobs_dir (where the prolog records each job's GPUs)",
            ),
            (
                1 <= self.max_queued_jobs_per_user <= 1_000_000,
                "max_queued_jobs_per_user must be in [1, 1000000]",
            ),
            (1 <= self.request_rate_per_user <= 1_000_000, "request_rate_per_user must be in [1, 1000000]"),
            (
                0.01 <= self.request_time_share_per_user <= 1,
                "request_time_share_per_user must be in [0.01, 1]",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @property
    def publish_endpoint(self) -> str:
        """Where live samples are published."""
        if self.pub_endpoint:
            return self.pub_endpoint
        path = self.endpoint.removeprefix("ipc://")
        stem = path[:-5] if path.endswith(".sock") else path
        return f"ipc://{stem}-pub.sock"

    @property
    def tcp_publish_endpoint(self) -> str:
        """Where remote clients get live samples ("" when tcp is off)."""
        if not self.tcp_endpoint or self.tcp_pub_endpoint:
            return self.tcp_pub_endpoint
        host, _, port = self.tcp_endpoint.rpartition(":")
        return f"{host}:{int(port) + 1}"


def tcp_port(endpoint: str) -> int | None:
    host, _, port = endpoint.removeprefix("tcp://").rpartition(":")
    if not endpoint.startswith("tcp://") or not host or not port.isdigit() or not 0 < int(port) < 65535:
        return None
    return int(port)


def load_config(path: str | None, overrides: dict[str, Any]) -> DaemonConfig:
    """The configuration from ``path`` (skipped when None and the default file is absent) plus overrides."""
    values: dict[str, Any] = {}
    file = Path(path or DEFAULT_CONFIG)
    source = "command line"
    if path is not None or file.exists():
        source = str(file)
        try:
            values = tomllib.loads(file.read_text())
        except OSError as exc:
            raise ConfigError(f"{file}: cannot read: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: {exc}") from exc
    known = {f.name: f for f in dataclasses.fields(DaemonConfig)}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{file}: unknown key {key!r}; known keys: {', '.join(sorted(known))}")
        expected = type(getattr(DaemonConfig(), key))
        if expected is tuple and isinstance(value, list):
            item = TUPLE_ITEMS[key]
            if not all(isinstance(v, item) and not isinstance(v, bool) for v in value):
                raise ConfigError(f"{file}: {key} must be a list of {item.__name__}")
            values[key] = tuple(value)
        elif expected is float and isinstance(value, int) and not isinstance(value, bool):
            values[key] = float(value)
        elif not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
            raise ConfigError(f"{file}: {key} must be {expected.__name__}, got {type(value).__name__}")
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return DaemonConfig(**values)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
