"""Phase-aware clocks on the simulated GPU: the example's pairs, the lock switched at each phase edge, each
switch's latency the simulated GPU's, the GPU reset at the end, the optimum reported with its interval."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import yaml
from daemon_harness import DaemonProcess, RawClient
from test_clock_control import locked, start
from test_daemon import FINAL, submit, wait_state

from gpuprof.sampler.sim import GpuSpec, SimConfig, SimulatedNvml

pytest.importorskip("torch", reason="LLM jobs need torch (pip install '.[test]')")

EXAMPLE = Path(__file__).parents[2] / "examples" / "phase-sim.yaml"
# Not the default 20 ms: the switches must follow the configured latency. Short, so that the lock switched
# back as a decode ends holds before the next prefill (a tiny model's is a few ms on the simulated GPU).
LATENCY_US = 5_000


def example_spec() -> dict[str, Any]:
    """The example, its input features by the heuristic (no spaCy) and one warmup request."""
    spec = yaml.safe_load(EXAMPLE.read_text())
    spec["llm"].update(warmup_requests=1, ner="heuristic")
    spec["timeout_s"] = 900
    return spec


def test_the_examples_pairs_switch_at_phase_edges_and_the_optimum_is_reported(
    tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    sim = SimulatedNvml()
    gpu = GpuSpec(clock_lock_latency_us=LATENCY_US)
    sim.configure(SimConfig(gpus=(gpu,), allow_unprivileged_control=True))
    client = RawClient(start(daemons, tmp_path, "allow_dvfs = true\n").endpoint)
    spec = example_spec()
    done = wait_state(client, submit(client, spec), FINAL, timeout_s=850)
    assert done["state"] == "succeeded", done.get("reason")
    assert done["simulated"]
    section = done["result"]["dvfs"]["phase_clocks"]
    assert section["simulated"]
    wanted = spec["dvfs"]["phase_clocks"]
    pairs = {(p["prefill_clock_mhz"], p["decode_clock_mhz"]): p for p in section["pairs"]}
    assert set(pairs) == {(p, d) for p in wanted["prefill"] for d in wanted["decode"]}
    for (prefill, decode), pair in pairs.items():
        # The clock sampled in each phase's windows is that phase's: the lock was switched at the edges.
        assert (pair["observed_prefill_clock_mhz"], pair["observed_decode_clock_mhz"]) == (prefill, decode)
        assert pair["decode_at_clock_share"] > 0.5 and not pair["flagged"]
        # The last switch back to the prefill clock is superseded by the point's reset before it holds.
        assert pair["switch"]["per_batch"] == 2 and pair["switch"]["unseen"] <= 1
        assert pair["energy_j"] > 0 and pair["energy_j_ci95"] is not None
        assert pair["latency_s"] > 0 and pair["latency_s_ci95"] is not None
    switches = section["switches"]
    batch_size = spec["llm"]["batch_sizes"][0]
    assert switches["switches"] == 2 * sum(p["requests"] // batch_size for p in pairs.values())
    # From the NVML call's return to the first 1 kHz sample at the new clock: the configured latency.
    assert LATENCY_US / 1e6 <= switches["settle_s"] <= LATENCY_US / 1e6 + 0.003
    assert switches["latency_s"] >= switches["settle_s"] and switches["energy_j"] > 0
    (comparison,) = section["comparisons"]
    assert comparison["reference_sm_clock_mhz"] == max(spec["dvfs"]["sm_clocks"])
    assert comparison["latency_budget"] == wanted["latency_budget"]
    assert comparison["phase_aware"] is not None and comparison["phase_aware"]["energy_j_ci95"] is not None
    assert comparison["single_clock"] is not None
    assert comparison["saving_j"] is not None and comparison["saving_j_ci95"] is not None

    calls = [c for c in sim.control_log() if c.result == 0]
    assert calls[-1].call == "nvmlDeviceResetGpuLockedClocks" and locked() is None  # reset at the end
    locks = [c.args[0] for c in calls if c.call == "nvmlDeviceSetGpuLockedClocks"]
    for prefill, decode in pairs:  # to decode's clock at a first token, back to prefill's as decode ends
        assert (decode, prefill) in set(itertools.pairwise(locks))
    client.close()
