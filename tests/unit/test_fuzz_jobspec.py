"""Job specs under fuzzing: any text or data is a JobSpec, or one JobSpecKeyError that says where and what.

Inputs grow from the schema (docs/jobspec.md): valid burn and llm specs, with or without a dvfs section, are
mutated (keys dropped, renamed or added, values swapped for other types, huge strings, deep nesting, NaN,
negative and huge numbers), then read as YAML text, as submitted data, through YAML oddities (tags,
anchors and aliases, duplicate keys, tabs, several documents) and as files that are not UTF-8. Whatever
comes in, a user gets either a spec or a one-line error that starts with the file, names the line where
the input was YAML, and names the key path; nothing else escapes, and the same input always gives the
same outcome.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gpuprof.client.wire.dvfs_spec import DVFS_KEYS
from gpuprof.client.wire.jobspec import JobSpec, JobSpecKeyError, load_job_spec, parse_job_spec
from gpuprof.client.wire.llm_spec import ARCHS, LLM_KEYS, TASK_COLUMNS
from gpuprof.client.wire.spec_schema import KeyPath, format_path

SOURCE = "fuzz.yaml"
SUBMITTED = "<submitted spec>"
MAX_MESSAGE_CHARS = 1000  # one line a user reads; an error quotes at most a short part of what was given
MAX_QUOTED_KEY_CHARS = 200  # a key path this short must appear in the message whole
# Every key the schema knows, at any level: an error may name one that is missing from the input.
SCHEMA_KEYS = frozenset(
    {"name", "gpu", "workload", "timeout_s", "dvfs", "burn", "llm", "range", "latency_budget"}
    | {"seconds", "duty_cycle", "period_s", "kind", "size", "dtype", "warmup_s"}
    | set(LLM_KEYS)
    | set(DVFS_KEYS)
    | {"arch", "hf", "path", "revision", "file", "config", "split", "format", "columns"}
    | {column for columns in TASK_COLUMNS.values() for column in columns}
    | {"context_tokens", "decode_tokens"}
)

FUZZ = settings(
    max_examples=1000,  # each takes a few ms
    deadline=None,
    derandomize=True,  # CI sees the same examples on every run
    database=None,  # nothing written into the checkout; derandomize makes a failure reproducible anyway
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# -- valid specs, built from the schema ---------------------------------------------------------------

PATHS = st.sampled_from(
    ["/models/mine", "./models/mine", "models/mine", "~/models/mine", "~nosuchuser/models", "/m/../x"]
)
HF_IDS = st.sampled_from(["gpt2", "meta-llama/Llama-3.2-1B", "mistralai/Mistral-7B-v0.1"])
MODELS = st.one_of(
    st.sampled_from(ARCHS).map(lambda arch: {"arch": arch}),
    HF_IDS,
    st.builds(lambda hf, rev: {"hf": hf, "revision": rev}, HF_IDS, st.sampled_from(["main", "v1.0"])),
    PATHS.map(lambda path: {"path": path}),
    PATHS.filter(lambda path: path.startswith(("/", ".", "~"))),
)
DATASETS = st.one_of(
    st.just("builtin"),
    st.fixed_dictionaries(
        {"hf": st.sampled_from(["squad", "Rowan/hellaswag", "truthful_qa", "./data/local", "~/data"])},
        optional={"split": st.sampled_from(["validation", "train"]), "config": st.just("generation")},
    ),
    st.fixed_dictionaries(
        {"file": st.sampled_from(["/data/q.csv", "/data/q.jsonl", "data/q.parquet", "/data/q.txt"])},
        optional={
            "format": st.sampled_from(["jsonl", "csv", "parquet"]),
            "columns": st.fixed_dictionaries(
                {}, optional={"question": st.just("q"), "context": st.just("ctx.text"), "id": st.just("id")}
            ),
        },
    ),
)
STEADY = st.booleans() | st.fixed_dictionaries(
    {},
    optional={
        "seconds": st.floats(0.5, 10),
        "context_tokens": st.integers(1, 4096),
        "decode_tokens": st.integers(1, 512),
    },
)
LLM_OPTIONS = st.fixed_dictionaries(
    {},
    optional={
        "dtype": st.sampled_from(["bfloat16", "float16", "float32"]),
        "task": st.sampled_from(["qa", "commonsense", "factual"]),
        "dataset": DATASETS,
        "prompts": st.integers(1, 100),
        "shuffle": st.booleans(),
        "seed": st.integers(0, 2**32 - 1),
        "batch_sizes": st.integers(1, 64) | st.lists(st.integers(1, 64), min_size=1, max_size=4, unique=True),
        "max_input_tokens": st.integers(8, 4096),
        "max_new_tokens": st.integers(8, 64),
        "warmup_requests": st.integers(0, 8),
        "repetitions": st.integers(1, 5),
        "ci95_target": st.floats(0.01, 1),
        "steady_state": STEADY,
        "trust_remote_code": st.booleans(),
        "ner": st.sampled_from(["auto", "heuristic", "spacy:en_core_web_sm"]),
    },
)
GENERATION = st.one_of(  # keys that go together
    st.fixed_dictionaries({}, optional={"sampling": st.just("greedy"), "min_new_tokens": st.integers(0, 8)}),
    st.fixed_dictionaries(
        {"sampling": st.just("sample")},
        optional={"temperature": st.floats(0.1, 2), "top_p": st.floats(0.1, 1)},
    ),
    st.just({"ignore_eos": True}),
)
LLM = st.builds(
    lambda options, generation, models: {**options, **generation, **models},
    LLM_OPTIONS,
    GENERATION,
    MODELS.map(lambda model: {"model": model})
    | st.lists(MODELS, min_size=1, max_size=3).map(lambda models: {"models": models}),
)
BURN = st.fixed_dictionaries(
    {"seconds": st.floats(0.1, 60) | st.integers(1, 60)},
    optional={
        "duty_cycle": st.floats(0.05, 1),
        "period_s": st.floats(0.01, 10),
        "kind": st.sampled_from(["matmul", "memcpy"]),
        "size": st.integers(16, 32768),
        "dtype": st.sampled_from(["bfloat16", "float16", "float32"]),
        "warmup_s": st.floats(0, 30),
    },
)
CLOCK_RANGES = st.builds(
    lambda low, span, step: {"range": [low, low + span, step]}, *[st.integers(1, 2000)] * 3
)
SWEEP_CLOCKS = st.one_of(
    st.lists(st.integers(210, 1980), min_size=1, max_size=5, unique=True),
    st.just("all"),
    CLOCK_RANGES,
    CLOCK_RANGES,
)
WHOLE_JOB = {  # settings that hold for the whole job, with any of the forms below
    "memory_clock": st.integers(1, 3000),
    "power_limit_w": st.floats(100, 700),
    "snap": st.booleans(),
}
SWEEP = {
    "order": st.sampled_from(["interleaved", "sequential"]),
    "cooldown_s": st.floats(0, 10),
    "search": st.sampled_from(["energy", "edp"]) | st.floats(1, 10).map(lambda b: {"latency_budget": b}),
}
DVFS = st.one_of(
    st.fixed_dictionaries({"sm_clocks": st.integers(210, 1980)}, optional=WHOLE_JOB),
    st.fixed_dictionaries({"sm_clocks": SWEEP_CLOCKS}, optional={**WHOLE_JOB, **SWEEP}),
    st.fixed_dictionaries({"sm_clocks": SWEEP_CLOCKS}, optional={**WHOLE_JOB, **SWEEP}),
    st.fixed_dictionaries(
        {"sm_clock_range": st.builds(lambda lo, up: [lo, lo + up], st.integers(1, 2000), st.integers(1, 99))},
        optional=WHOLE_JOB,
    ),
    st.fixed_dictionaries(
        {"memory_clock": WHOLE_JOB["memory_clock"]},
        optional={"power_limit_w": WHOLE_JOB["power_limit_w"], "snap": WHOLE_JOB["snap"]},
    ),
    st.fixed_dictionaries(
        {"power_limit_w": WHOLE_JOB["power_limit_w"]}, optional={"snap": WHOLE_JOB["snap"]}
    ),
)
COMMON = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["demo", "burn-1", "ünïcode job"]),
        "gpu": st.integers(0, 7),
        "timeout_s": st.floats(100, 86400),
        "dvfs": DVFS,
    },
)
SPECS = st.builds(
    lambda common, workload: {**common, **workload},
    COMMON,
    st.one_of(
        BURN.map(lambda burn: {"workload": "burn", "burn": burn}),
        LLM.map(lambda llm: {"workload": "llm", "llm": llm}),
    ),
)


# -- what replaces a value ----------------------------------------------------------------------------


def nested_lists(depth: int) -> list[Any]:
    """A list ``depth`` deep: [[[...]]]."""
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


TRICKY_STRINGS = st.sampled_from(
    [
        "", " ", "all", "builtin", "burn", "llm", "auto", "spacy:", "~", "~nosuchuser/x", "/", ".", "..",
        "\x00", "\t", "\n", "\x1b[2J", "yes", "no", "on", "null", ".nan", "1e999", "0x10", "1_000",
        "12:30:00", "2024-01-01", "!!python/object", "&a", "*a", "<<", "- a", "a: b", "{", "[", "#", "'", '"',
        "\\", "\u2028", "\ud800", "\ufeff", "🙂", "a" * 129, "org/", "a/b/c", "spacy:\x00",
    ]
)  # fmt: skip
HUGE_STRINGS = st.integers(300, 20_000).map(lambda n: "é" * n)
# What a number is replaced with first: the values that break arithmetic and conversions.
EDGE_NUMBERS = st.sampled_from(
    [math.nan, math.inf, -math.inf, -1, 0, -0.0, 0.5, 1e-300, 2**63, 10**400, -(10**400), 1e308]
)
NUMBERS = st.one_of(
    EDGE_NUMBERS,
    st.integers(-(2**70), 2**70),
    st.sampled_from([1, 2**31, 2**64, 10**30]),
    st.floats(),  # NaN, infinities, -0.0 and subnormals included
)
YAML_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    NUMBERS,
    st.text(max_size=20),
    TRICKY_STRINGS,
    HUGE_STRINGS,
    st.lists(st.integers(-3, 3000) | st.text(max_size=3), max_size=4),
    st.dictionaries(st.text(max_size=6), st.integers(0, 9), max_size=3),
    st.integers(2, 40).map(nested_lists),  # past the reader's limit of 16 levels
    st.binary(max_size=8),  # YAML: a !!binary tag
)
# What msgpack brings over the wire besides, and what a Python caller may pass.
DATA_VALUES = st.one_of(
    YAML_VALUES,
    st.integers(500, 5000).map(nested_lists),  # deeper than Python's recursion limit
    st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8)),
    st.builds(msgpack.Timestamp, st.integers(0, 2**32 - 1)),
    st.dictionaries(st.binary(max_size=4) | st.integers() | st.none(), st.integers(), min_size=1, max_size=2),
    st.tuples(st.integers(), st.text(max_size=3)),
)
KEY_RENAMES = st.one_of(
    st.text(max_size=30),
    TRICKY_STRINGS,
    st.integers(500, 5000).map(lambda n: "k" * n),
    st.integers(-5, 5),  # a non-string key
)


def _fresh(value: Any) -> Any:
    """A copy sharing nothing (a shared object would be dumped as a YAML anchor and alias)."""
    if isinstance(value, dict):
        return {k: _fresh(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_fresh(v) for v in value]
    return value


def _containers(data: Any) -> list[Any]:
    """Every mapping and list in ``data``, outermost first, iteratively (data may be deep)."""
    out: list[Any] = []
    stack = [data]
    while stack and len(out) < 64:
        node = stack.pop(0)
        if isinstance(node, (dict, list)) and node:
            out.append(node)
            stack += list(node.values() if isinstance(node, dict) else node)[:8]
    return out


def _numbers(container: Any) -> list[Any]:
    keys = container.keys() if isinstance(container, dict) else range(len(container))
    return [k for k in keys if isinstance(container[k], (int, float)) and not isinstance(container[k], bool)]


@st.composite
def mutated(draw: st.DrawFn, specs: st.SearchStrategy[Any], values: st.SearchStrategy[Any]) -> Any:
    """A spec with 1-3 mutations, each in one of its mappings or lists (a small section as likely as a
    large one): a number or any value replaced, a value left out (``key:`` with nothing after it) or
    wrapped, a key dropped, renamed or added."""
    spec = _fresh(draw(specs))
    for _ in range(draw(st.integers(1, 3))):
        action = draw(
            st.sampled_from(["number"] * 3 + ["replace", "replace", "empty", "drop", "rename", "add", "wrap"])
        )
        containers = _containers(spec)
        if action == "number":  # NaN, infinities, huge and negative numbers where numbers go
            containers = [c for c in containers if _numbers(c)] or containers
        if not containers:
            break
        container = draw(st.sampled_from(containers))
        keys = _numbers(container) if action == "number" else []
        key = draw(
            st.sampled_from(
                keys or list(container.keys() if isinstance(container, dict) else range(len(container)))
            )
        )
        if action == "number" and keys:
            container[key] = draw(EDGE_NUMBERS | NUMBERS)
        elif action in ("number", "replace"):
            container[key] = draw(values)
        elif action == "empty":
            container[key] = None
        elif action == "wrap":
            container[key] = draw(st.sampled_from([[container[key]], {"value": container[key]}]))
        elif action == "drop":
            del container[key]
        elif isinstance(container, dict) and action == "rename":
            container[draw(KEY_RENAMES)] = container.pop(key)
        elif isinstance(container, dict):
            container[draw(st.sampled_from(sorted(SCHEMA_KEYS)) | KEY_RENAMES)] = draw(values)
        else:
            container.insert(key, draw(values))
    return spec


# -- the property -------------------------------------------------------------------------------------


def outcome(read: Callable[[], JobSpec]) -> JobSpec | JobSpecKeyError:
    """What reading gives: a JobSpec or a JobSpecKeyError. Any other exception propagates: a failure."""
    try:
        spec = read()
    except JobSpecKeyError as error:
        event("refused")  # --hypothesis-show-statistics shows the share of each
        return error
    event("read")
    return spec


def check_error(error: JobSpecKeyError, source: str) -> None:
    """The error a user sees: ``SOURCE[:LINE]: [KEY: ]PROBLEM``, on one short line."""
    message = str(error)
    where = source if error.line is None else f"{source}:{error.line}"
    assert error.source == source and message.startswith(f"{where}: "), message[:300]
    assert len(message) <= MAX_MESSAGE_CHARS, f"a message of {len(message)} characters: {message[:300]}..."
    assert "\n" not in message, message[:300]
    if error.key and len(error.key) <= MAX_QUOTED_KEY_CHARS:
        assert message.startswith(f"{where}: {error.key}: "), message[:300]


def check_same(first: JobSpec | JobSpecKeyError, again: JobSpec | JobSpecKeyError) -> None:
    """Reading is deterministic: the same spec, or the same error."""
    if isinstance(first, JobSpec):
        assert isinstance(again, JobSpec) and again == first and again.raw_text == first.raw_text
    else:
        assert isinstance(again, JobSpecKeyError) and str(again) == str(first)


def check_round_trip(spec: JobSpec) -> None:
    """What the client sends (submitted: to_dict, less a timeout_s the spec left to the daemon) the daemon
    reads back (from_dict) as the same spec."""
    assert JobSpec.from_dict(spec.submitted()) == spec


def key_paths(data: Any) -> dict[str, KeyPath]:
    """Every key path in ``data`` by its printed form, and below each mapping every schema key it lacks."""
    paths: dict[str, KeyPath] = {"": ()}
    stack: list[tuple[Any, KeyPath]] = [(data, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            for key in SCHEMA_KEYS - set(node):
                paths.setdefault(format_path((*path, key)), path)  # missing: named, lined by its parent
            children = [(k, v) for k, v in node.items() if isinstance(k, str)]
        elif isinstance(node, list):
            children = list(enumerate(node))
        else:
            continue
        for key, value in children:
            paths[format_path((*path, key))] = (*path, key)
            if len(path) < 20:
                stack.append((value, (*path, key)))
    return paths


def line_spans(text: str) -> dict[KeyPath, tuple[int, int]]:
    """Per key path of YAML ``text``: the line of its key (or list item) and the last line of its value."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    spans: dict[KeyPath, tuple[int, int]] = {}
    if root is None:
        return spans
    spans[()] = (root.start_mark.line + 1, root.end_mark.line + 1)
    stack: list[tuple[Node, KeyPath]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, MappingNode):
            items = [(k.value, k, v) for k, v in node.value if isinstance(k, ScalarNode)]
        elif isinstance(node, SequenceNode):
            items = [(i, v, v) for i, v in enumerate(node.value)]
        else:
            continue
        for key, key_node, value in items:
            spans[(*path, key)] = (key_node.start_mark.line + 1, value.end_mark.line + 1)
            stack.append((value, (*path, key)))
    return spans


