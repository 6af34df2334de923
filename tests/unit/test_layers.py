"""gpuprof's layers import only downward, and no module imports itself back through others.

Bottom up: the sampler (``gpuprof.sampler``: hardware, NVML, the simulated GPU); the contract
(``gpuprof.client.wire``: protocol, job specs, states, errors); then the daemon and the clients, which stand
on both and not on each other; ``gpuprof`` itself (``client/top``: what a user's own code imports) stands on
the clients' layers and never on the daemon. Within the daemon, three roles: the server (``daemon.server``)
and a job's worker (``daemon.worker``) never import each other, and both stand on ``daemon.analysis`` and
the modules shared at ``gpuprof.daemon``'s top (the marker format, the worker's environment, the config),
which import no role. Read from the source with ``ast``, every import counted (those inside functions too),
so a test fails on the line that breaks the rule.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"sampler": "gpuprof.sampler", "client": "gpuprof.client", "daemon": "gpuprof.daemon"}
WIRE = "gpuprof.client.wire"
SERVER, WORKER, ANALYSIS = "gpuprof.daemon.server", "gpuprof.daemon.worker", "gpuprof.daemon.analysis"
ROLES = (SERVER, WORKER, ANALYSIS)
STARTUP = "gpuprof.daemon.cli"  # gpuprofd's entry point builds the server


def within(module: str, package: str | tuple[str, ...]) -> bool:
    packages = (package,) if isinstance(package, str) else package
    return any(module == p or module.startswith(p + ".") for p in packages)


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (or package)
    line: int
    top_level: bool  # at import time, not inside a function (TYPE_CHECKING blocks count)

    def __str__(self) -> str:
        return f"{self.source} (line {self.line}) imports {self.target}"


TOP = "client/top"  # installed as the package ``gpuprof`` itself (setup.py)


def is_top(module: str) -> bool:
    """Whether ``module`` is ``gpuprof`` itself or one of its own modules (``gpuprof.markers``)."""
    return not any(within(module, package) for package in PACKAGES.values())


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if "/".join(parts[:2]) == TOP:
        parts = ["gpuprof", *parts[2:]]
    else:
        parts[0] = PACKAGES[parts[0]]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    found = {}
    for folder in PACKAGES:
        for path in [*(ROOT / folder).rglob("*.py"), *(ROOT / folder).rglob("*.pyx")]:  # .pyx: compiled
            found[module_name(path)] = path
    assert "gpuprof" in found, f"{TOP}/__init__.py, the package gpuprof itself, is missing"
    return found


MODULES = modules()


def _resolve(source: str, path: Path, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    package = source if path.name == "__init__.py" else source.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def imports_of(source: str, path: Path) -> Iterator[Import]:
    tree = ast.parse(path.read_text(), str(path))
    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    inside = {id(child) for f in functions for child in ast.walk(f) if child is not f}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(source, alias.name, node.lineno, id(node) not in inside)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(source, path, node)
            for alias in node.names:  # ``from pkg import module`` imports the module
                target = f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                yield Import(source, target, node.lineno, id(node) not in inside)


def all_imports() -> list[Import]:
    parsed = [(name, path) for name, path in MODULES.items() if path.suffix == ".py"]
    return [i for name, path in parsed for i in imports_of(name, path) if i.target.startswith("gpuprof.")]


def broken(imports: list[Import]) -> list[str]:
    """Every import that goes up or sideways between the layers."""
    out = []
    for i in imports:
        if i.source.startswith("gpuprof.sampler") and not i.target.startswith("gpuprof.sampler"):
            out.append(f"{i}: the sampler is the bottom layer")
        elif i.source.startswith(WIRE) and not (i.target.startswith((WIRE, "gpuprof.sampler"))):
            out.append(f"{i}: the contract stands on the sampler alone")
        elif (
            i.source.startswith("gpuprof.daemon")
            and i.target.startswith("gpuprof.client")
            and not (i.target.startswith(WIRE))
        ):
            out.append(f"{i}: the daemon knows of the client side only the contract")
        elif is_top(i.source) and i.target.startswith("gpuprof.daemon"):
            out.append(f"{i}: a user's code reaches the daemon through the contract, never imports it")
        elif i.source.startswith("gpuprof.client") and i.target.startswith("gpuprof.daemon"):
            out.append(f"{i}: the clients speak to the daemon through the contract, never import it")
        elif within(i.source, SERVER) and within(i.target, WORKER):
            out.append(f"{i}: the server runs the worker as a process, never imports it")
        elif within(i.source, WORKER) and within(i.target, SERVER):
            out.append(f"{i}: a worker runs as the job's user and knows nothing of the server")
        elif within(i.source, ANALYSIS) and within(i.target, (SERVER, WORKER)):
            out.append(f"{i}: analysis works on what was recorded, below the server and the worker")
        elif (
            within(i.source, "gpuprof.daemon")
            and not any(within(i.source, role) for role in (*ROLES, STARTUP))
            and any(within(i.target, role) for role in ROLES)
        ):
            out.append(f"{i}: the daemon's shared modules stand below its roles")
    return out


def cycles(imports: list[Import]) -> list[list[str]]:
    """Import cycles among modules, counting every import (one inside a function too: the module needs the
    other to work, and a cycle means neither can be understood, or tested, without the other)."""
    graph: dict[str, set[str]] = {}
    for i in imports:
        if i.target in MODULES and i.target != i.source:
            graph.setdefault(i.source, set()).add(i.target)
    found, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_every_layer_imports_only_downward() -> None:
    assert broken(all_imports()) == []


def test_no_module_imports_itself_back() -> None:
    assert cycles(all_imports()) == []


@pytest.mark.parametrize(
    ("source", "target", "why"),
    [
        ("gpuprof.sampler.energy", "gpuprof.daemon.server.store", "the sampler is the bottom layer"),
        ("gpuprof.client.wire.protocol", "gpuprof.client.api", "the contract stands on the sampler alone"),
        ("gpuprof.daemon.server.jobs", "gpuprof.client.api", "the daemon knows of the client side only"),
        ("gpuprof.client.api", "gpuprof.daemon.server", "never import it"),
        ("gpuprof.daemon.server.jobs", "gpuprof.daemon.worker.main", "runs the worker as a process"),
        ("gpuprof.daemon.worker.main", "gpuprof.daemon.server.store", "knows nothing of the server"),
        ("gpuprof.daemon.analysis.sweep", "gpuprof.daemon.server.store", "below the server and the worker"),
        ("gpuprof.daemon.markers", "gpuprof.daemon.worker.markers", "shared modules stand below its roles"),
        ("gpuprof.markers", "gpuprof.daemon.markers", "a user's code reaches the daemon through"),
    ],
)
def test_an_upward_import_is_named_with_its_line(source: str, target: str, why: str) -> None:
    planted = Import(source, target, 7, True)
    assert [f"{planted}: " in line and why in line for line in broken([planted])] == [True]


def test_a_cycle_is_found() -> None:
    a, b = "gpuprof.client.api", "gpuprof.client.handle"
    assert cycles([Import(a, b, 1, True), Import(b, a, 1, True)]) == [[a, b, a]]


def test_each_exit_code_means_one_error() -> None:
    from gpuprof.client.wire.errors import EXIT_CODES

    codes = list(EXIT_CODES.values())
    assert len(codes) == len(set(codes)), EXIT_CODES
