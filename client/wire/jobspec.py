"""Job specs: the YAML a user submits, validated strictly into a JobSpec.

Every error is a JobSpecError whose message names the file, the line and the key path, e.g.
``job.yaml:7: burn.duty_cycle: must be a number in (0, 1], got 'high'``. Loading is safe (no YAML tag
can construct a Python object) and bounded in size, nesting and alias expansion. The schema is in
docs/jobspec.md; each ``workload:`` kind has its own section and reader (``_WORKLOAD_READERS``).
"""

from __future__ import annotations

import dataclasses
import errno
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gpuprof.sampler.files import read_regular_file

from .command_spec import COMMAND_KEYS, CommandParams, command_section, read_command
from .dvfs_spec import DVFS_KEYS, DvfsParams, read_dvfs
from .llm_spec import LLM_KEYS, LlmParams, read_llm
from .spec_schema import (
    REQUIRED,
    Document,
    JobSpecKeyError,
    KeyPath,
    Section,
    excerpt,
    format_path,
    kind_of,
    parse_path,
)

__all__ = [
    "MAX_SPEC_BYTES",
    "BurnParams",
    "CommandParams",
    "DvfsParams",
    "JobSpec",
    "JobSpecKeyError",
    "LlmParams",
    "WorkloadParams",
    "command_job_spec",
    "load_job_spec",
    "parse_job_spec",
]

MAX_SPEC_BYTES = 1 << 20
MAX_DEPTH = 16  # mappings and lists inside each other; the schema needs 2
MAX_VALUES = 10_000  # scalars, mappings and lists after aliases are expanded (stops "billion laughs")
SUBMITTED_SOURCE = "<submitted spec>"
DEFAULT_TIMEOUT_S = 3600.0
MAX_TIMEOUT_S = 7 * 86400.0
MAX_NAME_CHARS = 128
BURN_SETTLE_S = 0.5  # a burn sweep's point runs this long at its clock before it is measured
# ... and this long after, so that the energy counter's update period around each edge of its window holds
# the point's own steady work (one update period, ~100 ms, with its delay and margin for a late read).
BURN_TAIL_S = 0.25
MAX_BURN_STEPS = 100_000  # measured periods; each is a marker window the daemon stores

_YAML = "tag:yaml.org,2002:"
_SCALAR_TAGS = {f"{_YAML}{name}" for name in ("str", "int", "float", "bool", "null")}
_CONSTRUCTOR = SafeConstructor()


# --- workloads ---------------------------------------------------------------------------------------

BURN_KINDS = ("matmul", "memcpy")
BURN_DTYPES = ("bfloat16", "float16", "float32")
_BURN_SIZE = {"matmul": (8192, 16, 32768), "memcpy": (1024, 1, 32768)}  # default, min, max


@dataclass(frozen=True)
class BurnParams:
    """A synthetic load: ``kind`` work for ``seconds`` at ``duty_cycle``, after ``warmup_s``.

    ``size`` is the matrix side for matmul and MiB copied per operation for memcpy; ``dtype`` applies to
    matmul only.
    """

    seconds: float
    duty_cycle: float = 1.0
    period_s: float = 1.0
    kind: str = "matmul"
    size: int = 8192
    dtype: str = "bfloat16"
    warmup_s: float = 2.0

    @property
    def planned_s(self) -> float:
        """The workload's own running time, loading excluded."""
        return self.warmup_s + self.seconds

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


WorkloadParams = BurnParams | LlmParams | CommandParams


def _read_burn(section: Section) -> BurnParams:
    seconds = section.number("seconds", REQUIRED, 0, 86400, low_open=True)
    period_s = section.number("period_s", 1.0, 0.01, 3600)
    if seconds / period_s > MAX_BURN_STEPS:
        raise section.error(
            "period_s",
            f"{period_s:g} s makes {math.ceil(seconds / period_s)} periods in {seconds:g} s; "
            f"at most {MAX_BURN_STEPS} (use a longer period)",
        )
    kind = section.choice("kind", "matmul", BURN_KINDS)
    default_size, low, high = _BURN_SIZE[kind]
    return BurnParams(
        seconds=seconds,
        duty_cycle=section.number("duty_cycle", 1.0, 0, 1, low_open=True),
        period_s=period_s,
        kind=kind,
        size=section.integer("size", default_size, low, high),
        dtype=section.choice("dtype", "bfloat16", BURN_DTYPES),
        warmup_s=section.number("warmup_s", 2.0, 0, 3600),
    )


