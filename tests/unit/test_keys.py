"""The CURVE key store: which public key names which user, and what the admin is refused."""

from __future__ import annotations

import getpass
import os
from pathlib import Path

import pytest

from gpuprof.client.keys import keygen
from gpuprof.client.wire.errors import ConfigError, UsageError
from gpuprof.daemon.server.keys import KeyStore, read_public_key, server_keypair

ME = getpass.getuser()


def test_a_registered_key_names_its_user_until_removed(tmp_path: Path) -> None:
    public, _ = keygen(tmp_path / "client")
    store = KeyStore(tmp_path / "keys")
    z85 = read_public_key(public).decode()
    assert store.uid_of_key(z85) is None
    written = store.add(ME, public)
    assert written == tmp_path / "keys" / f"{ME}.key" and written.stat().st_mode & 0o777 == 0o644
    assert store.uid_of_key(z85) == os.getuid()
    assert [(e.user, e.public_key) for e in store.entries()] == [(ME, z85)]
    store.remove(ME)
    assert store.uid_of_key(z85) is None  # a running daemon's store sees the change


def test_the_admin_is_refused_a_secret_file_a_stranger_and_a_shared_key(tmp_path: Path) -> None:
    public, secret = keygen(tmp_path / "client")
    store = KeyStore(tmp_path / "keys")
    with pytest.raises(UsageError, match="holds a secret key"):
        store.add(ME, secret)
    with pytest.raises(UsageError, match="no account 'nobody-here-xyz'"):
        store.add("nobody-here-xyz", public)
    with pytest.raises(UsageError, match="not a user name"):
        store.add("../etc/passwd", public)
    (tmp_path / "junk.key").write_text("hello\n")
    with pytest.raises(UsageError, match="not a CURVE certificate"):
        store.add(ME, tmp_path / "junk.key")
    with pytest.raises(UsageError, match="cannot read"):
        store.add(ME, tmp_path / "missing.key")
    store.add(ME, public)
    (tmp_path / "keys" / "root2.key").write_text((tmp_path / "keys" / f"{ME}.key").read_text())
    # A copied file makes one key name two users: refused for both rather than guessing.
    assert store.uid_of_key(read_public_key(public).decode()) is None
    with pytest.raises(UsageError, match="no key registered"):
        store.remove("someone-else")


def test_the_server_keypair_is_made_once_private_and_checked(tmp_path: Path) -> None:
    secret_file = tmp_path / "etc" / "server.key_secret"
    with pytest.raises(ConfigError, match="gpuprofd keys server"):
        server_keypair(secret_file, create=False)
    public, secret = server_keypair(secret_file, create=True)
    assert secret_file.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "etc" / "server.key").stat().st_mode & 0o777 == 0o644
    assert server_keypair(secret_file, create=True) == (public, secret)  # not replaced
    secret_file.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        server_keypair(secret_file, create=False)


def test_keygen_keeps_an_existing_keypair_unless_forced(tmp_path: Path) -> None:
    public, secret = keygen(tmp_path)
    assert secret.stat().st_mode & 0o777 == 0o600
    with pytest.raises(UsageError, match="--force"):
        keygen(tmp_path)
    before = public.read_text()
    keygen(tmp_path, force=True)
    assert public.read_text() != before
