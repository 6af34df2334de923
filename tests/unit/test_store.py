"""The job store: lifecycle, persistence across restarts, crash recovery, traces, ids, threads."""

from __future__ import annotations

import json
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from gpuprof.client.wire.errors import UsageError
from gpuprof.daemon.server.store import (
    INTERRUPTED,
    SCHEMA,
    InvalidJobId,
    InvalidTransition,
    JobNotFound,
    JobStore,
    StoreError,
    TraceNotFound,
    is_job_id,
)
from gpuprof.sampler.records import DRIVER_POWER_DTYPE, ENERGY_DTYPE, SAMPLE_DTYPE
from gpuprof.sampler.trace import Trace, read_metadata

SPEC = {"name": "burn-1", "kind": "burn", "gpu": 0, "seconds": 1.0}


class FakeClock:
    """Wall-clock ns that advance 1 ms per read, so every job gets a distinct time."""

    def __init__(self, start_ns: int = 1_764_000_000_000_000_000) -> None:
        self.now = start_ns

    def __call__(self) -> int:
        self.now += 1_000_000
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    with JobStore(tmp_path / "state", clock=FakeClock()) as job_store:
        yield job_store


def submit(store: JobStore, user: str = "ada", gpu: int = 0, name: str = "burn-1") -> str:
    return store.create({**SPEC, "name": name}, "kind: burn\n", user, 1000, gpu, simulated=True).id


def test_create_stores_a_queued_job(store: JobStore) -> None:
    record = store.create(SPEC, "kind: burn\n", "ada", 1000, 0, simulated=True)
    assert is_job_id(record.id)
    assert record.state == "queued" and record.name == "burn-1" and record.worker_uid is None
    assert store.get(record.id) == record
    assert json.loads(json.dumps(record.to_dict())) == record.to_dict()


def test_ids_sort_by_creation_even_when_the_clock_steps_back(tmp_path: Path) -> None:
    clock = FakeClock()
    store = JobStore(tmp_path, clock=clock)
    first = submit(store)
    clock.now -= 10_000_000_000
    second = submit(store)
    assert second > first
    assert [r.id for r in store.list()] == [second, first]
    store.close()


def test_lifecycle_runs_through_and_stamps_times(store: JobStore) -> None:
    job = submit(store)
    running = store.set_state(job, "running", worker_uid=2001)
    assert running.state == "running" and running.started_ns is not None and running.worker_uid == 2001
    done = store.set_state(job, "succeeded")
    assert done.finished_ns is not None and done.finished_ns > done.started_ns  # type: ignore[operator]
    assert done.worker_uid == 2001 and done.finished


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        ([], "succeeded"),  # queued cannot succeed without running
        (["running"], "running"),
        (["running", "succeeded"], "failed"),
        (["cancelled"], "running"),
        (["running", "interrupted"], "succeeded"),
        ([], "queued"),
        ([], "exploded"),
    ],
)
def test_invalid_transitions_raise_and_change_nothing(store: JobStore, path: list[str], bad: str) -> None:
    job = submit(store)
    for state in path:
        store.set_state(job, state)
    before = store.get(job)
    with pytest.raises(InvalidTransition):
        store.set_state(job, bad)
    assert store.get(job) == before


def test_a_queued_job_may_end_without_running(store: JobStore) -> None:
    job = submit(store)
    record = store.set_state(job, "cancelled", "cancelled before it started")
    assert record.reason == "cancelled before it started" and record.started_ns is None


def test_unknown_jobs_are_reported(store: JobStore) -> None:
    unknown = "0000000000zzzzzz"
    assert store.get(unknown) is None
    with pytest.raises(JobNotFound):
        store.set_state(unknown, "running")
    with pytest.raises(JobNotFound):
        store.set_result(unknown, {})


def test_results_are_stored_as_json(store: JobStore) -> None:
    job = submit(store)
    result = {"energy_counter_j": 12.5, "windows": [{"name": "step", "attrs": {"i": 1}}]}
    store.set_result(job, result)
    record = store.get(job)
    assert record is not None and record.result == result
    with pytest.raises(ValueError):
        store.set_result(job, {"bad": float("nan")})


def test_jobs_persist_across_a_new_store_on_the_same_directory(tmp_path: Path) -> None:
    first = JobStore(tmp_path / "state")
    job = submit(first)
    first.set_state(job, "running")
    first.set_state(job, "succeeded")
    first.set_result(job, {"energy_counter_j": 3.0})
    first.close()
    again = JobStore(tmp_path / "state")
    record = again.get(job)
    assert record is not None and record.state == "succeeded" and record.result == {"energy_counter_j": 3.0}
    assert record.spec == SPEC and record.spec_text == "kind: burn\n" and record.simulated is True
    again.close()


