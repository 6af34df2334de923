"""An llm job's requests table: each request's share of its batch's energy, times and flags, by the rule."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from gpuprof.daemon.analysis import requests
from gpuprof.daemon.analysis.requests import HeldPower, llm_result, point_summaries, request_rows
from gpuprof.daemon.analysis.windows import windows
from gpuprof.daemon.markers import Marker
from gpuprof.sampler.energy import COUNTER_DELAY_NS
from gpuprof.sampler.records import DRIVER_POWER_DTYPE, ENERGY_DTYPE, MISSING_POWER, SAMPLE_DTYPE

MS = 1_000_000


def trace(watts: list[tuple[int, float]], end_ms: int, clock_mhz: int = 1500) -> np.ndarray:
    """1 kHz samples of GPU 0 whose power steps to each (ms, W) from that ms on."""
    t = np.arange(0, end_ms) * MS
    samples = np.zeros(t.size, dtype=SAMPLE_DTYPE)
    samples["t_ns"] = t
    for start_ms, w in watts:
        samples["power_mw"][t >= start_ms * MS] = int(w * 1000)
    samples["sm_clock_mhz"] = clock_mhz
    return samples


def counter(samples: np.ndarray, every_ms: int = 100) -> np.ndarray:
    """Energy counter readings consistent with the held power of ``samples``, as the sampler keeps them: the
    counter refreshes every ``every_ms`` and shows each refresh COUNTER_DELAY_NS later; a read 1 ms before
    and one 1 ms after each shows."""
    held = HeldPower(samples, 0)
    ticks = np.arange(every_ms, int(samples["t_ns"][-1]) // MS, every_ms) * MS
    shown = ticks + COUNTER_DELAY_NS
    times = np.stack([shown - MS, shown + MS], axis=1).ravel()
    values = np.stack([np.concatenate([[0], ticks[:-1]]), ticks], axis=1).ravel()
    energy = np.zeros(times.size, dtype=ENERGY_DTYPE)
    energy["t_start_ns"] = times
    energy["t_end_ns"] = times
    energy["energy_mj"] = [round(held.energy(0, int(t))[0] * 1000) if t else 0 for t in values]
    return energy


def mk(marker_kind: str, name: str, ms: float, /, **attrs: Any) -> Marker:
    return Marker(marker_kind, name, int(ms * MS), attrs)


def batch_markers(
    batch: str, t0: float, tokenize: float, prefill: float, decode: float, steps: int
) -> list[Marker]:
    t1, t2, t3 = t0 + tokenize, t0 + tokenize + prefill, t0 + tokenize + prefill + decode
    return [
        mk("begin", "batch", t0, id=batch),
        mk("begin", "tokenize", t0, id=batch),
        mk("end", "tokenize", t1, id=batch),
        mk("begin", "prefill", t1, id=batch),
        mk("end", "prefill", t2, id=batch),
        mk("begin", "decode", t2, id=batch),
        mk("end", "decode", t3, id=batch, steps=steps),
        mk("end", "batch", t3, id=batch),
    ]


def request(batch: str, index: int, ms: float, chars: int, tokens_in: int, tokens_out: int) -> Marker:
    return mk(
        "event", "request", ms, id=batch, point="p0", rep=0, index=index, prompt_id=f"q{index}",
        kind="extractive", input_tokens=tokens_in, output_tokens=tokens_out, input_chars=chars,
        token_entropy_bits=2.0, entity_density=0.1, quality=0.5, quality_metric="f1", output="Paris",
    )  # fmt: skip


def job_markers() -> list[Marker]:
    """One point of two requests in one batch: tokenize 10 ms, prefill 200 ms, decode 400 ms (4 steps)."""
    return [
        mk("begin", "load", 0, id="m0", model="llama-3.2-1b"),
        mk("end", "load", 100, id="m0", model_source="arch", weights="synthetic"),
        mk("begin", "point", 100, id="p0", model="llama-3.2-1b", task="qa", batch_size=2),
        *batch_markers("p0.r0.b0", 1000, 10, 200, 400, 4),
        request("p0.r0.b0", 0, 1611, chars=30, tokens_in=10, tokens_out=5),
        request("p0.r0.b0", 1, 1611, chars=90, tokens_in=30, tokens_out=5),
        mk("end", "point", 1700, id="p0"),
    ]


def test_held_power_integrates_the_step_function() -> None:
    held = HeldPower(trace([(0, 100.0), (500, 300.0)], 2000), 0)
    assert held.energy(0, 500 * MS)[0] == pytest.approx(50.0)
    assert held.energy(400 * MS, 600 * MS)[0] == pytest.approx(10.0 + 30.0)
    joules, bound = held.energy(1000 * MS, 1100 * MS)
    assert joules == pytest.approx(30.0) and bound == pytest.approx(300.0 * 0.1)  # one update stale per edge
    assert held.median_clock(0, 2000 * MS) == 1500


def test_missing_power_readings_are_held_over() -> None:
    samples = trace([(0, 100.0)], 1000)
    samples["missing"][200:400] = MISSING_POWER
    samples["power_mw"][200:400] = 0
    assert HeldPower(samples, 0).energy(0, 999 * MS)[0] == pytest.approx(99.9)


def test_requests_share_their_batch_energy_by_the_documented_rule() -> None:
    markers = job_markers()
    samples = trace([(0, 100.0), (1010, 400.0), (1210, 200.0), (1610, 100.0)], 3000)
    rows = request_rows(markers, windows(markers), HeldPower(samples, 0), simulated=True)
    assert [r["prompt_id"] for r in rows] == ["q0", "q1"]
    first, second = rows
    # tokenize 10 ms at 100 W = 1 J, by characters (1/4, 3/4); prefill 200 ms at 400 W = 80 J by input
    # tokens (1/4, 3/4); decode 400 ms at 200 W = 80 J by output tokens (1/2, 1/2).
    assert first["prefill_energy_j"] == pytest.approx(20.0) and second["prefill_energy_j"] == pytest.approx(
        60.0
    )
    assert first["decode_energy_j"] == pytest.approx(40.0) and second["decode_energy_j"] == pytest.approx(
        40.0
    )
    assert first["energy_j"] == pytest.approx(0.25 + 20 + 40) and second["energy_j"] == pytest.approx(
        0.75 + 60 + 40
    )
    assert first["energy_j"] + second["energy_j"] == pytest.approx(161.0)  # nothing lost or counted twice
    assert first["j_per_token"] == pytest.approx(first["energy_j"] / 15)
    assert first["ttft_s"] == pytest.approx(0.210) and first["tpot_s"] == pytest.approx(0.1)
    assert first["latency_s"] == pytest.approx(0.610) and first["decode_s"] == pytest.approx(0.4)
    assert first["short_window"] is False and first["simulated"] is True
    assert first["model"] == "llama-3.2-1b" and first["task"] == "qa" and first["batch_size"] == 2
    assert first["model_source"] == "arch" and first["observed_sm_clock_mhz"] == 1500
    assert first["token_entropy"] == 2.0 and first["quality"] == 0.5 and first["output"] == "Paris"


def test_a_prefill_shorter_than_a_sensor_update_is_flagged() -> None:
    markers = [*batch_markers("b", 100, 1, 20, 400, 4), request("b", 0, 600, 10, 10, 5)]
    rows = request_rows(markers, windows(markers), HeldPower(trace([(0, 100.0)], 1000), 0), simulated=False)
    assert rows[0]["short_window"] is True


def test_the_llm_section_summarises_points_and_steady_state() -> None:
    markers = [
        *job_markers(),
        mk("begin", "steady_prefill", 2000, id="m0.bs2", batch_size=2, context_tokens=256),
        mk("end", "steady_prefill", 4000, id="m0.bs2", tokens=40_000),
        mk("begin", "steady_decode", 4000, id="m0.bs2.s0", batch_size=2, context_tokens=256),
        mk("end", "steady_decode", 6000, id="m0.bs2.s0", tokens=200),
    ]
    samples = trace([(0, 100.0), (2000, 500.0), (4000, 250.0), (6000, 100.0)], 7000)
    rows, section = llm_result(markers, windows(markers), samples, counter(samples), 0, simulated=False)
    assert len(rows) == 2 and section["requests"] == 2
    (point,) = section["points"]
    assert point["requests"] == 2 and point["batches"] == 1 and point["output_tokens"] == 10
    assert point["output_tokens_per_s"] == pytest.approx(10 / 0.61)
    steady = {s["phase"]: s for s in section["steady_state"]}
    assert steady["prefill"]["j_per_token"] == pytest.approx(1000.0 / 40_000, rel=0.01)  # 2 s at 500 W
    assert steady["decode"]["j_per_token"] == pytest.approx(500.0 / 200, rel=0.01)  # 2 s at 250 W
    assert steady["prefill"]["energy_source"] == "counter"
    assert 0 < steady["decode"]["j_per_token_uncertainty"] < 0.1 * steady["decode"]["j_per_token"]


def test_the_driver_power_reaches_every_fused_estimate_of_the_llm_section(
    fused_driver_power: Callable[..., list[np.ndarray | None]],
) -> None:
    markers = [
        *job_markers(),
        mk("begin", "steady_decode", 2000, id="m0.bs2.s0", batch_size=2, context_tokens=256),
        mk("end", "steady_decode", 4000, id="m0.bs2.s0", tokens=200),
    ]
    samples = trace([(0, 100.0), (2000, 250.0), (4000, 100.0)], 5000)
    driver_power = np.zeros(250, DRIVER_POWER_DTYPE)
    driver_power["t_ns"] = np.arange(250) * 20 * MS
    driver_power["power_mw"] = samples["power_mw"][::20]
    seen = fused_driver_power(requests)
    energy = counter(samples)
    _, section = llm_result(
        markers, windows(markers), samples, energy, 0, simulated=False, driver_power=driver_power
    )
    assert section["steady_state"] and len(seen) == 2  # the requests' (HeldPower) and the steady windows'
    assert all(given is driver_power for given in seen)


def test_a_compiled_model_names_each_batch_sizes_mode_and_the_modes_it_tried() -> None:
    trials = "default 1.746 ms a step; max-autotune-no-cudagraphs 1.495 ms a step"
    markers = [
        *job_markers()[:2],
        mk("begin", "compile", 100, id="m0.bs1", batch_size=1),
        mk(
            "end",
            "compile",
            150,
            id="m0.bs1",
            compile_mode="max-autotune-no-cudagraphs (batch 1)",
            cuda_graphs="captured by hand",
            trials=trials,
        ),
        mk("begin", "compile", 150, id="m0.bs8", batch_size=8, trials=["not", "text"]),
        mk(
            "end",
            "compile",
            160,
            id="m0.bs8",
            cuda_graphs="captured by hand",
            compile_mode="max-autotune-no-cudagraphs (batch 1); default (batch 8)",
        ),
        *job_markers()[2:],
    ]
    samples = trace([(0, 100.0)], 2000)
    _, section = llm_result(markers, windows(markers), samples, counter(samples), 0, simulated=False)
    (model,) = section["models"]
    assert model["compile_mode"] == "max-autotune-no-cudagraphs (batch 1); default (batch 8)"  # the last
    assert model["compile_trials"] == {"1": trials}  # batch 8's is not text: left out


def test_a_point_below_the_top_clock_under_a_power_cap_is_marked_capped() -> None:
    from gpuprof.daemon.analysis.sweep import mark_capped

    markers = job_markers()
    samples = trace([(0, 690.0)], 3000, clock_mhz=1665)
    samples["clock_event_reasons"][1000:1700] = 0x4  # sw_power_cap while the point ran
    _, section = llm_result(markers, windows(markers), samples, counter(samples), 0, simulated=False)
    (point,) = section["points"]
    mark_capped(section["points"], windows(markers), HeldPower(samples, 0), top_mhz=1980)
    assert point["capped"] is True and "sw_power_cap" in point["clock_event_reasons"]
    mark_capped(section["points"], windows(markers), HeldPower(samples, 0), top_mhz=1680)
    assert point["capped"] is False  # within 30 MHz of the clock it could run at
    samples["clock_event_reasons"][:] = 0
    mark_capped(section["points"], windows(markers), HeldPower(samples, 0), top_mhz=1980)
    assert point["capped"] is False  # below the top clock, but not held there by a cap


def engine_timed_rows(timings: list[tuple[int, int, int]], inputs: list[int]) -> list[dict[str, Any]]:
    """Rows of one batch of requests that vLLM timed: (scheduled, first token, last token) ms each, 5 output
    tokens each, the call at 1000 ms and tokenization to 1010 ms, at 200 W throughout."""
    batch = "p0.r0.b0"
    end = max(t[2] for t in timings)
    markers = [
        mk("begin", "load", 0, id="m0", model="llama-3.2-1b"),
        mk("end", "load", 100, id="m0", model_source="arch", weights="synthetic", engine="vllm"),
        mk("begin", "point", 100, id="p0", model="llama-3.2-1b", task="qa", batch_size=2),
        mk("begin", "batch", 1000, id=batch),
        *batch_markers(
            batch, 1000, 10, max(t[1] for t in timings) - 1010, end - max(t[1] for t in timings), 4
        )[1:-1],
        mk("end", "batch", end + 10, id=batch),
    ]
    for index, ((scheduled, first, last), tokens_in) in enumerate(zip(timings, inputs, strict=True)):
        event = request(batch, index, end + 10, chars=40, tokens_in=tokens_in, tokens_out=5)
        event.attrs.update(scheduled_ns=scheduled * MS, first_token_ns=first * MS, last_token_ns=last * MS)
        markers.append(event)
    markers.append(mk("end", "point", end + 20, id="p0"))
    rows = request_rows(markers, windows(markers), HeldPower(trace([(0, 200.0)], 3000), 0), simulated=False)
    (point,) = point_summaries(rows, windows(markers))
    assert point["output_tokens_per_s"] == pytest.approx(10 / ((end - 1000) / 1e3))  # as its slowest request
    assert all(r["engine"] == "vllm" for r in rows)
    return rows


def test_engine_timed_requests_pay_their_own_phases_across_scheduler_rounds() -> None:
    """Two scheduler rounds of one call (max_num_seqs 1): a runs 1010-1310 ms (first token 1110), b waits,
    then runs 1310-1560 ms (first token 1360). Nothing is lost or counted twice."""
    a, b = engine_timed_rows([(1010, 1110, 1310), (1310, 1360, 1560)], [20, 20])
    assert a["prefill_energy_j"] == pytest.approx(20.0) and a["decode_energy_j"] == pytest.approx(40.0)
    assert b["prefill_energy_j"] == pytest.approx(10.0) and b["decode_energy_j"] == pytest.approx(40.0)
    assert a["energy_j"] + b["energy_j"] == pytest.approx(2.0 + 110.0)  # tokenize 10 ms, then 550 ms at 200 W
    assert (a["ttft_s"], b["ttft_s"]) == pytest.approx((0.110, 0.360))  # from the call, waiting included
    assert (a["latency_s"], b["latency_s"]) == pytest.approx((0.310, 0.560))
    assert (a["tpot_s"], b["tpot_s"]) == pytest.approx((0.050, 0.050))  # 4 steps after the first token
    assert a["prefill_s"] == pytest.approx(0.100) and b["decode_s"] == pytest.approx(0.200)


def test_engine_timed_requests_working_together_share_by_the_tokens_each_processes() -> None:
    """One round: both prefill 1010-1110 ms (20 and 60 input tokens: 1:3 of 20 J); both decode until
    1210 ms, where b ends (4 tokens in 100 ms against a's 2 of its 4 in 200 ms: 1:2 of 20 J); a decodes
    alone to 1310 ms (20 J)."""
    a, b = engine_timed_rows([(1010, 1110, 1310), (1010, 1110, 1210)], [20, 60])
    assert (a["prefill_energy_j"], b["prefill_energy_j"]) == pytest.approx((5.0, 15.0))
    assert (a["decode_energy_j"], b["decode_energy_j"]) == pytest.approx((20.0 / 3 + 20.0, 40.0 / 3))
    assert (a["tpot_s"], b["tpot_s"]) == pytest.approx((0.050, 0.025))


def test_engine_timed_requests_of_one_point_share_each_instant_whatever_their_ids() -> None:
    """As a program marks vLLM's outputs one by one (each its own id): two requests run together 1000-1200
    ms (both decoding), then the GPU idles until a third runs alone 1500-1600 ms. The idle gap is nobody's."""
    markers = [
        mk("begin", "point", 900, id="p0"),
        *[
            mk("event", "request", 1700, id=f"r{i}", point="p0", input_tokens=10, output_tokens=11,
               scheduled_ns=s * MS, first_token_ns=(s + 10) * MS, last_token_ns=e * MS)
            for i, (s, e) in enumerate([(1000, 1200), (1000, 1200), (1500, 1600)])
        ],
        mk("end", "point", 1800, id="p0"),
    ]  # fmt: skip
    rows = request_rows(markers, windows(markers), HeldPower(trace([(0, 200.0)], 3000), 0), simulated=False)
    energies = [r["energy_j"] for r in rows]
    assert energies == pytest.approx([20.0, 20.0, 20.0])  # 200 ms at 200 W shared by two; 100 ms alone
    assert sum(energies) == pytest.approx(60.0)  # not 2 x 40 J + 20 J, and not the 300 ms idle gap


def test_a_steady_phases_windows_so_far_give_energy_per_token_and_a_t_interval() -> None:
    from gpuprof.daemon.analysis.sweep import steady_energy

    samples = trace([(0, 200.0), (1000, 400.0)], 2100)
    held = HeldPower(samples, 0, counter(samples))
    markers: list[Marker] = []
    for n, (t0, tokens) in enumerate([(0, 100), (500, 100), (1000, 400), (1500, 400)]):  # 100, 100, 200, 200
        markers += [mk("begin", "steady_decode", t0, id=f"m0.bs1.p2.s{n}"),
                    mk("end", "steady_decode", t0 + 500, id=f"m0.bs1.p2.s{n}", tokens=tokens)]  # fmt: skip
    markers += [mk("begin", "steady_prefill", 0, id="m0.bs1.p2.s0"),
                mk("end", "steady_prefill", 900, id="m0.bs1.p2.s0", tokens=1)]  # another phase  # fmt: skip
    figures = steady_energy(markers, held, "m0.bs1.p2", "steady_decode")
    per_token = np.array([1.0, 1.0, 0.5, 0.5])  # J per token of each window
    assert figures["ok"] and figures["windows"] == 4
    assert figures["mean_j_per_token"] == pytest.approx(0.75, rel=0.02)
    assert figures["ci95_j_per_token"] == pytest.approx(3.1824 * per_token.std(ddof=1) / 2, rel=0.05)
    assert steady_energy(markers, held, "m0.bs1.p9", "steady_decode")["windows"] == 0
    assert steady_energy(markers, held, "m0.bs1.p2", "decode")["ok"] is False


def test_back_to_back_steady_windows_are_bounded_as_one_span() -> None:
    from gpuprof.daemon.analysis.requests import steady_summaries

    samples = trace([(0, 150.0), (300, 450.0), (700, 250.0)], 2200)
    energy = counter(samples)

    def phase(bounds: list[tuple[int, int]]) -> dict[str, Any]:
        markers: list[Marker] = [mk("begin", "load", 0, id="m0", model="tiny"), mk("end", "load", 1, id="m0")]
        for n, (t0, t1) in enumerate(bounds):
            markers += [mk("begin", "steady_decode", t0, id=f"m0.bs1.s{n}"),
                        mk("end", "steady_decode", t1, id=f"m0.bs1.s{n}", tokens=(t1 - t0))]  # fmt: skip
        (summary,) = steady_summaries(windows(markers), samples, energy, 0)
        return summary

    whole = phase([(250, 1850)])
    quarters = phase([(250, 650), (650, 1050), (1050, 1450), (1450, 1850)])
    assert quarters["windows"] == 4 and quarters["j_per_token_ci95"] > 0  # the load changes between them
    assert quarters["j_per_token"] == pytest.approx(whole["j_per_token"], rel=1e-3)
    assert quarters["j_per_token_uncertainty"] == pytest.approx(whole["j_per_token_uncertainty"], rel=1e-3)
    apart = phase([(250, 650), (1450, 1850)])  # two spans: each has its own edges
    assert apart["j_per_token_uncertainty"] > 0
