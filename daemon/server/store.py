"""Jobs, their results and their traces, kept under the daemon's state directory so they survive restarts.

Jobs live in SQLite (``<state_dir>/gpuprof.db``, WAL mode), traces in Parquet files
(``<state_dir>/traces/<job_id>.parquet``, ``<job_id>.energy.parquet`` and ``<job_id>.driver_power.parquet``;
a trace saved by a daemon before the driver's power samples were kept has no third file).
"""

from __future__ import annotations

import builtins  # JobStore.list shadows the builtin inside the class
import dataclasses
import json
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gpuprof.client.wire.errors import GpuprofError, JobNotFound, PermissionDenied, UsageError
from gpuprof.client.wire.messages import JobInfo
from gpuprof.client.wire.protocol import JOB_ID_ALPHABET, JOB_ID_LENGTH
from gpuprof.client.wire.states import FINAL_STATES, INTERRUPTED, QUEUED, RUNNING, STATES, TRANSITIONS
from gpuprof.sampler.records import DRIVER_POWER_DTYPE
from gpuprof.sampler.trace import Trace, driver_power_frame, driver_power_path, write_trace

SCHEMA_VERSION = 2
DB_NAME = "gpuprof.db"
TRACES_DIR = "traces"


# Job ids: 10 characters of milliseconds since the epoch then 6 random ones, in Crockford's base32
# (lowercase): sortable by creation, unique, and safe as a file name.
ID_ALPHABET = JOB_ID_ALPHABET
ID_TIME_CHARS, ID_RANDOM_CHARS = 10, JOB_ID_LENGTH - 10
JOB_ID_RE = re.compile(f"[{re.escape(ID_ALPHABET)}]{{{ID_TIME_CHARS + ID_RANDOM_CHARS}}}")

SCHEMA = (
    """CREATE TABLE jobs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        user TEXT NOT NULL,
        uid INTEGER NOT NULL,
        gpu INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled',
                                             'interrupted')),
        reason TEXT,
        created_ns INTEGER NOT NULL,
        started_ns INTEGER,
        finished_ns INTEGER,
        spec_json TEXT NOT NULL,
        spec_text TEXT NOT NULL,
        result_json TEXT,
        simulated INTEGER NOT NULL,
        worker_uid INTEGER
    )""",
    # version 2 adds the column slurm_job_id (MIGRATIONS)
    "CREATE INDEX jobs_created ON jobs (created_ns)",
    "CREATE INDEX jobs_state ON jobs (state, seq)",
    "CREATE INDEX jobs_user ON jobs (user, seq)",
    "CREATE INDEX jobs_gpu ON jobs (gpu, seq)",
    "CREATE INDEX jobs_gpu_state ON jobs (gpu, state, seq)",  # queued(gpu), polled every scheduler tick
)
# The statements that take a database of version N-1 to version N.
MIGRATIONS = {
    2: (
        "ALTER TABLE jobs ADD COLUMN slurm_job_id TEXT",  # its Slurm job (daemon/server/slurm.py)
        "CREATE INDEX jobs_slurm ON jobs (slurm_job_id, state)",
    ),
}
COLUMNS = (
    "id, name, user, uid, gpu, state, reason, created_ns, started_ns, finished_ns, spec_json, spec_text, "
    "result_json, simulated, worker_uid, slurm_job_id"
)


class StoreError(GpuprofError):
    """The job store cannot be opened or written."""


class InvalidJobId(UsageError):
    """A string that is not a job id of the form the store generates."""

    def __init__(self, job_id: object) -> None:
        super().__init__(f"{job_id!r} is not a job id (16 characters of 0-9 and a-z)")


class InvalidTransition(GpuprofError):
    """A state change the job lifecycle does not allow."""


class TraceNotFound(GpuprofError):
    """A job with no saved trace."""


def is_job_id(job_id: object) -> bool:
    """Whether ``job_id`` has the form of the ids the store generates."""
    return isinstance(job_id, str) and JOB_ID_RE.fullmatch(job_id) is not None


def check_job_id(job_id: object) -> str:
    """``job_id`` when it has the generated form, else InvalidJobId (before any path is built from it)."""
    if not is_job_id(job_id):
        raise InvalidJobId(job_id)
    return str(job_id)


def _base32(value: int, width: int) -> str:
    chars = []
    for _ in range(width):
        value, digit = divmod(value, 32)
        chars.append(ID_ALPHABET[digit])
    return "".join(reversed(chars))


JobRecord = JobInfo  # a job as stored is a job as the protocol describes it (client/wire/messages.py)