def test_after_a_crash_running_and_queued_jobs_become_interrupted(tmp_path: Path) -> None:
    crashed = JobStore(tmp_path)  # never closed: its connection is just left behind, as in a crash
    done, running, waiting = submit(crashed), submit(crashed), submit(crashed)
    crashed.set_state(done, "running")
    crashed.set_state(done, "succeeded")
    crashed.set_state(running, "running")
    restarted = JobStore(tmp_path)
    assert restarted.mark_running_interrupted("gpuprofd restarted") == [running, waiting]
    for job in (running, waiting):
        record = restarted.get(job)
        assert record is not None
        assert (record.state, record.reason) == (INTERRUPTED, "gpuprofd restarted")
        assert record.finished_ns is not None
    assert restarted.get(done).state == "succeeded"  # type: ignore[union-attr]
    assert restarted.mark_running_interrupted("again") == []
    del crashed
    restarted.close()


def test_list_filters_and_orders_newest_first(store: JobStore) -> None:
    a = submit(store, user="ada", gpu=0)
    b = submit(store, user="bob", gpu=1)
    c = submit(store, user="ada", gpu=1)
    store.set_state(b, "running")
    assert [r.id for r in store.list()] == [c, b, a]
    assert [r.id for r in store.list(user="ada")] == [c, a]
    assert [r.id for r in store.list(gpu=1)] == [c, b]
    assert [r.id for r in store.list(state="running")] == [b]
    assert [r.id for r in store.list(user="ada", gpu=1, state="queued")] == [c]
    assert [r.id for r in store.list(limit=2)] == [c, b]
    with pytest.raises(UsageError):
        store.list(state="bogus")


def test_queued_is_fifo_per_gpu(store: JobStore) -> None:
    first, other_gpu, second, third = submit(store), submit(store, gpu=1), submit(store), submit(store)
    store.set_state(second, "cancelled")
    assert [r.id for r in store.queued(0)] == [first, third]
    assert [r.id for r in store.queued(1)] == [other_gpu]
    assert [r.id for r in store.queued(0, limit=1)] == [first]


def make_trace() -> Trace:
    samples = np.zeros(3, SAMPLE_DTYPE)
    samples["t_ns"] = [10, 20, 30]
    samples["power_mw"] = [250_000, 251_000, 252_000]
    energy = np.zeros(2, ENERGY_DTYPE)
    energy["t_start_ns"], energy["t_end_ns"], energy["energy_mj"] = [0, 100], [4, 104], [7, 9]
    driver_power = np.zeros(2, DRIVER_POWER_DTYPE)
    driver_power["t_ns"], driver_power["power_mw"] = [8, 28], [249_000, 251_500]
    return Trace(
        samples, energy, monotonic_anchor_ns=5, wall_anchor_ns=50, simulated=True, driver_power=driver_power
    )


def test_traces_are_written_and_read_back(store: JobStore) -> None:
    job = submit(store)
    trace = make_trace()
    samples_path, energy_path = store.save_trace(job, trace)
    assert samples_path == store.traces_dir / f"{job}.parquet"
    assert energy_path == store.traces_dir / f"{job}.energy.parquet"
    assert not [p for p in store.traces_dir.iterdir() if p.name.endswith(".tmp")]
    samples, energy = store.load_trace(job)
    pd.testing.assert_frame_equal(samples, trace.samples_frame())
    pd.testing.assert_frame_equal(energy, trace.energy_frame())
    assert read_metadata(samples_path)["job_id"] == job
    assert store.driver_power_path(job) == store.traces_dir / f"{job}.driver_power.parquet"
    driver_power = store.load_driver_power(job)
    pd.testing.assert_frame_equal(driver_power, trace.driver_power_frame())
    assert driver_power["power_w"].tolist() == [249.0, 251.5]


def test_a_trace_saved_before_driver_power_was_kept_still_loads(store: JobStore) -> None:
    job = submit(store)
    store.save_trace(job, make_trace())
    store.driver_power_path(job).unlink()  # as an older daemon left it: two files
    samples, energy = store.load_trace(job)
    assert len(samples) == 3 and len(energy) == 2
    driver_power = store.load_driver_power(job)
    assert len(driver_power) == 0 and list(driver_power.columns) == ["t_ns", "gpu", "power_w"]