def check_key_named(error: JobSpecKeyError, data: Any) -> KeyPath | None:
    """The error's key is a path of the input, or a schema key missing below one, as written or escaped,
    a long one cut short (ending in "..."); returns the path that exists (the key's own, or its mapping's)
    where it is known."""
    if not error.key:
        return None
    paths = {spelling: path for key, path in key_paths(data).items() for spelling in _spellings(key)}
    if error.key in paths:
        return paths[error.key]
    named = {paths[p] for p in paths if error.key.endswith("...") and p.startswith(error.key[:-3])}
    assert named, f"{error.key[:200]!r} names no key of the input: {str(error)[:300]}"
    return named.pop() if len(named) == 1 else None


def _spellings(key: str) -> set[str]:
    """A key path as written, and as an error may escape it."""
    return {key, key.encode("unicode_escape").decode(), repr(key)[1:-1], ascii(key)[1:-1]}


def dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=10**9)


# -- the tests ----------------------------------------------------------------------------------------


def check_yaml(data: Any) -> None:
    """``data`` as YAML is a spec that survives the wire, or one error that names the key and its line."""
    text = dump(data)
    first = outcome(lambda: parse_job_spec(text, SOURCE))
    check_same(first, outcome(lambda: parse_job_spec(text, SOURCE)))
    if isinstance(first, JobSpec):
        check_round_trip(first)
        return
    check_error(first, SOURCE)
    existing = check_key_named(first, yaml.safe_load(text))
    if existing is not None:  # the problem is about a key in the text: its line, or one inside its value
        low, high = line_spans(text)[existing]
        assert first.line is not None and low <= first.line <= high, (str(first)[:300], low, high)


