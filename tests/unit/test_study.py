"""A study split into point specs: one per model x task (x clock), each a valid spec that keeps the rest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpuprof.client.study import gather, point_file, split
from gpuprof.client.wire.errors import UsageError
from gpuprof.client.wire.jobspec import LlmParams, load_job_spec

SPEC = """\
name: s
workload: llm
timeout_s: 600
llm:
  models: [{arch: llama-3.2-1b}, {arch: mistral-7b-v0.1}]
  tasks: [qa, factual]
  prompts: 5
  batch_sizes: [1, 4]
dvfs: {sm_clocks: [900, 1410, 1980], order: sequential}
"""


def written(tmp_path: Path, text: str = SPEC) -> Path:
    spec = tmp_path / "s.yaml"
    spec.write_text(text)
    return spec


def test_each_model_task_and_clock_is_a_point_that_keeps_the_rest(tmp_path: Path) -> None:
    points = split(str(written(tmp_path)), tmp_path / "study")
    assert len(points) == 2 * 2 * 3
    assert points[4] == {"index": 4, "model": "llama-3.2-1b", "task": "factual", "sm_clock_mhz": 1410}
    spec = load_job_spec(point_file(tmp_path / "study", 4))
    assert isinstance(spec.params, LlmParams) and spec.name == "s-0004"
    assert [m.name for m in spec.params.models] == ["llama-3.2-1b"] and spec.params.tasks == ("factual",)
    assert spec.params.batch_sizes == (1, 4) and spec.params.prompts == 5
    assert spec.dvfs is not None and spec.dvfs.sweep == (1410,)
    manifest = json.loads((tmp_path / "study" / "manifest.json").read_text())
    assert manifest["by"] == "model-task-clock" and len(manifest["points"]) == 12


def test_by_model_task_keeps_the_sweep_in_each_point(tmp_path: Path) -> None:
    points = split(str(written(tmp_path)), tmp_path / "study", by="model-task")
    assert len(points) == 4 and all(p["sm_clock_mhz"] is None for p in points)
    spec = load_job_spec(point_file(tmp_path / "study", 3))
    assert spec.dvfs is not None and spec.dvfs.sweep == (900, 1410, 1980)


def test_what_cannot_be_split_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="sm_clocks: all is resolved by each node's gpuprofd"):
        split(str(written(tmp_path, SPEC.replace("[900, 1410, 1980]", "all"))), tmp_path / "a")
    with pytest.raises(UsageError, match="a study splits an llm job; this is a burn job"):
        split(str(written(tmp_path, "workload: burn\nburn: {seconds: 1}\n")), tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    with pytest.raises(UsageError, match=r"no readable manifest\.json"):
        gather(tmp_path)