def test_missing_traces_are_reported(store: JobStore) -> None:
    job = submit(store)
    with pytest.raises(TraceNotFound):
        store.load_trace(job)
    with pytest.raises(TraceNotFound):
        store.load_driver_power(job)
    with pytest.raises(JobNotFound):
        store.save_trace("0000000000zzzzzz", make_trace())


@pytest.mark.parametrize(
    "bad",
    ["../../etc/passwd", "../gpuprof.db", "/tmp/x", "0000000000zzzzz/", "0000000000ZZZZZZ", "", "a" * 17, 7],
)
def test_ids_not_of_the_generated_form_are_rejected(store: JobStore, bad: object) -> None:
    assert not JobStore.valid_id(bad)
    calls: list[Callable[[Any], object]] = [
        store.get,
        store.trace_paths,
        store.load_trace,
        store.driver_power_path,
        store.load_driver_power,
        lambda j: store.save_trace(j, make_trace()),
        lambda j: store.set_state(j, "running"),
        lambda j: store.set_result(j, {}),
    ]
    for call in calls:
        with pytest.raises(InvalidJobId):
            call(bad)
    assert list(store.traces_dir.iterdir()) == []


def test_state_directory_is_private_and_the_database_in_wal_mode(tmp_path: Path) -> None:
    state_dir = tmp_path / "new" / "state"
    with JobStore(state_dir):
        assert stat.S_IMODE(state_dir.stat().st_mode) == 0o750
        assert stat.S_IMODE((state_dir / "gpuprof.db").stat().st_mode) == 0o640
    conn = sqlite3.connect(state_dir / "gpuprof.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT version FROM schema_version").fetchall() == [(2,)]
    conn.close()


def test_list_queries_use_the_indexes(store: JobStore) -> None:
    conn = sqlite3.connect(store.db_path)
    indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"jobs_created", "jobs_state", "jobs_user", "jobs_gpu"} <= indexes
    for where in ("state = 'queued'", "user = 'ada'", "gpu = 0", "gpu = 0 AND state = 'queued'"):
        plan = " | ".join(
            row[3]
            for row in conn.execute(f"EXPLAIN QUERY PLAN SELECT * FROM jobs WHERE {where} ORDER BY seq DESC")
        )
        assert "USING INDEX" in plan and "TEMP B-TREE" not in plan, (where, plan)
    plan = " | ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN SELECT * FROM jobs WHERE id = 'x'"))
    assert "USING INDEX" in plan, plan
    conn.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    JobStore(tmp_path).close()
    conn = sqlite3.connect(tmp_path / "gpuprof.db")
    conn.execute("UPDATE schema_version SET version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="schema version 99"):
        JobStore(tmp_path)


def test_two_threads_write_concurrently(store: JobStore) -> None:
    errors: list[BaseException] = []
    created: dict[str, list[str]] = {"ada": [], "bob": []}

    def work(user: str) -> None:
        try:
            for _ in range(40):
                job = submit(store, user=user)
                created[user].append(job)
                store.set_state(job, "running")
                store.set_result(job, {"user": user})
                store.set_state(job, "succeeded")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(user,)) for user in created]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    everything = store.list(limit=1000)
    assert len(everything) == 80 and len({r.id for r in everything}) == 80
    assert all(r.state == "succeeded" for r in everything)
    for user, jobs in created.items():
        assert {r.id for r in store.list(user=user, limit=1000)} == set(jobs)


def test_a_version_1_database_gains_the_slurm_column_and_keeps_its_jobs(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "gpuprof.db")
    for statement in SCHEMA:
        conn.execute(statement)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO schema_version (version) VALUES (1)")
    conn.execute(
        "INSERT INTO jobs (id, name, user, uid, gpu, state, created_ns, spec_json, spec_text, simulated)"
        " VALUES ('0000000000000000', 'old', 'ada', 1000, 0, 'succeeded', 1, '{}', '', 1)"
    )
    conn.commit()
    conn.close()
    with JobStore(tmp_path) as store:
        old = store.get("0000000000000000")
        assert old is not None and old.name == "old" and old.slurm_job_id is None
        new = store.create({"name": "new"}, "", "ada", 1000, 0, True, slurm_job_id="42")
        assert (
            [r.id for r in store.of_slurm_job("42")]
            == [new.id]
            == [r.id for r in store.active_of_slurm_job("42")]
        )
    conn = sqlite3.connect(tmp_path / "gpuprof.db")
    assert conn.execute("SELECT version FROM schema_version").fetchall() == [(2,)]
    conn.close()
