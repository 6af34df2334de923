"""CURVE keys for gpuprofd's tcp endpoint: the users' public keys and the daemon's own keypair.

A remote client proves who it is with a CURVE keypair. The admin registers each user's public key with
``gpuprofd keys add USER FILE``, which writes ``KEYS_DIR/USER.key``; the file's name is the user the key
stands for, and that user must have an account on the node (their jobs run as it). Key files use ZeroMQ's
certificate format (``zmq.auth``), the same files ``gpuprof keygen`` writes on the client side.

The daemon's keypair lives in ``server_key`` (the secret certificate, mode 0600) and its public half
next to it with the ``.key`` suffix; clients need the public file to connect. It is made on first use.
"""

from __future__ import annotations

import logging
import os
import pwd
import re
from dataclasses import dataclass
from pathlib import Path

import zmq.auth
from zmq.utils import z85

from gpuprof.client.wire.errors import ConfigError, UsageError

from ..atomic import write_text_atomically

log = logging.getLogger("gpuprofd")
USER_NAME = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")  # what useradd accepts by default (NAME_REGEX)
MAX_KEY_FILE_BYTES = 64 * 1024


def public_file(secret_file: str | os.PathLike[str]) -> Path:
    """The public certificate beside a secret one: ``server.key_secret`` -> ``server.key``."""
    path = Path(secret_file)
    return path.with_name(path.name.removesuffix("_secret")) if path.name.endswith("_secret") else path


def read_public_key(path: str | os.PathLike[str]) -> bytes:
    """The Z85 public key of a certificate file; a file holding a secret key is refused."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_KEY_FILE_BYTES:
            raise UsageError(f"{path}: larger than {MAX_KEY_FILE_BYTES} bytes; not a key file")
        public, secret = zmq.auth.load_certificate(path)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror or 'no such file'}") from None
    except ValueError:
        raise UsageError(f"{path}: not a CURVE certificate (no public-key line)") from None
    if secret:
        raise UsageError(
            f"{path} holds a secret key: register the public file (the one without _secret), "
            "and keep the secret one with its user"
        )
    try:
        if len(z85.decode(public)) != 32:
            raise ValueError
    except ValueError:
        raise UsageError(f"{path}: its public-key is not a 40-character Z85 CURVE key") from None
    return public


def write_public_key(path: Path, public: bytes, user: str) -> None:
    """Write a public certificate atomically, readable by all (it is public)."""
    text = (
        "#   gpuprof CURVE public certificate\n"
        f'metadata\n    user = "{user}"\n'
        f'curve\n    public-key = "{public.decode()}"\n'
    )
    write_text_atomically(path, text, mode=0o644)


def server_keypair(secret_file: str | os.PathLike[str], create: bool) -> tuple[bytes, bytes]:
    """The daemon's (public, secret) CURVE keys from ``secret_file``, made first when ``create``."""
    secret_path = Path(secret_file)
    if not secret_path.exists() and create:
        secret_path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        old_umask = os.umask(0o077)
        try:
            made_public, made_secret = zmq.auth.create_certificates(secret_path.parent, "gpuprofd-new")
        finally:
            os.umask(old_umask)
        os.chmod(made_public, 0o644)
        os.replace(made_public, public_file(secret_path))
        os.replace(made_secret, secret_path)
        log.info("made the CURVE keypair %s (clients need %s)", secret_path, public_file(secret_path))
    try:
        public, secret = zmq.auth.load_certificate(secret_path)
    except OSError as exc:
        raise ConfigError(
            f"server_key {secret_path}: cannot read: {exc.strerror or 'no such file'} "
            "(`gpuprofd keys server` makes one)"
        ) from None
    except ValueError as exc:
        raise ConfigError(f"server_key {secret_path}: not a CURVE certificate ({exc})") from None
    if not secret:
        raise ConfigError(f"server_key {secret_path}: holds no secret key")
    if secret_path.stat().st_mode & 0o077:
        raise ConfigError(f"server_key {secret_path}: readable by others; chmod 600 it")
    return public, secret


@dataclass(frozen=True)
class KeyEntry:
    user: str
    public_key: str  # Z85
    path: Path


class KeyStore:
    """The users' public keys in a directory, one ``USER.key`` file each; re-read when it changes."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._stamp: tuple[float, ...] | None = None
        self._by_key: dict[str, KeyEntry] = {}

    def entries(self) -> list[KeyEntry]:
        """Every registered key, by user; unreadable or misnamed files are logged and skipped."""
        if not self.directory.is_dir():
            return []
        out = []
        for path in sorted(self.directory.glob("*.key")):
            user = path.name.removesuffix(".key")
            if not USER_NAME.match(user):
                log.warning("key file %s: %r is not a user name; ignored", path, user)
                continue
            try:
                public = read_public_key(path)
            except UsageError as exc:
                log.warning("key file ignored: %s", exc)
                continue
            out.append(KeyEntry(user, public.decode(), path))
        return out

    def _refresh(self) -> None:
        try:
            stamp = tuple(
                os.stat(p).st_mtime for p in (self.directory, *sorted(self.directory.glob("*.key")))
            )
        except OSError:
            stamp = ()
        if stamp != self._stamp:
            self._stamp = stamp
            self._by_key = {}
            for entry in self.entries():
                if entry.public_key in self._by_key:
                    log.warning(
                        "key of %s is also registered for %s; refused for both",
                        entry.user,
                        self._by_key[entry.public_key].user,
                    )
                    self._by_key[entry.public_key] = KeyEntry("", entry.public_key, entry.path)
                else:
                    self._by_key[entry.public_key] = entry

    def uid_of_key(self, public_key: str) -> int | None:
        """The uid of the user whose key this is; None for an unknown key or a user with no account."""
        self._refresh()
        entry = self._by_key.get(public_key)
        if entry is None or not entry.user:
            return None
        try:
            return pwd.getpwnam(entry.user).pw_uid
        except KeyError:
            log.warning("key file %s names user %s, who has no account here", entry.path, entry.user)
            return None

    def add(self, user: str, key_file: str | os.PathLike[str]) -> Path:
        """Register ``key_file``'s public key for ``user`` (replacing theirs); returns the file written."""
        if not USER_NAME.match(user):
            raise UsageError(f"{user!r} is not a user name")
        try:
            pwd.getpwnam(user)
        except KeyError:
            raise UsageError(f"no account {user!r} on this node: its jobs would run as no one") from None
        public = read_public_key(key_file)
        for entry in self.entries():
            if entry.public_key == public.decode() and entry.user != user:
                raise UsageError(f"this key is already registered for {entry.user}; one key names one user")
        self.directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        target = self.directory / f"{user}.key"
        write_public_key(target, public, user)
        return target

    def remove(self, user: str) -> Path:
        """Unregister ``user``'s key."""
        target = self.directory / f"{user}.key"
        if not USER_NAME.match(user) or not target.exists():
            raise UsageError(f"no key registered for {user!r} in {self.directory}")
        target.unlink()
        return target