_WORKLOAD_KEYS: dict[str, tuple[str, ...]] = {
    "burn": ("seconds", "duty_cycle", "period_s", "kind", "size", "dtype", "warmup_s"),
    "llm": LLM_KEYS,
    "command": COMMAND_KEYS,
}
_WORKLOAD_READERS: dict[str, Callable[[Section], WorkloadParams]] = {
    "burn": _read_burn,
    "llm": read_llm,
    "command": read_command,
}
_COMMON_KEYS = ("name", "gpu", "workload", "timeout_s", "dvfs")


# --- the spec ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobSpec:
    """A validated job: what runs (``workload`` and its ``params``), on which GPU, for how long at most.

    ``raw_text`` (the submitted YAML, for the record) and ``source`` do not take part in comparisons.
    """

    name: str
    workload: str
    params: WorkloadParams
    gpu: int = 0
    timeout_s: float = DEFAULT_TIMEOUT_S
    dvfs: DvfsParams | None = None
    raw_text: str = field(default="", compare=False, repr=False)
    source: str = field(default="<string>", compare=False)
    lines: dict[KeyPath, int] = field(default_factory=dict, compare=False, repr=False)  # of each key
    timeout_given: bool = field(default=True, compare=False)  # False: timeout_s is the default

    def submitted(self) -> dict[str, Any]:
        """What a client submits: to_dict without a timeout_s the spec left out, so that the daemon applies
        its own default_timeout_s."""
        data = self.to_dict()
        if not self.timeout_given:
            del data["timeout_s"]
        return data

    def key_error(self, key: str, problem: str) -> JobSpecKeyError:
        """An error about ``key`` (as format_path writes it) found elsewhere, named at its line here."""
        return Document(None, self.source, self.lines).error(parse_path(key), problem)

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data (defaults filled in), for the wire and the worker; see from_dict."""
        data: dict[str, Any] = {
            "name": self.name,
            "gpu": self.gpu,
            "workload": self.workload,
            "timeout_s": self.timeout_s,
            self.workload: self.params.to_dict(),
        }
        if self.dvfs is not None:
            data["dvfs"] = {k: v for k, v in self.dvfs.to_dict().items() if v is not None}
        return data

    @classmethod
    def from_dict(
        cls, data: object, raw_text: str | None = None, default_timeout_s: float | None = None
    ) -> JobSpec:
        """Validates plain data (as to_dict makes) again; errors name ``<submitted spec>`` and the key.

        ``raw_text`` is the YAML to keep for the record; without it, the data is dumped as YAML. A spec
        without timeout_s gets ``default_timeout_s`` (the daemon's; None where it is not known, as in a
        client: the daemon checks it then).
        """
        spec = _build(Document(data, SUBMITTED_SOURCE), raw_text or "", default_timeout_s)
        if raw_text is None:
            spec = dataclasses.replace(spec, raw_text=yaml.safe_dump(spec.to_dict(), sort_keys=False))
        return spec


def _build(
    doc: Document,
    raw_text: str,
    default_timeout_s: float | None = None,
    command: Sequence[str] | None = None,
) -> JobSpec:
    """The spec in ``doc``. Without timeout_s it gets ``default_timeout_s``, the daemon's; where that is not
    known (None: a client reading a file), DEFAULT_TIMEOUT_S stands in and is not checked against the
    workload's running time: the daemon that applies its own default checks it."""
    if command is not None:  # a program given after --: the spec may be empty, or leave out workload
        if doc.data is None:
            doc.data = {}
        if isinstance(doc.data, dict):
            doc.data = {"workload": "command", **doc.data}
            if doc.data["workload"] != "command":
                raise doc.error(
                    ("workload",),
                    "a program after -- runs as workload command, but this spec's is "
                    f"{excerpt(doc.data['workload'])}",
                )
    if doc.data is None:
        raise doc.error((), "the job spec is empty; it needs at least 'workload' and its section")
    top = Section(doc, (), doc.data, (*_COMMON_KEYS, *_WORKLOAD_KEYS))
    kinds = tuple(_WORKLOAD_READERS)
    workload = top.choice("workload", REQUIRED, kinds)
    for other in kinds:
        if other != workload and top.has(other):
            raise top.error(
                other, f"this section is for workload {other!r}, but workload is {excerpt(workload)}"
            )
    if workload == "command":
        program = list(command) if command is not None else None
        if not top.has(workload) and program is None:
            raise top.error(
                workload, "required section is missing: the program to run (command: [PROGRAM, ARG...])"
            )
        params: WorkloadParams = read_command(
            command_section(doc, ("command",), top.data.get("command"), program)
        )
    else:
        if not top.has(workload):
            raise top.error(workload, f"required section is missing (workload is {excerpt(workload)})")
        params = _WORKLOAD_READERS[workload](top.section(workload, _WORKLOAD_KEYS[workload]))
    default = DEFAULT_TIMEOUT_S if default_timeout_s is None else default_timeout_s
    timeout_s = top.number("timeout_s", default, 0, MAX_TIMEOUT_S, low_open=True)
    checked = top.has("timeout_s") or default_timeout_s is not None
    given = "" if top.has("timeout_s") else " (this daemon's default_timeout_s)"
    if checked and timeout_s <= params.planned_s:
        raise top.error(
            "timeout_s",
            f"{timeout_s:g} s{given} is not longer than the workload's own running time "
            f"({params.planned_s:g} s of warmup and measurement)",
        )
    dvfs = read_dvfs(top.section("dvfs", DVFS_KEYS)) if top.has("dvfs") else None
    if dvfs is not None and dvfs.search is not None and isinstance(params, CommandParams):
        raise top.error(
            "dvfs", "search is for llm and burn jobs: a command job runs every clock of its sweep"
        )
    if dvfs is not None and dvfs.phase_pairs:
        _check_phase_clocks(top, params)
    if dvfs is not None and dvfs.sweep and isinstance(params, BurnParams):
        per_point = BURN_SETTLE_S + params.seconds + BURN_TAIL_S + dvfs.cooldown_s
        planned = params.warmup_s + len(dvfs.sweep) * per_point
        if checked and timeout_s <= planned:
            raise top.error(
                "timeout_s",
                f"{timeout_s:g} s{given} is not longer than the sweep's own running time ({planned:g} s: "
                f"{len(dvfs.sweep)} clocks x {per_point:g} s, with {BURN_SETTLE_S:g} s to settle at each "
                f"and {BURN_TAIL_S:g} s after it)",
            )
    stem = Path(doc.source).stem if not doc.source.startswith("<") else "job"
    return JobSpec(
        name=top.string("name", stem or "job", MAX_NAME_CHARS),
        workload=workload,
        params=params,
        gpu=top.integer("gpu", 0, 0, 255),
        timeout_s=timeout_s,
        dvfs=dvfs,
        raw_text=raw_text,
        source=doc.source,
        lines=doc.lines,
        timeout_given=top.has("timeout_s"),
    )


