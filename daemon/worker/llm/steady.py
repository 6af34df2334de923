"""Steady-state phases: prefill-only and decode-only repetitions back to back, long enough to measure.

A request's prefill lasts milliseconds, while the power sensor refreshes every ~100 ms and averages only
~25 ms of each period (NVML_FACTS.md): the energy of one short phase is poorly observed. Repeating one
kind of work for seconds gives an energy per token with a small stated uncertainty. Windows:
``steady_prefill`` (``tokens`` prompt tokens processed) and ``steady_decode`` (``tokens`` generated,
one per sequence a step, on a KV cache that starts at ``context_tokens``); docs/llm.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from gpuprof.client.wire.llm_spec import SteadyState

from ..markers import MarkerWriter
from .engine import LoadedModel, forward_accepts

SYNC_EVERY_STEPS = 8  # decode steps queued between two clock checks
WINDOWS = 4  # a phase's seconds are cut into this many back-to-back windows: their spread gives an interval


def context_ids(lm: Any, batch_size: int, tokens: int, corpus: list[str]) -> Any:
    """A [batch_size, tokens] tensor of real text's token ids, each row from a different offset (``lm``: a
    model under any engine, with its tokenizer and device)."""
    torch = lm.device.torch
    stream: list[int] = []
    text_index = 0
    while len(stream) < tokens + batch_size * 97:
        stream.extend(
            lm.tokenizer(corpus[text_index % len(corpus)] + "\n", add_special_tokens=False)["input_ids"]
        )
        text_index += 1
    rows = [stream[b * 97 : b * 97 + tokens] for b in range(batch_size)]
    return torch.tensor(rows, device=lm.device.device)


def run_prefill(
    lm: LoadedModel,
    ids: Any,
    steady: SteadyState,
    markers: MarkerWriter,
    window_id: str,
    clock: Callable[[], float] = time.monotonic,
    start: int = 0,
) -> int:
    """Prefill of ``ids`` again and again for ``steady.seconds``, in ``WINDOWS`` back-to-back
    ``steady_prefill`` windows (ids ``<window_id>.s<n>``, n from ``start``); returns the next n."""
    torch, device = lm.device.torch, lm.device
    keep = {"logits_to_keep": 1} if forward_accepts(lm.model, "logits_to_keep") else {}
    batch, width = (int(n) for n in ids.shape)
    device.busy()
    try:
        began = clock()
        deadline, share = began + steady.seconds, steady.seconds / WINDOWS
        window, reps = start, 0
        markers.begin("steady_prefill", id=f"{window_id}.s{start}", batch_size=batch, context_tokens=width)
        with torch.inference_mode():
            while True:
                started = clock()
                lm.model(input_ids=ids, use_cache=False, **keep)
                device.sync()
                device.stretch("prefill", clock() - started, batch * width, batch)
                reps += 1
                now = clock()
                if now >= deadline or now - began >= share:
                    name = f"{window_id}.s{window}"
                    markers.end("steady_prefill", id=name, repetitions=reps, tokens=reps * batch * width)
                    if now >= deadline:
                        return window + 1
                    window, reps, began = window + 1, 0, now
                    markers.begin(
                        "steady_prefill", id=f"{window_id}.s{window}", batch_size=batch, context_tokens=width
                    )
    finally:
        device.idle()
    return window + 1  # not reached: the loop returns


def _cache_of(out: Any) -> Any:
    """The KV cache a forward returned (``cache`` since transformers 5.x, ``past_key_values`` before)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def _cut(past: Any, tokens: int) -> bool:
    """Drops the last ``tokens`` of a KV cache; False where its layers cannot (sliding-window caches)."""
    try:
        past.crop(-tokens)
    except (ValueError, NotImplementedError, AttributeError, TypeError):
        return False
    return True