def check_data(data: Any) -> None:
    """``data`` submitted as data is a spec that survives the wire, or one error that names the key."""
    first = outcome(lambda: JobSpec.from_dict(data))
    check_same(first, outcome(lambda: JobSpec.from_dict(data)))
    if isinstance(first, JobSpec):
        check_round_trip(first)
        return
    check_error(first, SUBMITTED)
    assert first.line is None
    check_key_named(first, data)


@FUZZ
@given(data=mutated(SPECS, YAML_VALUES))
def test_a_mutated_spec_in_yaml_is_read_or_refused_with_its_line_and_key(data: Any) -> None:
    check_yaml(data)


@FUZZ
@given(data=st.one_of(mutated(SPECS, DATA_VALUES), mutated(SPECS, DATA_VALUES), DATA_VALUES))
def test_a_mutated_spec_as_data_is_read_or_refused_naming_the_key(data: Any) -> None:
    check_data(data)


# A burn job long enough for any sweep's own time, so that a dvfs section is read whatever it holds.
BURN_FOR_DVFS = {"workload": "burn", "timeout_s": 604800, "burn": {"seconds": 1, "warmup_s": 0}}


@FUZZ
@given(dvfs=mutated(DVFS, YAML_VALUES))
def test_a_mutated_dvfs_section_is_read_or_refused_naming_its_key(dvfs: Any) -> None:
    """The dvfs keys depend on each other most (forms of sm_clocks, sweep-only keys): fuzzed on their own."""
    check_yaml({**BURN_FOR_DVFS, "dvfs": dvfs})
    check_data({**BURN_FOR_DVFS, "dvfs": dvfs})