# --- YAML with line numbers --------------------------------------------------------------------------


def _check_phase_clocks(top: Section, params: WorkloadParams) -> None:
    """Phase-aware clocks switch the lock at an llm job's phase edges, as they happen: only an engine that
    reports them live has them (vLLM's engine stamps its phases after the fact)."""
    if not isinstance(params, LlmParams):
        raise top.error("dvfs", "phase_clocks are for llm jobs: their requests' prefill and decode")
    if params.engine == "vllm":
        raise top.error(
            "dvfs",
            "phase_clocks need the eager or compiled engine: vLLM's engine times its requests' phases after "
            "they ran, so the clock cannot be switched at their edges",
        )


def _check_nesting(text: str, source: str) -> None:
    """Refuses nesting deeper than MAX_DEPTH before composing (PyYAML's composer recurses)."""
    depth = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    line = event.start_mark.line + 1 if event.start_mark else None
                    raise JobSpecKeyError(source, line, "", f"nested deeper than {MAX_DEPTH} levels")
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, source, text) from None


def _yaml_error(exc: yaml.YAMLError, source: str, text: str) -> JobSpecKeyError:
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML does not allow: no mark, a position
        line = text[: exc.position].count("\n") + 1
        code = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "\0")
        return JobSpecKeyError(source, line, "", f"invalid YAML: the character U+{code:04X} is not allowed")
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = " ".join(str(getattr(exc, "problem", None) or exc).split())  # one line
    return JobSpecKeyError(source, mark.line + 1 if mark else None, "", f"invalid YAML: {problem}")


