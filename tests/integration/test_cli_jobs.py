"""The commands that take a job against a simulated gpuprofd: ``gpuprof cancel`` waits until a running job
has stopped and says how it ended (a job already ended is left alone, said so, with exit status 0), and
every command takes a unique start of a job's id, as git takes a commit's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from daemon_harness import DaemonProcess, RawClient
from test_daemon import burn, submit, wait_for

from gpuprof.client.cli import main


def test_cancel_waits_for_the_job_to_stop_and_a_second_cancel_is_a_no_op(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon = DaemonProcess(tmp_path).start()
    try:
        client = RawClient(daemon.endpoint)
        job_id = submit(client, burn(20.0))
        wait_for(lambda: client.request("job", {"id": job_id}).body["job"]["state"] == "running", "running")
        ep = ["--endpoint", daemon.endpoint]
        assert main(["cancel", job_id, *ep]) == 0
        out, err = capsys.readouterr()
        assert f"cancelling job {job_id} (running): waiting for it to stop" in err
        assert out.startswith(f"job {job_id} cancelled (cancelled by ")
        assert client.request("job", {"id": job_id}).body["job"]["state"] == "cancelled"
        assert main(["cancel", job_id, "--json", *ep]) == 0
        assert json.loads(capsys.readouterr().out)["state"] == "cancelled"
        assert main(["cancel", job_id, *ep]) == 0
        assert "had already ended: cancelled" in capsys.readouterr().out
        queued = submit(client, burn(20.0))
        other = submit(client, burn(20.0))  # waits behind the first on the one GPU
        assert main(["cancel", other, "--no-wait", *ep]) == 0
        assert f"job {other} cancelled" in capsys.readouterr().out  # a queued job stops at once
        main(["cancel", queued, "--no-wait", *ep])
        client.close()
    finally:
        daemon.kill()


def test_every_command_takes_a_unique_start_of_a_jobs_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon = DaemonProcess(tmp_path).start()
    try:
        client = RawClient(daemon.endpoint)
        first, second = submit(client, burn(0.3)), submit(client, burn(0.3))
        for job_id in (first, second):
            wait_for(
                lambda j=job_id: client.request("job", {"id": j}).body["job"]["state"] == "succeeded", "end"
            )
        client.close()
        ep = ["--endpoint", daemon.endpoint]
        shared = next(n for n in range(4, 16) if first[:n] != second[:n]) - 1  # they differ after this
        unique = first[: max(shared + 1, 4)]
        assert main(["show", unique, "--json", *ep]) == 0
        assert json.loads(capsys.readouterr().out)["id"] == first
        assert main(["export", unique, "-o", str(tmp_path / "t.parquet"), *ep]) == 0
        assert (tmp_path / "t.parquet").is_file()
        if shared >= 4:  # a start both ids share names neither
            assert main(["show", first[:shared], *ep]) == 2
            assert "names 2 jobs" in capsys.readouterr().err
        assert main(["show", "zzzz", *ep]) == 10
        assert "no job whose id starts with 'zzzz'" in capsys.readouterr().err
    finally:
        daemon.kill()
