"""A study split into point specs, run as a real Slurm job array against a simulated gpuprofd, gathered into
one table that gpuprof report takes."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from daemon_harness import DaemonProcess
from slurm_cluster import SlurmCluster, missing

from gpuprof.client.cli import main

pytest.importorskip("torch", reason="LLM jobs need torch (pip install '.[test]')")
pytestmark = pytest.mark.skipif(missing() is not None, reason=missing() or "")

ROOT = Path(__file__).resolve().parents[2]
STUDY = """\
name: tiny-study
workload: llm
timeout_s: 600
llm:
  models: [{arch: llama-3.2-1b-tiny}]
  tasks: [qa, factual]
  dtype: float32
  prompts: 2
  batch_sizes: [1]
  max_new_tokens: 3
  ignore_eos: true
  warmup_requests: 1
  ner: heuristic
"""


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[SlurmCluster]:
    running = SlurmCluster(tmp_path / "slurm").start()
    try:
        yield running
    finally:
        running.stop()


def test_a_job_array_runs_every_point_and_gathers_into_one_table(
    tmp_path: Path, cluster: SlurmCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "study.yaml"
    spec.write_text(STUDY)
    study = tmp_path / "study"
    assert main(["study", "split", str(spec), "-o", str(study)]) == 0
    (tmp_path / "d").mkdir()
    daemon = DaemonProcess(tmp_path / "d").start()
    try:
        cluster.env.update(
            GPUPROF_ENDPOINT=daemon.endpoint, GPUPROF=str(Path(sys.executable).parent / "gpuprof")
        )
        script = ROOT / "slurm" / "gpuprof-study.sbatch"
        submitted = cluster.run(
            "sbatch",
            "--parsable",
            "--array=0-1",
            "--cpus-per-task=1",
            f"--chdir={tmp_path}",
            str(script),
            str(study),
        )
        assert submitted.returncode == 0, submitted.stderr
        array = submitted.stdout.strip().split(";")[0]
        cluster.wait_for_job(array)
    finally:
        daemon.kill()
    table = tmp_path / "study.parquet"
    assert main(["study", "gather", str(study), "-o", str(table)]) == 0, capsys.readouterr().err
    requests = pd.read_parquet(table)
    assert sorted(set(requests["task"])) == ["factual", "qa"] and len(requests) == 4
    assert set(requests["slurm_array_job_id"]) == {array}
    assert sorted(set(requests["slurm_array_task_id"])) == ["0", "1"]
    assert set(requests["node"]) == {cluster.node} and requests["gpu_uuid"].notna().all()
    assert set(requests["driver"]) == {"simulated"} and (requests["energy_j"] > 0).all()
    assert "2 of 2 points" in capsys.readouterr().err
    assert main(["report", str(table), "-o", str(tmp_path / "report"), "--json"]) == 0
    assert (tmp_path / "report" / "report.html").is_file()


def test_gather_names_the_points_that_did_not_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "study.yaml"
    spec.write_text(STUDY)
    study = tmp_path / "study"
    assert main(["study", "split", str(spec), "-o", str(study)]) == 0
    assert main(["study", "gather", str(study), "-o", str(tmp_path / "t.csv")]) == 0
    err = capsys.readouterr().err
    assert "0 requests from 0 of 2 points" in err
    assert "missing point 0 (llama-3.2-1b-tiny / qa): no result" in err


def test_split_and_gather_answer_in_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "study.yaml"
    spec.write_text(STUDY)
    study = tmp_path / "study"
    assert main(["study", "split", str(spec), "-o", str(study), "--json"]) == 0
    split = json.loads(capsys.readouterr().out)
    assert split["points"] == 2 and all(Path(p).is_file() for p in split["specs"])
    assert main(["study", "gather", str(study), "-o", str(tmp_path / "t.csv"), "--json"]) == 0
    gathered = json.loads(capsys.readouterr().out)
    assert gathered["requests"] == 0 and gathered["points"] == 2 and len(gathered["missing"]) == 2