def _record(row: tuple[Any, ...]) -> JobRecord:
    (job_id, name, user, uid, gpu, state, reason, created, started, finished) = row[:10]
    spec_json, spec_text, result_json, simulated, worker_uid, slurm_job_id = row[10:]
    return JobRecord(
        id=job_id,
        name=name,
        user=user,
        uid=uid,
        gpu=gpu,
        state=state,
        reason=reason,
        created_ns=created,
        started_ns=started,
        finished_ns=finished,
        spec=json.loads(spec_json),
        spec_text=spec_text,
        result=json.loads(result_json) if result_json is not None else None,
        simulated=bool(simulated),
        worker_uid=worker_uid,
        slurm_job_id=slurm_job_id,
    )


class JobStore:
    """Jobs in SQLite and traces in Parquet under ``state_dir``; safe to use from several threads.

    Each thread gets its own connection (WAL lets readers run beside the one writer). ``clock`` gives
    wall-clock ns for the job times and ids.
    """

    def __init__(self, state_dir: str | os.PathLike[str], clock: Callable[[], int] = time.time_ns) -> None:
        self.state_dir = Path(state_dir)
        self.db_path = self.state_dir / DB_NAME
        self.traces_dir = self.state_dir / TRACES_DIR
        self._clock = clock
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._last_id = 0
        _make_private_dir(self.state_dir)
        _make_private_dir(self.traces_dir)
        if not self.db_path.exists():
            try:  # created here so the file gets 0640, not the umask's 0644
                os.close(os.open(self.db_path, os.O_CREAT | os.O_WRONLY, 0o640))
            except OSError as exc:
                raise StoreError(f"cannot create {str(self.db_path)!r}: {exc.strerror}") from exc
        with self._write() as conn:
            self._migrate(conn)

    # -- connections ---------------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(
                    self.db_path, timeout=10.0, isolation_level=None, check_same_thread=False
                )
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open job database {str(self.db_path)!r}: {exc}") from exc
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction, taken at once so read-then-write steps cannot interleave."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"job database {str(self.db_path)!r}: {exc}") from exc

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._conn().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"job database {str(self.db_path)!r}: {exc}") from exc

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        version = row[0] if row and row[0] is not None else 0
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{str(self.db_path)!r} has schema version {version}; this gpuprofd knows up to "
                f"{SCHEMA_VERSION}: upgrade gpuprof or use another --state-dir"
            )
        if version == 0:
            for statement in SCHEMA:
                conn.execute(statement)
            version = 1
        for step in range(version + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[step]:
                conn.execute(statement)
        if version < SCHEMA_VERSION:
            conn.execute("DELETE FROM schema_version")
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))

    def close(self) -> None:
        """Close every thread's connection."""
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()
        self._local = threading.local()

    def __enter__(self) -> JobStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- jobs ----------------------------------------------------------------------------------------

    def _new_id(self, now_ns: int) -> str:
        """A fresh id, strictly above the previous one from this store even if the clock steps back."""
        with self._lock:
            candidate = (now_ns // 1_000_000) << (5 * ID_RANDOM_CHARS) | secrets.randbits(5 * ID_RANDOM_CHARS)
            self._last_id = max(candidate, self._last_id + 1)
            return _base32(self._last_id, ID_TIME_CHARS + ID_RANDOM_CHARS)

    def create(
        self,
        spec: dict[str, Any],
        spec_text: str,
        user: str,
        uid: int,
        gpu: int,
        simulated: bool,
        slurm_job_id: str | None = None,
    ) -> JobRecord:
        """Store a new queued job and return it (``slurm_job_id``: the Slurm job it was attributed to)."""
        try:
            spec_json = json.dumps(spec, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"job spec cannot be stored: {exc}") from exc
        name = str(spec.get("name") or "")
        for _ in range(8):  # another process may take the same id: retry with fresh random bits
            now = self._clock()
            job_id = self._new_id(now)
            try:
                with self._write() as conn:
                    conn.execute(
                        "INSERT INTO jobs (id, name, user, uid, gpu, state, created_ns, spec_json, spec_text,"
                        " simulated, slurm_job_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            job_id,
                            name,
                            user,
                            uid,
                            gpu,
                            QUEUED,
                            now,
                            spec_json,
                            spec_text,
                            int(simulated),
                            slurm_job_id,
                        ),
                    )
            except StoreError as exc:
                if isinstance(exc.__cause__, sqlite3.IntegrityError):
                    continue
                raise
            return JobRecord(
                id=job_id,
                name=name,
                user=user,
                uid=uid,
                gpu=gpu,
                state=QUEUED,
                reason=None,
                created_ns=now,
                started_ns=None,
                finished_ns=None,
                spec=json.loads(spec_json),
                spec_text=spec_text,
                result=None,
                simulated=bool(simulated),
                worker_uid=None,
                slurm_job_id=slurm_job_id,
            )
        raise StoreError("could not find a free job id after 8 tries")

    @staticmethod
    def valid_id(job_id: object) -> bool:
        """Whether ``job_id`` has the generated form (``get`` and the rest raise InvalidJobId otherwise)."""
        return is_job_id(job_id)

    def get(self, job_id: str) -> JobRecord | None:
        """The job ``job_id``, or None when the store has no such job."""
        rows = self._read(f"SELECT {COLUMNS} FROM jobs WHERE id = ?", (check_job_id(job_id),))
        return _record(rows[0]) if rows else None

    def list(
        self, user: str | None = None, state: str | None = None, gpu: int | None = None, limit: int = 100
    ) -> list[JobRecord]:
        """Jobs newest first, optionally of one user, state or GPU."""
        if state is not None and state not in STATES:
            raise UsageError(f"unknown job state {state!r}; states are {', '.join(STATES)}")
        if limit < 0:
            raise UsageError(f"limit must be >= 0, got {limit}")
        where: list[str] = []
        params: list[object] = []
        for column, value in (("user", user), ("state", state), ("gpu", gpu)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        sql = f"SELECT {COLUMNS} FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self._read(sql + " ORDER BY seq DESC LIMIT ?", (*params, limit))
        return [_record(row) for row in rows]

    def queued(self, gpu: int, limit: int | None = None) -> builtins.list[JobRecord]:
        """The queued jobs of ``gpu``, first submitted first (the first ``limit`` of them if given)."""
        rows = self._read(
            f"SELECT {COLUMNS} FROM jobs WHERE gpu = ? AND state = ? ORDER BY seq LIMIT ?",
            (gpu, QUEUED, -1 if limit is None else limit),
        )
        return [_record(row) for row in rows]

    def count_queued(self, gpu: int) -> int:
        """How many jobs wait for ``gpu``."""
        return int(self._read("SELECT count(*) FROM jobs WHERE gpu = ? AND state = ?", (gpu, QUEUED))[0][0])

    def active_of_slurm_job(self, slurm_job_id: str) -> builtins.list[JobRecord]:
        """The queued and running jobs attributed to Slurm job ``slurm_job_id``."""
        rows = self._read(
            f"SELECT {COLUMNS} FROM jobs WHERE slurm_job_id = ? AND state IN (?, ?) ORDER BY seq",
            (slurm_job_id, QUEUED, RUNNING),
        )
        return [_record(row) for row in rows]

    def of_slurm_job(self, slurm_job_id: str, limit: int = 1000) -> builtins.list[JobRecord]:
        """The jobs attributed to Slurm job ``slurm_job_id``, oldest first (at most ``limit``)."""
        rows = self._read(
            f"SELECT {COLUMNS} FROM jobs WHERE slurm_job_id = ? ORDER BY seq LIMIT ?", (slurm_job_id, limit)
        )
        return [_record(row) for row in rows]

    def count_queued_of(self, uid: int) -> int:
        """How many jobs of the user ``uid`` wait, on every GPU."""
        return int(self._read("SELECT count(*) FROM jobs WHERE state = ? AND uid = ?", (QUEUED, uid))[0][0])

    def set_state(
        self, job_id: str, state: str, reason: str | None = None, worker_uid: int | None = None
    ) -> JobRecord:
        """Move a job along its lifecycle (else InvalidTransition), stamping its start or finish time."""
        check_job_id(job_id)
        if state not in TRANSITIONS:
            raise InvalidTransition(f"job {job_id} cannot be set to {state!r}")
        if worker_uid is not None and state != RUNNING:
            raise UsageError("a worker uid is set only when a job starts running")
        now = self._clock()
        sources = sorted(TRANSITIONS[state])
        started = now if state == RUNNING else None
        finished = now if state in FINAL_STATES else None
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE jobs SET state = ?, reason = coalesce(?, reason),"
                " started_ns = coalesce(?, started_ns), finished_ns = coalesce(?, finished_ns),"
                " worker_uid = coalesce(?, worker_uid)"
                f" WHERE id = ? AND state IN ({', '.join(['?'] * len(sources))})",
                (state, reason, started, finished, worker_uid, job_id, *sources),
            )
            row = conn.execute(f"SELECT {COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFound(f"no job {job_id}")
        record = _record(row)
        if cursor.rowcount == 0:
            raise InvalidTransition(f"job {job_id} is {record.state}; it cannot become {state}")
        return record

    def set_result(self, job_id: str, result: dict[str, Any]) -> None:
        """Store a job's result (JSON; NaN and infinity are refused, results.py turns them into None)."""
        text = json.dumps(result, allow_nan=False)
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE jobs SET result_json = ? WHERE id = ?", (text, check_job_id(job_id))
            )
        if cursor.rowcount == 0:
            raise JobNotFound(f"no job {job_id}")

    def mark_running_interrupted(self, reason: str) -> builtins.list[str]:
        """At daemon start: every job left queued or running by the previous daemon becomes interrupted."""
        now = self._clock()
        with self._write() as conn:
            rows = conn.execute(
                "SELECT id FROM jobs WHERE state IN (?, ?) ORDER BY seq", (QUEUED, RUNNING)
            ).fetchall()
            conn.execute(
                "UPDATE jobs SET state = ?, reason = ?, finished_ns = ? WHERE state IN (?, ?)",
                (INTERRUPTED, reason, now, QUEUED, RUNNING),
            )
        return [row[0] for row in rows]

    # -- traces --------------------------------------------------------------------------------------

    def trace_paths(self, job_id: str) -> tuple[Path, Path]:
        """(samples file, energy file) of a job's trace."""
        job_id = check_job_id(job_id)
        return self.traces_dir / f"{job_id}.parquet", self.traces_dir / f"{job_id}.energy.parquet"

    def driver_power_path(self, job_id: str) -> Path:
        """The file of the driver's power samples of a job's trace."""
        return driver_power_path(self.trace_paths(job_id)[0])

    def save_trace(self, job_id: str, trace: Trace) -> tuple[Path, Path]:
        """Write a job's trace, the driver's power samples included (each file through a temporary file and
        an atomic rename); returns its samples and energy files."""
        if self.get(job_id) is None:
            raise JobNotFound(f"no job {job_id}")
        tagged = dataclasses.replace(trace, metadata={**trace.metadata, "job_id": job_id})
        return write_trace(tagged, self.trace_paths(job_id)[0])

    def requests_path(self, job_id: str) -> Path:
        """The file of an llm job's requests table."""
        return self.traces_dir / f"{check_job_id(job_id)}.requests.parquet"

    def save_requests(self, job_id: str, rows: builtins.list[dict[str, Any]]) -> Path:
        """Write an llm job's requests table (through a temporary file and an atomic rename)."""
        if self.get(job_id) is None:
            raise JobNotFound(f"no job {job_id}")
        path = self.requests_path(job_id)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            pd.DataFrame.from_records(rows).to_parquet(tmp, index=False)
            os.replace(tmp, path)
        except OSError as exc:
            raise StoreError(f"cannot write {str(path)!r}: {exc.strerror}") from exc
        return path

    def load_requests(self, job_id: str) -> pd.DataFrame:
        """An llm job's requests table; TraceNotFound when the job has none."""
        path = self.requests_path(job_id)
        if not path.exists():
            raise TraceNotFound(f"job {job_id} has no requests table (only llm jobs have one)")
        return pd.read_parquet(path)

    def load_trace(self, job_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(samples, energy) DataFrames of a job's saved trace."""
        samples_path, energy_path = self.trace_paths(job_id)
        missing = [str(p) for p in (samples_path, energy_path) if not p.exists()]
        if missing:
            raise TraceNotFound(f"job {job_id} has no saved trace ({', '.join(missing)} missing)")
        return pd.read_parquet(samples_path), pd.read_parquet(energy_path)

    def load_driver_power(self, job_id: str) -> pd.DataFrame:
        """The driver's power samples of a job's saved trace; none (an empty frame) for a trace saved before
        they were kept."""
        path = self.driver_power_path(job_id)
        if path.exists():
            return pd.read_parquet(path)
        if not self.trace_paths(job_id)[0].exists():
            raise TraceNotFound(f"job {job_id} has no saved trace ({path} missing)")
        return driver_power_frame(np.zeros(0, DRIVER_POWER_DTYPE))


def _make_private_dir(path: Path) -> None:
    """Create ``path`` with mode 0750 when missing; an existing directory keeps its mode."""
    try:
        path.mkdir(mode=0o750, parents=True)
    except FileExistsError:
        if not path.is_dir():
            raise StoreError(f"{str(path)!r} exists and is not a directory") from None
    except PermissionError as exc:
        raise PermissionDenied(f"cannot create state directory {str(path)!r}: permission denied") from exc
    except OSError as exc:
        raise StoreError(f"cannot create state directory {str(path)!r}: {exc.strerror}") from exc
    else:
        path.chmod(0o750)  # mkdir's mode is filtered by the umask
