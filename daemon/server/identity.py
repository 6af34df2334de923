"""Who is asking: the OS user behind each connection, learnt from the kernel through ZeroMQ's ZAP.

Every socket gpuprofd serves sets a ZAP domain, so libzmq asks this module's handler about each new
connection before any message of it is read. For an ipc connection the handler is given the peer's
credentials, which the kernel filled in at connect time (SO_PEERCRED), as ``localhost:UID:GID:PID``; it
answers with the uid (and the pid, whose cgroup names the caller's Slurm job: daemon/server/slurm.py) as
the connection's User-Id, and libzmq stamps that on every message the connection sends. A message can
therefore not claim to be someone else: the daemon reads the user from the frame's metadata, never from the
message. Anything else (a tcp connection without CURVE, an address that does not parse) is refused at the
handshake.
"""

from __future__ import annotations

import dataclasses
import grp
import logging
import os
import pwd
import time
from dataclasses import dataclass
from typing import Any

import zmq
from zmq.utils import z85

ZAP_ENDPOINT = "inproc://zeromq.zap.01"  # fixed by the ZAP specification (RFC 27)
ZAP_DOMAIN = b"gpuprof"
REMOTE_SUFFIX = ":curve"  # on the ZAP user id of a connection known by its CURVE key
PID_SEPARATOR = "/"  # between the uid and the pid on the ZAP user id of an ipc connection
CACHE_S = 10.0  # group membership is re-read this often: a user added to a group is seen within 10 s
log = logging.getLogger("gpuprofd")


@dataclass(frozen=True)
class Caller:
    """A client's OS identity: its uid, its account's name and primary gid, and every group it is in."""

    uid: int
    user: str
    gid: int
    groups: frozenset[str]
    remote: bool = False  # known by a CURVE key over tcp, not as a local process on the ipc socket
    pid: int | None = None  # the connecting process (ipc: SO_PEERCRED at connect time), for its cgroup

    @classmethod
    def of_uid(cls, uid: int) -> Caller:
        """The account behind ``uid``; a uid without an account is still a caller (named ``#uid``)."""
        try:
            account = pwd.getpwuid(uid)
        except KeyError:
            return cls(uid=uid, user=f"#{uid}", gid=-1, groups=frozenset())
        names = set()
        for gid in {account.pw_gid, *_group_ids(account.pw_name, account.pw_gid)}:
            try:
                names.add(grp.getgrgid(gid).gr_name)
            except KeyError:
                continue
        return cls(uid=uid, user=account.pw_name, gid=account.pw_gid, groups=frozenset(names))


def _group_ids(user: str, gid: int) -> list[int]:
    try:
        return os.getgrouplist(user, gid)
    except OSError:
        return [gid]


class Callers:
    """Callers by uid, each looked up again after CACHE_S."""

    def __init__(self) -> None:
        self._cache: dict[int, tuple[float, Caller]] = {}

    def get(self, uid: int, remote: bool = False, pid: int | None = None) -> Caller:
        now = time.monotonic()
        cached = self._cache.get(uid)
        if cached is None or now - cached[0] >= CACHE_S:
            cached = (now, Caller.of_uid(uid))
            self._cache[uid] = cached
        if remote or pid is not None:
            return dataclasses.replace(cached[1], remote=remote, pid=None if remote else pid)
        return cached[1]


def ipc_peer(address: bytes) -> tuple[int, int | None] | None:
    """(uid, pid) in a ZAP address of an ipc peer (``localhost:UID:GID:PID``), or None."""
    parts = address.split(b":")
    if len(parts) != 4 or parts[0] != b"localhost" or not parts[1].isdigit():
        return None
    return int(parts[1]), int(parts[3]) if parts[3].isdigit() and int(parts[3]) > 0 else None


class ZapHandler:
    """Answers libzmq's ZAP requests on the daemon's thread: who each new connection is, or a refusal.

    ``curve_users`` maps a client's CURVE public key (Z85 text) to an account name; it is asked for tcp
    connections that use CURVE.
    """

    def __init__(self, context: zmq.Context[Any], curve_users: Any = None) -> None:
        self.socket = context.socket(zmq.REP)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(ZAP_ENDPOINT)
        self.curve_users = curve_users

    def close(self) -> None:
        self.socket.close()

    def handle(self) -> None:
        """Answer every ZAP request waiting (call when the socket is readable)."""
        while True:
            try:
                request = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.socket.send_multipart(self._reply(request))

    def _reply(self, request: list[bytes]) -> list[bytes]:
        if len(request) < 6:
            return [b"1.0", b"", b"500", b"malformed ZAP request", b"", b""]
        version, request_id, _domain, address, _identity, mechanism = request[:6]
        credentials = request[6:]
        user_id: int | None = None
        pid: int | None = None
        why = "unknown mechanism"
        if mechanism == b"NULL":
            user_id, pid = ipc_peer(address) or (None, None)
            why = "only ipc connections may go without CURVE"
        elif mechanism == b"CURVE" and self.curve_users is not None and credentials:
            user_id = self.curve_users.uid_of_key(z85.encode(credentials[0]).decode())
            why = "unknown CURVE public key (ask the admin: gpuprofd keys add USER FILE)"
        if user_id is None:
            peer = address.decode(errors="replace")
            log.warning(
                "refused a connection from %s (%s): %s", peer, mechanism.decode(errors="replace"), why
            )
            return [version, request_id, b"400", why.encode(), b"", b""]
        if mechanism == b"CURVE":
            user = f"{user_id}{REMOTE_SUFFIX}"
        else:
            user = f"{user_id}{PID_SEPARATOR}{pid}" if pid is not None else str(user_id)
        return [version, request_id, b"200", b"OK", user.encode(), b""]


def frame_uid(frame: zmq.Frame) -> tuple[int, bool, int | None] | None:
    """(uid, remote, pid) as ZAP stamped them on a received frame (remote: known by a CURVE key; pid: the
    ipc peer's process), or None when the connection was never authenticated."""
    try:
        value = frame.get("User-Id")
    except zmq.ZMQError:
        return None
    if not isinstance(value, str):
        return None
    remote = value.endswith(REMOTE_SUFFIX)
    uid, _, pid = value.removesuffix(REMOTE_SUFFIX).partition(PID_SEPARATOR)
    if not uid.isdigit() or (pid and not pid.isdigit()):
        return None
    return int(uid), remote, int(pid) if pid else None
