"""The ``command:`` section of a job spec (``workload: command``), and the marker lines its program writes.

A command job runs the user's own program (``argv``) as the submitting user, in ``cwd``, with ``env``
added to the worker's environment. The program may mark windows, requests and sweep points by writing
JSON lines (one object per line) to the FIFO named in ``$GPUPROF_MARKERS``: ``gpuprof.markers`` does it
from Python, and any language can (docs/protocol.md, "Marker lines"). Without marks the job still has its
energy, trace and the command's window.

``points``: in a clock sweep, ``run`` runs the command once per clock (each run one point); ``marked``
runs it once and lets it ask for each point (``gpuprof.markers.sweep()``), waiting for the clock to be set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .spec_schema import REQUIRED, Document, KeyPath, Section, base_dir, excerpt, file_path, kind_of

__all__ = [
    "COMMAND_KEYS",
    "MARKERS_ENV",
    "MAX_LINE_BYTES",
    "NEXT_POINT",
    "POINTS",
    "PROGRAM_KINDS",
    "REPLY_ENV",
    "RESERVED_ENV",
    "RESERVED_NAMES",
    "CommandParams",
    "command_section",
    "read_command",
]

COMMAND_KEYS = ("argv", "cwd", "env", "points")
POINTS = ("run", "marked")
MAX_ARGS = 1024
MAX_ARG_CHARS = 32_768
MAX_ENV = 256
MAX_ENV_VALUE_CHARS = 32_768
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")

# The marker lines a program writes (docs/protocol.md, "Marker lines").
MARKERS_ENV = "GPUPROF_MARKERS"  # the FIFO the program writes JSON lines to
REPLY_ENV = "GPUPROF_MARKERS_REPLY"  # the FIFO it reads the answer to a next_point line from
MAX_LINE_BYTES = 65_536  # a longer line is refused; up to 4096 bytes (PIPE_BUF) a write is atomic
PROGRAM_KINDS = ("begin", "end", "event", "status")
NEXT_POINT = "next_point"  # an event asking for the sweep's next point; answered on the reply FIFO
# Names the worker marks itself: a program's line using one is refused.
RESERVED_NAMES = (
    "measure",
    "point",
    "dvfs",
    "energy_query",
    "cooldown",
    "load",
    "compile",
    "search",
    "command",
)
# Variables the worker sets for the program (or that choose its GPU): env may not set them.
RESERVED_ENV = ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")


@dataclass(frozen=True)
class CommandParams:
    """The user's program: ``argv`` (argv[0] found on the PATH when it has no slash), run in ``cwd``
    (absolute) with ``env`` added to its environment; ``points``: how a clock sweep's points are made."""

    argv: tuple[str, ...]
    cwd: str
    env: tuple[tuple[str, str], ...] = ()
    points: str = "run"

    @property
    def planned_s(self) -> float:
        """The workload's own running time, as far as the spec knows: the program decides."""
        return 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"argv": list(self.argv), "cwd": self.cwd, "env": dict(self.env), "points": self.points}


def _argv(section: Section) -> tuple[str, ...]:
    args = []
    for path, item in section.items("argv", REQUIRED, MAX_ARGS):
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            what = "true/false (quote it)" if isinstance(item, bool) else kind_of(item)
            raise section.doc.error(path, f"must be a string or a number, got {what}")
        text = item if isinstance(item, str) else str(item)
        if "\0" in text or len(text) > MAX_ARG_CHARS:
            raise section.doc.error(
                path, f"must have no NUL character and at most {MAX_ARG_CHARS} characters"
            )
        args.append(text)
    if not args[0]:
        raise section.error("argv", "the program (its first item) is empty")
    return tuple(args)


def _env(section: Section) -> tuple[tuple[str, str], ...]:
    if not section.has("env"):
        return ()
    data = section.data["env"]
    path: KeyPath = (*section.path, "env")
    if not isinstance(data, dict):
        raise section.doc.error(path, f"must be a mapping of NAME: value, got {kind_of(data)}")
    if len(data) > MAX_ENV:
        raise section.doc.error(path, f"at most {MAX_ENV} variables, got {len(data)}")
    out = []
    for name, value in data.items():
        if not isinstance(name, str):
            raise section.doc.error(path, f"a variable name must be a string, got {kind_of(name)}")
        where = (*path, name)
        if not _ENV_NAME.fullmatch(name):
            raise section.doc.error(
                where, "a variable name must match [A-Za-z_][A-Za-z0-9_]* (128 chars at most)"
            )
        if name.startswith("GPUPROF_") or name in RESERVED_ENV:
            raise section.doc.error(where, "is set by gpuprof for the program (its GPU and marker channel)")
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise section.doc.error(where, f"must be a string or a number, got {kind_of(value)}")
        text = value if isinstance(value, str) else str(value)
        if "\0" in text or len(text) > MAX_ENV_VALUE_CHARS:
            raise section.doc.error(where, f"must have no NUL and at most {MAX_ENV_VALUE_CHARS} characters")
        out.append((name, text))
    return tuple(sorted(out))


def read_command(section: Section) -> CommandParams:
    """The ``command`` section (as ``command_section`` gives it). ``cwd`` defaults to the spec file's
    directory; a submitted spec must give it."""
    if section.has("cwd"):
        cwd = file_path(section.doc, (*section.path, "cwd"), section.data["cwd"])
    else:
        base = base_dir(section.doc)
        if base is None:
            raise section.error("cwd", "required in a submitted spec (an absolute directory)")
        cwd = str(base)
    return CommandParams(
        argv=_argv(section),
        cwd=cwd,
        env=_env(section),
        points=section.choice("points", "run", POINTS),
    )


def command_section(doc: Document, path: KeyPath, data: object, argv: list[str] | None = None) -> Section:
    """The section to read: ``data`` as given, or a list taken as ``{argv: list}``; ``argv`` (a program
    given on the command line, after ``--``) replaces the spec's, which may then be left out."""
    if isinstance(data, list):
        data = {"argv": data}
        doc.lines.setdefault((*path, "argv"), doc.lines.get(path, 0))
    elif data is None and argv is not None:
        data = {}
    if not isinstance(data, dict):
        raise doc.error(
            path,
            f"must be the program's argv (a list) or a mapping ({', '.join(COMMAND_KEYS)}), "
            f"got {excerpt(data)}",
        )
    if argv is not None:
        data = {**data, "argv": list(argv)}
    return Section(doc, path, data, COMMAND_KEYS)
