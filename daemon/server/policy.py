"""Who may do what through gpuprofd: the policy in its configuration, applied to a Caller per request.

- Members of ``users_group`` (default ``gpuprof``) may submit jobs, watch the GPUs and use their own jobs.
- Admins (root, the account gpuprofd runs as, members of ``admin_groups``) see and cancel every job.
- Clock changes need ``allow_dvfs`` and a caller named in ``dvfs_users`` or in one of ``dvfs_groups``
  (root and the daemon's own user need only ``allow_dvfs``); being an admin is not enough.
- ``trust_remote_code`` in an llm job needs ``allow_trust_remote_code`` (the code runs as the job's user).
- A command job (the user's own program, run as the user) from a remote client, known by a CURVE key over
  tcp, needs ``allow_remote_commands``: a local caller can run programs as itself anyway, a key holder
  elsewhere could not without it. A gpuprofd that is not root runs every worker as its own user, so there
  only that user may submit command jobs.

Each refusal is a ``denied`` error that says what was refused and why, and is logged.
"""

from __future__ import annotations

import logging
import os

from gpuprof.client.wire import protocol

from ..config import DaemonConfig
from .identity import Caller

log = logging.getLogger("gpuprofd")


class Policy:
    """The configured rules, with the daemon's own uid (always an admin: it owns the state anyway)."""

    def __init__(self, config: DaemonConfig, daemon_uid: int | None = None, root: bool | None = None) -> None:
        self.config = config
        self.daemon_uid = os.getuid() if daemon_uid is None else daemon_uid
        self.root = os.geteuid() == 0 if root is None else root  # whether workers run as their users

    def is_admin(self, caller: Caller) -> bool:
        return caller.uid in (0, self.daemon_uid) or bool(caller.groups & set(self.config.admin_groups))

    def may_use(self, caller: Caller) -> bool:
        return self.is_admin(caller) or self.config.users_group in caller.groups

    def may_see(self, caller: Caller, owner_uid: int) -> bool:
        return caller.uid == owner_uid or self.is_admin(caller)

    def deny(self, caller: Caller, what: str, why: str, key: str | None = None) -> protocol.ProtocolError:
        """The error to raise for a refusal, logged with who asked; ``key`` is the job spec key it is
        about, if any (the client names its line; the problem is then ``denied: why``)."""
        log.warning("denied %s to %s (uid %d): %s", what, caller.user, caller.uid, why)
        problem = f"denied: {why}" if key is not None else None
        return protocol.ProtocolError("denied", f"{what} denied: {why}", key=key, problem=problem)

    def check_use(self, caller: Caller, request: str) -> None:
        if not self.may_use(caller):
            raise self.deny(
                caller,
                request,
                f"user {caller.user} is not in the group {self.config.users_group!r} "
                f"(an admin adds users with: usermod -aG {self.config.users_group} USER)",
            )

    def may_change_clocks(self, caller: Caller) -> bool:
        named = caller.user in self.config.dvfs_users or bool(caller.groups & set(self.config.dvfs_groups))
        return self.config.allow_dvfs and (caller.uid in (0, self.daemon_uid) or named)

    def check_dvfs(self, caller: Caller) -> None:
        if not self.config.allow_dvfs:
            raise self.deny(
                caller,
                "dvfs",
                "clock changes are off on this node (allow_dvfs = false in gpuprofd.toml; "
                "a local daemon takes gpuprofd serve --allow-dvfs)",
                key="dvfs",
            )
        if not self.may_change_clocks(caller):
            raise self.deny(
                caller,
                "dvfs",
                f"user {caller.user} is not among those allowed to change clocks "
                "(dvfs_users and dvfs_groups in gpuprofd.toml)",
                key="dvfs",
            )

    def check_remote_code(self, caller: Caller) -> None:
        if not self.config.allow_trust_remote_code:
            raise self.deny(
                caller,
                "llm.trust_remote_code",
                "running a model repository's own code is off on this node "
                "(allow_trust_remote_code = false in gpuprofd.toml)",
                key="llm.trust_remote_code",
            )

    def check_command(self, caller: Caller) -> None:
        if not self.root and caller.uid != self.daemon_uid:
            raise self.deny(
                caller,
                "command",
                "this gpuprofd does not run as root, so it would run the program as its own user, not as "
                f"{caller.user}: only that user may submit command jobs here",
                key="command",
            )
        if caller.remote and not self.config.allow_remote_commands:
            raise self.deny(
                caller,
                "command",
                "command jobs from remote clients are off on this node (allow_remote_commands = false in "
                "gpuprofd.toml); a user logged in on the node may submit them",
                key="command",
            )

    def check_job(self, caller: Caller, request: str, job_id: str, owner: str, owner_uid: int) -> None:
        if not self.may_see(caller, owner_uid):
            raise self.deny(
                caller, f"{request} of job {job_id}", f"it belongs to {owner}; only its owner or an admin may"
            )
