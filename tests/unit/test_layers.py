"""The import graph of tasks/ is the layer cake the README's Layout section describes: no
cycles, no import from a lower layer to a higher one, no pyinfra, sslyze or rich below the
facts, and no import of the test harness (testhosts) at all."""

from __future__ import annotations

import ast
import fnmatch
from pathlib import Path

import pytest

TASKS = Path(__file__).resolve().parents[2] / "tasks"
# Lowest first. A module may import its own layer and those below; every module is in one.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("data", ("tasks.policy", "tasks.assets", "tasks.scripts")),
    ("settings", ("tasks.validators", "tasks.settings", "tasks.tables", "tasks.host_facts")),
    (
        "views",
        (
            "tasks.postfix.conf",
            "tasks.dovecot.conf",
            "tasks.dh.plan",
            "tasks.certs.plan",
            "tasks.safety.verify",
            "tasks.audit.verdict",
            "tasks.audit.logreport",
            "tasks.audit.internetnl",
            "tasks.audit.html",
            "tasks.audit.metrics",
        ),
    ),
    ("host", ("tasks.host_conf",)),
    ("facts", ("tasks.facts", "tasks.audit.*", "tasks.inventory_source", "tasks.nodelay")),
    ("operations", ("tasks.ops",)),
    ("apply", ("tasks.*.apply",)),
    ("deploy", ("tasks.mail_tls", "tasks.audit.report", "tasks.quick_exit")),
]
PURE = ("data", "settings", "views", "host")
LIBRARIES = ("pyinfra", "pyinfra_cli", "sslyze", "rich")


def _modules() -> dict[str, Path]:
    found = {}
    for path in TASKS.rglob("*.py"):
        parts = path.relative_to(TASKS.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _layer(module: str) -> int:
    # Exact names first: "tasks.audit.report" is a deploy, not one of "tasks.audit.*".
    for exact in (True, False):
        for i, (_, patterns) in enumerate(LAYERS):
            for pattern in patterns:
                if (module == pattern) if exact else fnmatch.fnmatch(module, pattern):
                    return i
    raise AssertionError(f"{module} is in no layer: add it to LAYERS (and the README's Layout)")


def _imports(module: str) -> set[str]:
    """Every module `module` imports, at any depth of its code (function-level too)."""
    out = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                out.add(full if full in MODULES else node.module)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return out - {module}


OURS = sorted(m for m in MODULES if "." in m and MODULES[m].name != "__init__.py")


@pytest.mark.parametrize("module", OURS)
def test_imports_go_down_the_layers(module):
    mine = _layer(module)
    for dep in _imports(module):
        top = dep.split(".")[0]
        assert top != "testhosts", f"{module} imports the test harness ({dep})"
        if dep in MODULES and "." in dep and MODULES[dep].name != "__init__.py":
            assert _layer(dep) <= mine, (
                f"{module} ({LAYERS[mine][0]}) imports {dep} ({LAYERS[_layer(dep)][0]}), a higher layer"
            )
        if LAYERS[mine][0] in PURE:
            assert top not in LIBRARIES, f"{module} is pure ({LAYERS[mine][0]}) but imports {dep}"


def test_no_import_cycles():
    graph = {m: {d for d in _imports(m) if d in MODULES} for m in MODULES}
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            assert state.get(d) != 1, f"import cycle: {' -> '.join([*path, m, d])}"
            if d not in state:
                visit(d, [*path, m])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