def run_decode(
    lm: LoadedModel,
    ids: Any,
    steady: SteadyState,
    markers: MarkerWriter,
    window_id: str,
    clock: Callable[[], float] = time.monotonic,
    start: int = 0,
) -> int:
    """Decode steps back to back for ``steady.seconds``, in ``steady_decode`` windows (ids
    ``<window_id>.s<n>``, n from ``start``; returns the next n).

    The KV cache starts at the context; after ``steady.decode_tokens`` steps it is cut back to the context
    (no prefill inside the window). A cache that cannot be cut is rebuilt by a prefill between two
    windows instead (ids ``<window_id>.s<n>``), as is the compiled engine's static cache.
    """
    if lm.decoder is not None:
        return _run_decode_compiled(lm, ids, steady, markers, window_id, clock, start)
    torch, device = lm.device.torch, lm.device
    keep = {"logits_to_keep": 1} if forward_accepts(lm.model, "logits_to_keep") else {}
    cache_kw = (
        "cache" if forward_accepts(lm.model, "cache") else "past_key_values"
    )  # renamed in transformers 5
    batch, width = (int(n) for n in ids.shape)
    deadline = clock() + steady.seconds
    segment = start
    with torch.inference_mode():
        while segment == start or clock() < deadline:
            out = lm.model(input_ids=ids, use_cache=True, **keep)
            past, first = _cache_of(out), out.logits[:, -1:].argmax(-1)
            croppable = hasattr(past, "crop")
            device.sync()
            name = f"{window_id}.s{segment}"
            steps = 0
            device.busy()
            try:
                markers.begin("steady_decode", id=name, batch_size=batch, context_tokens=width)
                token = first
                synced = began = clock()
                while True:
                    out = lm.model(input_ids=token, use_cache=True, **{cache_kw: past})
                    past, token = _cache_of(out), out.logits[:, -1:].argmax(-1)
                    steps += 1
                    if steps % steady.decode_tokens == 0:
                        croppable = croppable and _cut(past, steady.decode_tokens)
                        if not croppable:
                            break
                        token = first  # back to the context: the next steps repeat the same lengths
                    if steps % SYNC_EVERY_STEPS == 0:
                        device.sync()
                        device.stretch("decode", clock() - synced, SYNC_EVERY_STEPS, batch)
                        synced = clock()
                        if synced >= deadline:
                            break
                        if synced - began >= steady.seconds / WINDOWS:  # the next window, back to back
                            markers.end("steady_decode", id=name, steps=steps, tokens=steps * batch)
                            segment, steps, began = segment + 1, 0, synced
                            name = f"{window_id}.s{segment}"
                            markers.begin("steady_decode", id=name, batch_size=batch, context_tokens=width)
                device.sync()
                markers.end("steady_decode", id=name, steps=steps, tokens=steps * batch)
            finally:
                device.idle()
            segment += 1
            del past, out
    return segment


def _run_decode_compiled(
    lm: LoadedModel,
    ids: Any,
    steady: SteadyState,
    markers: MarkerWriter,
    window_id: str,
    clock: Callable[[], float],
    start: int = 0,
) -> int:
    """The compiled engine's steady decode: per window, a prefill of the context (outside it), then up to
    ``steady.decode_tokens`` compiled steps, until ``steady.seconds`` have passed."""
    torch, device, decoder = lm.device.torch, lm.device, lm.decoder
    batch, width = (int(n) for n in ids.shape)
    deadline = clock() + steady.seconds
    segment = start
    while segment == start or clock() < deadline:
        with torch.inference_mode():
            state = decoder.prefill(ids, torch.ones_like(ids))
        device.sync()
        name = f"{window_id}.s{segment}"
        steps = 0
        device.busy()
        try:
            markers.begin("steady_decode", id=name, batch_size=batch, context_tokens=width)
            synced = clock()
            while steps < steady.decode_tokens:
                count = min(SYNC_EVERY_STEPS, steady.decode_tokens - steps)
                with torch.inference_mode():
                    decoder.decode(state, count, stop_at_eos=False)
                steps += count
                device.sync()
                device.stretch("decode", clock() - synced, count, batch)
                synced = clock()
                if clock() >= deadline:
                    break
            markers.end("steady_decode", id=name, steps=steps, tokens=steps * batch)
        finally:
            device.idle()
        segment += 1
    return segment
