"""Remote clients: gpuprofd's tcp endpoint admits only CURVE keys its admin registered, each naming a user."""

from __future__ import annotations

import getpass
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_harness import DaemonProcess, RawClient

from gpuprof.client import Client
from gpuprof.client.api import DaemonUnavailable
from gpuprof.client.keys import keygen
from gpuprof.client.wire.errors import PermissionDenied, UsageError
from gpuprof.daemon.server.keys import KeyStore, public_file


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DaemonProcess, str, Path]]:
    root = tmp_path_factory.mktemp("remote")
    port, pub_port = _free_ports(2)
    config = (
        f'tcp_endpoint = "tcp://127.0.0.1:{port}"\n'
        f'tcp_pub_endpoint = "tcp://127.0.0.1:{pub_port}"\n'
        f'keys_dir = "{root / "keys"}"\n'
        f'server_key = "{root / "server" / "server.key_secret"}"\n'
    )
    process = DaemonProcess(root, config).start()
    try:
        yield process, f"tcp://127.0.0.1:{port}", root
    finally:
        process.kill()


def _client_keys(directory: Path) -> Path:
    public, _secret = keygen(directory)
    return public


def test_a_registered_key_is_served_as_its_user_with_live_data(
    remote: tuple[DaemonProcess, str, Path],
) -> None:
    _daemon, endpoint, root = remote
    server_public = public_file(root / "server" / "server.key_secret")
    assert server_public.exists() and (root / "server" / "server.key_secret").stat().st_mode & 0o077 == 0
    public = _client_keys(root / "me")
    KeyStore(root / "keys").add(getpass.getuser(), public)
    my_secret = root / "me" / "client.key_secret"
    with Client(endpoint, timeout_s=10, server_key=str(server_public), client_key=str(my_secret)) as client:
        hello = client.hello()
        assert hello["user"] == getpass.getuser()
        with client.stream(gpu=0) as live:
            deadline = time.monotonic() + 10
            batches = []
            while not batches and time.monotonic() < deadline:
                batches = [m for m in live.poll(0.5) if m["kind"] == "samples"]
            assert batches and batches[0]["gpu"] == 0


def test_an_unknown_key_is_refused_at_once_and_told_how_to_register(
    remote: tuple[DaemonProcess, str, Path],
) -> None:
    daemon, endpoint, root = remote
    _client_keys(root / "stranger")
    server_public = public_file(root / "server" / "server.key_secret")
    client = Client(
        endpoint,
        timeout_s=10,
        server_key=str(server_public),
        client_key=str(root / "stranger" / "client.key_secret"),
    )
    started = time.monotonic()
    with client, pytest.raises(PermissionDenied, match="gpuprofd keys add"):
        client.hello()
    assert time.monotonic() - started < 5  # the handshake's refusal, not a timeout
    assert "unknown CURVE public key" in daemon.log.read_text()


def test_a_client_without_curve_gets_nothing(remote: tuple[DaemonProcess, str, Path]) -> None:
    _daemon, endpoint, _root = remote
    raw = RawClient(endpoint)
    try:
        with pytest.raises(TimeoutError):
            raw.request("hello", timeout_s=1.5)
    finally:
        raw.close()


def test_a_wrong_server_key_is_a_timeout_that_names_the_key(
    remote: tuple[DaemonProcess, str, Path],
) -> None:
    _daemon, endpoint, root = remote
    public = _client_keys(root / "confused")
    KeyStore(root / "keys").add(getpass.getuser(), public)
    wrong_server = _client_keys(root / "not-the-server")
    client = Client(
        endpoint,
        timeout_s=1.5,
        server_key=str(wrong_server),
        client_key=str(root / "confused" / "client.key_secret"),
    )
    with client, pytest.raises(DaemonUnavailable, match="daemon's public key"):
        client.hello()


def test_a_tcp_client_without_keys_is_told_what_to_make(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("GPUPROF_SERVER_KEY", raising=False)
    monkeypatch.delenv("GPUPROF_CLIENT_KEY", raising=False)
    with pytest.raises(UsageError, match=f"{tmp_path}/gpuprof/servers/node7.key"):
        Client("tcp://node7:5555")
    (tmp_path / "gpuprof" / "servers").mkdir(parents=True)
    _client_keys(tmp_path / "gpuprof" / "servers")
    os.replace(tmp_path / "gpuprof/servers/client.key", tmp_path / "gpuprof/servers/node7.key")
    with pytest.raises(UsageError, match="gpuprof keygen"):
        Client("tcp://node7:5555")
    keygen()
    Client("tcp://node7:5555").close()  # both keys found where the docs say


def test_local_users_still_connect_over_ipc_by_their_os_account(
    remote: tuple[DaemonProcess, str, Path],
) -> None:
    daemon, _endpoint, _root = remote
    with Client(daemon.endpoint) as client:
        hello = client.hello()
    assert hello["user"] == getpass.getuser() and hello["tcp_pub_port"]
