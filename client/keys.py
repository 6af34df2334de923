"""The CURVE keys a remote client connects with: its own keypair and the daemon's public key.

``gpuprof keygen`` writes ``client.key`` (public: give it to the node's admin, who registers it with
``gpuprofd keys add USER client.key``) and ``client.key_secret`` (stays here, mode 0600) in
``$XDG_CONFIG_HOME/gpuprof`` (``~/.config/gpuprof``). The daemon's public key, which the admin hands out,
goes in ``servers/HOST.key`` there, or wherever ``$GPUPROF_SERVER_KEY`` points. Only tcp:// endpoints use
keys; ipc clients are known by their OS user.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth

from gpuprof.client.wire.errors import UsageError

CLIENT_KEY_ENV = "GPUPROF_CLIENT_KEY"  # a secret certificate (default: CONFIG/client.key_secret)
SERVER_KEY_ENV = "GPUPROF_SERVER_KEY"  # the daemon's public certificate (default: CONFIG/servers/HOST.key)


def config_dir() -> Path:
    """``$XDG_CONFIG_HOME/gpuprof``, else ``~/.config/gpuprof``."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "gpuprof"


def tcp_host(endpoint: str) -> str:
    """The host of ``tcp://HOST:PORT``."""
    return endpoint.removeprefix("tcp://").rpartition(":")[0].strip("[]")


@dataclass(frozen=True)
class CurveKeys:
    """What a CURVE client socket needs: the server's public key and this client's keypair (Z85)."""

    server_public: bytes
    public: bytes
    secret: bytes

    def apply(self, socket: zmq.Socket[bytes]) -> None:
        socket.setsockopt(zmq.CURVE_SERVERKEY, self.server_public)
        socket.setsockopt(zmq.CURVE_PUBLICKEY, self.public)
        socket.setsockopt(zmq.CURVE_SECRETKEY, self.secret)


def keygen(directory: Path | None = None, force: bool = False) -> tuple[Path, Path]:
    """Make this user's keypair: (public file, secret file). An existing one is kept unless ``force``."""
    directory = directory or config_dir()
    public, secret = directory / "client.key", directory / "client.key_secret"
    if secret.exists() and not force:
        raise UsageError(f"{secret} exists; --force replaces it (the admin must then register the new key)")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    old_umask = os.umask(0o077)
    try:
        made_public, made_secret = zmq.auth.create_certificates(directory, "client-new")
    finally:
        os.umask(old_umask)
    os.chmod(made_public, 0o644)
    os.replace(made_secret, secret)
    os.replace(made_public, public)
    return public, secret


def _load(path: Path, what: str, hint: str, want_secret: bool) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(path)
    except OSError:
        raise UsageError(f"no {what} at {path}: {hint}") from None
    except ValueError:
        raise UsageError(f"{path} is not a CURVE certificate ({what}): {hint}") from None
    if want_secret and not secret:
        raise UsageError(f"{path} holds no secret key ({what}): {hint}")
    return public, secret


def curve_keys(endpoint: str, server_key: str | None = None, client_key: str | None = None) -> CurveKeys:
    """The keys for connecting to ``endpoint`` over tcp, from the arguments, the environment or CONFIG."""
    host = tcp_host(endpoint)
    default_server = config_dir() / "servers" / f"{host}.key"
    server_path = Path(server_key or os.environ.get(SERVER_KEY_ENV) or default_server)
    client_path = Path(client_key or os.environ.get(CLIENT_KEY_ENV) or config_dir() / "client.key_secret")
    server_public, _ = _load(
        server_path,
        "gpuprofd's public key",
        f"get the node's public key (gpuprofd keys server prints where it is) from its admin, "
        f"and put it there or point ${SERVER_KEY_ENV} at it",
        want_secret=False,
    )
    public, secret = _load(
        client_path,
        "your secret key",
        "run `gpuprof keygen`, then ask the node's admin to register your client.key "
        "(gpuprofd keys add YOUR_USER client.key)",
        want_secret=True,
    )
    assert secret is not None
    return CurveKeys(server_public, public, secret)