# YAML a user may write, or paste by mistake, at the place of a value or as a line of its own.
ODD_VALUES = st.sampled_from(
    [
        "!!python/object/apply:os.system ['true']", "!!python/name:os.system", "!!binary aGVsbG8=",
        "!!set {a, b}", "!custom 3", "!!int abc", "!!int ''", "!!float x", "!!bool maybe", "!!int 0x1F",
        "!!str 12", "!!null", "!!timestamp 2001-12-14", "!!timestamp nope", "!!omap [a: 1]", "!!map []",
        "!!seq {}", "!<tag:yaml.org,2002:int> 12", "&a 5", "*a", "*undefined", "&a [*a]", "&a {b: *a}",
        "{<<: {a: 1}}", ".nan", "-.inf", "1e999", "0x7fffffffffffffffffff", "0b102", "0o19", "1_000",
        "12:30:45", "190:20:30.15", "2001-12-14t21:59:43.10-05:00", "~", "yes", "No", "'unterminated",
        '"bad \\x escape"', "|\n  block", ">-\n  folded", "[1, 2", "{a: 1", "a: b: c", "\t1", "@at", "`tick",
        "%", "\x00", "\x85", "\ufeff", "\ud800", "\x7f", "{? [a, b] : 1}",
    ]
)  # fmt: skip
ODD_LINES = st.sampled_from(
    [
        "---", "...", "--- !!set", "%YAML 1.1", "%TAG ! tag:example.com,2000:", "? [a, b]\n: 1", "<<: {a: 1}",
        "burn: {seconds: 1}", "workload: llm", "workload: burn", "a: &x [x, x, x, x, x, x, x, x, x, x]",
        "b: &y [*x, *x, *x, *x, *x, *x, *x, *x, *x, *x]", "c: &z [*y, *y, *y, *y, *y, *y, *y, *y, *y, *y]",
        "d: [*z, *z, *z, *z, *z, *z, *z, *z, *z, *z]", "\tseconds: 3", "  \t- 1", "# comment", "\ufeff",
        "---\nworkload: burn\nburn: {seconds: 1}",
    ]
)  # fmt: skip
DEEP = st.integers(1, 3000).map(lambda n: "[" * n + "]" * n) | st.integers(1, 60).map(
    lambda n: "".join(f"\n{'  ' * (i + 1)}k{i}:" for i in range(n)) + " 1"
)
HUGE_DIGITS = st.integers(1000, 6000).map(lambda n: "9" * n)