class _Plainer:
    """Turns a composed YAML node tree into plain data, recording each key's line."""

    def __init__(self, source: str) -> None:
        self.doc = Document(None, source, {})
        self.values = 0

    def plain(self, node: Node, path: KeyPath) -> Any:
        self.values += 1
        if self.values > MAX_VALUES:
            raise self.doc.error(path, f"more than {MAX_VALUES} values (are aliases expanding?)")
        if len(path) > MAX_DEPTH:
            raise self.doc.error(path[:2], f"nested deeper than {MAX_DEPTH} levels (a recursive alias?)")
        if isinstance(node, ScalarNode):
            if node.tag == f"{_YAML}timestamp":  # a date where a string is expected: keep its text
                return node.value
            if node.tag not in _SCALAR_TAGS:
                raise self.doc.error(path, f"unsupported YAML tag {excerpt(node.tag)}")
            try:
                return _CONSTRUCTOR.yaml_constructors[node.tag](_CONSTRUCTOR, node)
            except (ValueError, KeyError, IndexError, OverflowError):  # a value not of its tag: !!int abc
                kind = node.tag.removeprefix(_YAML)
                raise self.doc.error(path, f"{excerpt(node.value)} is not a valid !!{kind}") from None
        if isinstance(node, SequenceNode) and node.tag == f"{_YAML}seq":
            out = []
            for index, item in enumerate(node.value):
                self.doc.lines[(*path, index)] = item.start_mark.line + 1
                out.append(self.plain(item, (*path, index)))
            return out
        if isinstance(node, MappingNode) and node.tag == f"{_YAML}map":
            return self._mapping(node, path)
        raise self.doc.error(path, f"unsupported YAML tag {excerpt(node.tag)}")

    def _mapping(self, node: MappingNode, path: KeyPath) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == f"{_YAML}merge":
                raise JobSpecKeyError(
                    self.doc.source, line, format_path(path), "merge keys (<<) are not supported"
                )
            key = self.plain(key_node, path) if isinstance(key_node, ScalarNode) else None
            if not isinstance(key, str):
                what = kind_of(key) if isinstance(key_node, ScalarNode) else "a mapping or list"
                raise JobSpecKeyError(
                    self.doc.source, line, format_path(path), f"keys must be strings, got {what}"
                )
            if key in out:
                raise JobSpecKeyError(self.doc.source, line, format_path((*path, key)), "duplicate key")
            self.doc.lines[(*path, key)] = line
            out[key] = self.plain(value_node, (*path, key))
        return out


def _document(text: str, source: str) -> Document:
    if len(text) > MAX_SPEC_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_SPEC_BYTES:
        raise JobSpecKeyError(source, None, "", f"larger than {MAX_SPEC_BYTES >> 20} MiB")
    _check_nesting(text, source)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, source, text) from None
    plainer = _Plainer(source)
    if node is not None:
        plainer.doc.lines[()] = node.start_mark.line + 1
        plainer.doc.data = plainer.plain(node, ())
    return plainer.doc


def parse_job_spec(text: str, source: str = "<string>", command: Sequence[str] | None = None) -> JobSpec:
    """Validates a job spec's YAML text; errors name ``source``, the line and the key. ``command``: a
    program given on the command line (``gpuprof run SPEC -- CMD``), replacing the spec's ``command``."""
    return _build(_document(text, source), text, command=command)


def command_job_spec(command: Sequence[str], cwd: str) -> JobSpec:
    """The spec of ``gpuprof run -- CMD`` without a spec file: ``command`` run in ``cwd``."""
    name = Path(command[0]).name[:MAX_NAME_CHARS] if command and command[0] else "command"
    text = yaml.safe_dump({"name": name or "command", "workload": "command", "command": {"cwd": cwd}})
    return _build(_document(text, "<command line>"), text, command=command)


def load_job_spec(path: str | os.PathLike[str], command: Sequence[str] | None = None) -> JobSpec:
    """Reads and validates a job spec file (UTF-8 YAML, at most MAX_SPEC_BYTES); ``command`` as in
    parse_job_spec."""
    try:
        data = read_regular_file(path, MAX_SPEC_BYTES)  # never waits on a FIFO, never reads a device
    except OSError as exc:
        if exc.errno == errno.EFBIG:
            raise JobSpecKeyError(str(path), None, "", f"larger than {MAX_SPEC_BYTES >> 20} MiB") from None
        raise JobSpecKeyError(str(path), None, "", f"cannot read job spec: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise JobSpecKeyError(str(path), line, "", "not UTF-8 text") from None
    return parse_job_spec(text, str(path), command)
