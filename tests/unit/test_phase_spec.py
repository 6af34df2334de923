"""dvfs.phase_clocks: (prefill, decode) SM clock pairs, listed or crossed, and what they refuse."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuprof.client.wire.jobspec import JobSpecKeyError, parse_job_spec

LLM = "workload: llm\nllm:\n  model: {arch: llama-3.2-1b-tiny}\n"
EXAMPLE = Path(__file__).parents[2] / "examples" / "phase-sim.yaml"


def error_of(text: str) -> str:
    with pytest.raises(JobSpecKeyError) as info:
        parse_job_spec(text, "job.yaml")
    return str(info.value)


def test_pairs_are_listed_or_every_prefill_clock_with_every_decode_clock() -> None:
    listed = parse_job_spec(LLM + "dvfs: {phase_clocks: {pairs: [[1980, 1200], [1410, 990]]}}\n").dvfs
    assert listed is not None and listed.phase_pairs == ((1980, 1200), (1410, 990))
    assert listed.phase_latency_budget == 1.1 and listed.is_sweep
    crossed = parse_job_spec(
        LLM + "dvfs:\n  sm_clocks: [1410]\n  phase_clocks: {prefill: [1980, 1410], decode: [990, 600], "
        "latency_budget: 1.5}\n"
    ).dvfs
    assert crossed is not None and crossed.sweep == (1410,)
    assert crossed.phase_pairs == ((1980, 990), (1980, 600), (1410, 990), (1410, 600))
    assert crossed.phase_latency_budget == 1.5


def test_the_pairs_survive_the_round_trip_through_plain_data() -> None:
    spec = parse_job_spec(LLM + "dvfs: {phase_clocks: {prefill: [1980], decode: [990, 600]}}\n")
    data = spec.to_dict()["dvfs"]
    assert data["phase_clocks"] == {"pairs": [[1980, 990], [1980, 600]], "latency_budget": 1.1}
    again = parse_job_spec(LLM + f"dvfs: {data}\n".replace("'", '"').replace("False", "false"))
    assert again.dvfs == spec.dvfs


def test_the_example_loads() -> None:
    spec = parse_job_spec(EXAMPLE.read_text(), str(EXAMPLE))
    assert spec.dvfs is not None and len(spec.dvfs.phase_pairs) >= 4 and spec.dvfs.sweep


@pytest.mark.parametrize(
    ("dvfs", "message"),
    [
        ("{phase_clocks: [[1980, 990]]}", "phase_clocks: must be a mapping with pairs, or prefill"),
        ("{phase_clocks: {}}", "give pairs: [[prefill, decode], ...], or prefill and decode lists"),
        ("{phase_clocks: {pairs: [[1980, 990]], decode: [600]}}", "give pairs"),
        ("{phase_clocks: {prefill: [1980]}}", "phase_clocks.decode: required with the other"),
        ("{phase_clocks: {pairs: [[1980]]}}", "pairs[0]: must be [prefill MHz, decode MHz]"),
        ("{phase_clocks: {pairs: [[1980, 0]]}}", "integers in [1, 10000], got [1980, 0]"),
        ("{phase_clocks: {pairs: [[1980, 1.5]]}}", "must be [prefill MHz, decode MHz]"),
        ("{phase_clocks: {pairs: [[1980, 990], [1980, 990]]}}", "pairs[1]: [1980, 990] is listed twice"),
        ("{phase_clocks: {pairs: []}}", "dvfs.phase_clocks.pairs: must list 1 to 256 items"),
        ("{phase_clocks: {prefill: [], decode: [990]}}", "phase_clocks.prefill: must list 1 to 256"),
        ("{phase_clocks: {prefill: [" + ", ".join(map(str, range(400, 420))) + "], decode: ["
         + ", ".join(map(str, range(500, 520))) + "]}}", "400 pairs; phase_clocks takes at most 256"),
        ("{phase_clocks: {pairs: [[1980, 990]], latency_budget: 0.9}}", "latency_budget: must be"),
        ("{phase_clocks: {pairs: [[1980, 990]], wait: 1}}", "dvfs.phase_clocks.wait: unknown key"),
        ("{sm_clocks: 1410, phase_clocks: {pairs: [[1980, 990]]}}", "give a sweep or leave it out"),
        ("{sm_clocks: [1410], search: energy, phase_clocks: {pairs: [[1980, 990]]}}", "leave out a search"),
        ("{sm_clock_range: [900, 1410], phase_clocks: {pairs: [[1980, 990]]}}", "leave out a range lock"),
    ],
)  # fmt: skip
def test_a_bad_phase_clocks_section_is_refused_with_its_key(dvfs: str, message: str) -> None:
    assert message in error_of(LLM + f"dvfs: {dvfs}\n")


def test_only_an_llm_job_with_live_phases_switches_at_their_edges() -> None:
    pairs = "dvfs: {phase_clocks: {pairs: [[1980, 990]]}}\n"
    assert "phase_clocks are for llm jobs" in error_of("workload: burn\nburn: {seconds: 10}\n" + pairs)
    vllm = LLM + "  engine: vllm\n" + pairs
    assert "vLLM's engine times its requests' phases after they ran" in error_of(vllm)
    compiled = parse_job_spec(LLM + "  engine: compiled\n" + pairs)
    assert compiled.dvfs is not None and compiled.dvfs.phase_pairs == ((1980, 990),)
