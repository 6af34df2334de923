"""An llm job's text result: points, steady state and a clock sweep, with capped points flagged."""

from __future__ import annotations

import socket
import threading

import msgpack
import pytest

from gpuprof.client.llm_render import render_llm, render_sweep
from gpuprof.daemon.markers import MarkerChannelError
from gpuprof.daemon.server.markers import MarkerReader
from gpuprof.daemon.worker.markers import MarkerWriter

SWEEP = {
    "points": [
        {"model": "m", "task": "qa", "batch_size": 8, "sm_clock_mhz": 1980, "observed_sm_clock_mhz": 1725,
         "observed_sm_clock_p5_p95_mhz": [1710, 1740], "clock_event_reasons": ["sw_power_cap"],
         "flagged": True,
         "energy_j": 21.5, "energy_j_ci95": 1.2, "latency_s": 0.13, "edp_js": 2.8},
        {"model": "m", "task": "qa", "batch_size": 8, "sm_clock_mhz": 1005, "observed_sm_clock_mhz": 1005,
         "observed_sm_clock_p5_p95_mhz": [1005, 1005], "clock_event_reasons": [], "flagged": False,
         "energy_j": 18.0, "energy_j_ci95": 0.9, "latency_s": 0.2, "edp_js": 3.6},
    ],
    "energy_optimal_mhz": 1005, "edp_optimal_mhz": 1005, "flagged_points": 1,
    "clock_tolerance": "max(30 MHz, 2% of the clock)",
}  # fmt: skip


def test_a_sweep_lists_points_by_clock_and_flags_the_capped_one() -> None:
    lines = render_sweep(SWEEP, simulated=True)
    assert lines[0].startswith("  clock sweep (SIMULATED): 2 points, 1 flagged")
    rows = [line for line in lines if line.strip().startswith("m ")]
    assert rows[0].split()[3] == "1005" and rows[1].split()[3] == "1980"  # sorted by clock
    assert rows[1].rstrip().endswith("FLAGGED sw_power_cap") and "FLAGGED" not in rows[0]
    assert "energy-optimal 1005 MHz, EDP-optimal 1005 MHz" in lines[-1]
    assert render_sweep({}, simulated=False) == []


def test_a_burn_sweep_shows_each_clock_per_operation_in_millijoules() -> None:
    point = {"kind": "matmul", "size": 8192, "unit": "operation", "sm_clock_mhz": 1140,
             "observed_sm_clock_mhz": 1140, "observed_sm_clock_p5_p95_mhz": [1140, 1140],
             "clock_event_reasons": [], "flagged": False, "energy_j": 0.80176, "energy_j_ci95": 0.0105,
             "latency_s": 0.0019308, "edp_js": 0.80176 * 0.0019308}  # fmt: skip
    search = {"id": "burn", "objective": "energy", "grid": 31, "best_mhz": 1140, "measured": [915, 1140]}
    lines = render_sweep({"points": [point], "searches": [search], "energy_optimal_mhz": 1140}, False)
    assert lines[1].split()[:2] == ["KIND", "SIZE"] and "mJ/OP" in lines[1] and "ms/OP" in lines[1]
    assert lines[2].split() == ["matmul", "8192", "1140", "1,140", "1,140-1,140", "801.76", "10.50",
                                "1.9308", "1,548.038"]  # fmt: skip
    assert "summed over kind x size" in lines[3]
    assert lines[4].strip() == "energy search burn: best 1140 MHz, 2 of 31 clocks measured"
    # With its window's bound and method, as the job's result gives them: each stated beside the figure.
    bounded = {**point, "energy_j_bound": 0.0043, "energy_method": "fused counter and power"}
    lines = render_sweep({"points": [bounded], "energy_optimal_mhz": 1140}, False)
    assert "± BOUND" in lines[1] and lines[2].split()[5:8] == ["801.76", "10.50", "4.30"]
    assert lines[3].strip() == "energy by fused counter and power"


def test_a_steady_figure_from_one_window_says_its_plus_minus_is_the_bound() -> None:
    steady = {"prefill_j_per_token": 0.97442, "prefill_j_per_token_ci95": 0.0149,
              "decode_j_per_token": 38.57192, "decode_j_per_token_uncertainty": 0.20736}  # fmt: skip
    point = {**SWEEP["points"][1], **steady}
    lines = render_sweep({"points": [point]}, simulated=False)
    row = next(line for line in lines if line.strip().startswith("m "))
    assert "974.42 ± 14.90" in row and "38,571.92 ± 207.36*" in row
    assert any("*: ± the one window's bound" in line for line in lines)


def test_an_llm_section_that_failed_says_so() -> None:
    assert render_llm({"error": "requests table not built: ValueError: x"}, False) == [
        "  requests: requests table not built: ValueError: x"
    ]