@st.composite
def odd_texts(draw: st.DrawFn) -> str:
    """A valid spec's YAML with 1-3 odd edits: a value or line swapped, a line repeated, tabs, stray text."""
    lines = dump(_fresh(draw(SPECS))).splitlines()
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(lines) - 1))
        edit = draw(st.sampled_from(["value", "line", "repeat", "tab", "insert", "key"]))
        head, colon, _ = lines[at].partition(": ")
        if edit == "value" and colon:
            lines[at] = head + colon + draw(ODD_VALUES | DEEP | HUGE_DIGITS | HUGE_STRINGS)
        elif edit == "key" and colon:
            indent = head[: len(head) - len(head.lstrip())]
            lines[at] = indent + draw(ODD_VALUES | HUGE_DIGITS) + colon + lines[at].partition(": ")[2]
        elif edit == "line":
            indent = draw(st.sampled_from(["", "  ", "    ", "\t"]))
            lines.insert(at, indent + draw(ODD_LINES))
        elif edit == "repeat":
            lines.insert(at, lines[at])  # a duplicate key, or a repeated list item
        elif edit == "tab":
            lines[at] = "\t" + lines[at].lstrip(" ")
        else:
            column = draw(st.integers(0, len(lines[at])))
            lines[at] = lines[at][:column] + draw(st.text(max_size=5)) + lines[at][column:]
    return "\n".join(lines) + "\n"