def test_a_clock_request_waits_for_the_daemons_answer() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    writer = MarkerWriter(theirs.detach())
    reader = MarkerReader(ours)

    def daemon(answer: dict[str, object]) -> None:
        marker = next(iter(reader))
        assert (marker.kind, marker.name) == ("event", "dvfs")
        ours.send(msgpack.packb({**answer, "asked": marker.attrs["sm_clock_mhz"]}))

    thread = threading.Thread(target=daemon, args=({"ok": True, "sm_clock_mhz": 1410},))
    thread.start()
    assert writer.set_clocks(1410)["asked"] == 1410
    thread.join()
    thread = threading.Thread(
        target=daemon, args=({"ok": False, "error": "not among the job's sweep clocks"},)
    )
    thread.start()
    with pytest.raises(MarkerChannelError, match="clock change refused: not among the job's sweep clocks"):
        writer.set_clocks(1413)
    thread.join()
    with pytest.raises(MarkerChannelError, match="no answer from gpuprofd"):
        writer.set_clocks(None, timeout_s=0.05)
    writer.close()
    reader.close()


def test_a_model_line_names_its_engine_and_a_decode_row_its_share_of_the_bandwidth_bound() -> None:
    section = {
        "models": [{"model": "llama-3.2-1b", "weights": "synthetic", "architecture": "LlamaForCausalLM",
                    "parameters": 1.2e9, "dtype": "bfloat16", "tokenizer": "t", "load_s": 2.0,
                    "engine": "compiled", "compile_mode": "reduce-overhead",
                    "kv_cache": "static, 640 positions",
                    "torch_version": "2.11.0", "transformers_version": "5.17.0"}],
        "steady_state": [{"id": "m0.bs1", "phase": "decode", "seconds": 5.0, "tokens": 3100,
                          "tokens_per_s": 620.0, "bandwidth_bound_share": 0.52, "j_per_token": 0.4,
                          "j_per_token_uncertainty": 0.004, "energy_source": "counter", "mean_power_w": 250.0,
                          "observed_sm_clock_mhz_median": 1980}],
    }  # fmt: skip
    text = "\n".join(render_llm(section, False))
    assert "engine compiled (reduce-overhead mode, static, 640 positions KV cache); torch 2.11.0" in text
    assert "OF BOUND" in text and " 0.52 " in text and "memory-bandwidth bound" in text
    eager = "\n".join(render_llm({"models": [{"model": "m", "parameters": 1}]}, False))
    assert "engine eager;" in eager  # a job from before engines ran eager generate


def test_a_vllm_model_line_names_its_version_kv_cache_and_attention_backend() -> None:
    model = {"model": "mistral-7b-v0.1", "parameters": 7.2e9, "engine": "vllm", "vllm_version": "0.32.0",
             "torch_version": "2.13.0", "kv_cache_bytes": 2**31, "max_num_seqs": 8,
             "attention": "FLASH_ATTN"}  # fmt: skip
    text = "\n".join(render_llm({"models": [model]}, False))
    assert "engine vllm (KV cache 2 GiB, up to 8 sequences at once, prefix caching off)" in text
    assert "attention FLASH_ATTN; vllm 0.32.0, torch 2.13.0" in text


def test_swept_points_read_in_the_order_of_their_lock_beside_what_was_observed() -> None:
    def point(mhz: int | None, observed: int, capped: bool = False) -> dict[str, object]:
        return {"model": "tiny", "task": "qa", "batch_size": 1, "requests": 4, "sm_clock_mhz": mhz,
                "observed_sm_clock_mhz_median": observed, "capped": capped,
                "clock_event_reasons": ["sw_power_cap"] if capped else [], "quality_mean": 0.0,
                "quality_metric": "f1"}  # fmt: skip

    section = {
        "models": [{"model": "tiny", "weights": "synthetic (random, made on the device)"}],
        "points": [point(1980, 1725, capped=True), point(600, 600), point(1800, 1725, capped=True)],
        "energy_method": "fused",
    }
    lines = render_llm(section, simulated=True)
    header = next(line for line in lines if "MODEL" in line).split()
    assert header[-2:] == ["MHz", "OBSERVED"] or header[-4:] == ["LOCK", "MHz", "OBSERVED", "MHz"]
    rows = [line.split() for line in lines if line.strip().startswith("tiny ")]
    assert [(row[-2], row[-1]) for row in rows] == [("600", "600"), ("1,800", "1,725"), ("1,980", "1,725")]
    assert all("synthetic" in " ".join(row) for row in rows) and "0.000" not in " ".join(lines)
    assert any("their quality measures nothing" in line for line in lines)
    assert any("J/TOK: that over the request's input and output tokens" in line for line in lines)
    assert any("below its 1,980 MHz lock, under sw_power_cap" in line for line in lines)
    unlocked = render_llm({**section, "points": [point(None, 1725, capped=True)]}, simulated=True)
    assert any("below the GPU's top clock" in line for line in unlocked)
    assert not any("LOCK" in line for line in unlocked)


def test_a_phase_clock_pairs_point_shows_both_clocks_it_asked_for() -> None:
    single = {"model": "tiny", "task": "qa", "batch_size": 4, "requests": 8, "sm_clock_mhz": 900,
              "observed_sm_clock_mhz_median": 900}  # fmt: skip
    pair = {**single, "sm_clock_mhz": None, "prefill_clock_mhz": 1710, "decode_clock_mhz": 600,
            "observed_sm_clock_mhz_median": 600}  # fmt: skip
    lines = render_llm({"models": [], "points": [pair, single], "energy_method": "fused"}, simulated=True)
    rows = [line.split() for line in lines if line.strip().startswith("tiny ")]
    assert [(row[-2], row[-1]) for row in rows] == [("900", "900"), ("1,710/600", "600")]
    assert any("LOCK" in line for line in lines)