@FUZZ
@given(text=odd_texts())
def test_yaml_oddities_are_read_or_refused_with_the_file_and_line(text: str) -> None:
    first = outcome(lambda: parse_job_spec(text, SOURCE))
    check_same(first, outcome(lambda: parse_job_spec(text, SOURCE)))
    if isinstance(first, JobSpec):
        check_round_trip(first)
        return
    check_error(first, SOURCE)
    if first.line is not None:
        assert 1 <= first.line <= text.count("\n") + 1, str(first)[:300]


@st.composite
def spec_files(draw: st.DrawFn) -> bytes:
    """A valid spec's bytes, with stray bytes put in, or in an encoding other than UTF-8."""
    text = dump(_fresh(draw(SPECS)))
    how = draw(st.sampled_from(["bytes", "bytes", "utf-16", "latin-1"]))
    if how != "bytes":
        return (text + "name: café\n").encode(how)
    data = text.encode()
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=4)) + data[at:]
    return data


@settings(FUZZ, max_examples=150)
@given(data=spec_files())
def test_a_spec_file_that_is_not_utf8_is_refused_with_the_line_of_the_bad_bytes(
    data: bytes, tmp_path: Path
) -> None:
    path = tmp_path / "job.yaml"
    path.write_bytes(data)
    first = outcome(lambda: load_job_spec(path))
    check_same(first, outcome(lambda: load_job_spec(path)))
    if isinstance(first, JobSpec):
        return
    check_error(first, str(path))
    if first.problem == "not UTF-8 text":
        assert first.line is not None
        line = data.split(b"\n")[first.line - 1]
        assert not _decodes(line), (first.line, line[:100])


def _decodes(line: bytes) -> bool:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_the_spec_generators_reach_valid_specs_of_every_workload() -> None:
    """The fuzz above means something only if its inputs are often valid before they are mutated; those
    valid ones go over the wire and back unchanged."""
    seen: dict[str, int] = {}

    @settings(FUZZ, max_examples=200)
    @given(data=SPECS)
    def read(data: Any) -> None:
        try:
            spec = JobSpec.from_dict(copy.deepcopy(data))
        except Exception:  # the tests above report what is refused, and how
            return
        key = spec.workload + ("+dvfs" if spec.dvfs else "")
        seen[key] = seen.get(key, 0) + 1
        check_round_trip(spec)

    read()
    assert {"burn", "llm", "burn+dvfs", "llm+dvfs"} <= set(seen), seen
