"""The shape of the code: imports point one way, with no loops (type-only imports and
imports inside functions count too); found by reading the source (an AST walk), not by
importing it."""

from __future__ import annotations

import ast
import fnmatch
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("app", "model")


@dataclass(frozen=True)
class Module:
    name: str
    path: Path

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"


@cache
def modules() -> dict[str, Module]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = Module(".".join(parts), path)
    return out


def _resolve(name: str) -> str | None:
    """The module of ours that ``import name`` runs (a name inside it: its module)."""
    known = modules()
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imported(module: Module) -> Iterator[str]:
    """Every module of ours ``module`` imports, anywhere in its file."""
    package = module.name if module.is_package else module.name.rpartition(".")[0]
    for node in ast.walk(ast.parse(module.path.read_text(), str(module.path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}" if base else anchor
            # ``from pkg import mod`` imports pkg.mod; ``from mod import name``: mod
            targets = [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            found = _resolve(target)
            if found is not None and found != module.name:
                yield found


@cache
def graph() -> dict[str, frozenset[str]]:
    return {name: frozenset(imported(m)) for name, m in modules().items()}


def loops(edges: dict[str, frozenset[str]]) -> list[list[str]]:
    """The import loops: strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_walk_sees_every_kind_of_import(tmp_path: Path) -> None:
    """The checks below are only as good as this walk: a type-only import, an import in a
    function and a relative import are all edges, and a loop made of them is found."""
    tree = {
        "a": frozenset({"b"}),
        "b": frozenset({"c"}),
        "c": frozenset({"a"}),  # closes a loop a -> b -> c -> a
        "d": frozenset({"a"}),
    }
    assert loops(tree) == [["a", "b", "c"]]
    source = tmp_path / "probe.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from app.lifecycle.served import ServedModel\n"
        "def f():\n    import model.bundle\n"
        "from .base import Store\n"
    )
    probe = Module("app.store.probe", source)
    assert set(imported(probe)) == {"app.lifecycle.served", "model.bundle", "app.store.base"}


def test_no_import_loops() -> None:
    assert loops(graph()) == []


def test_model_never_imports_app() -> None:
    wrong = {m: sorted(t for t in ts if t.startswith("app")) for m, ts in graph().items()}
    assert {m: ts for m, ts in wrong.items() if m.startswith("model") and ts} == {}


def test_the_store_depends_on_nothing_else_of_the_service() -> None:
    """app/store/ is the storage layer: the service's metrics, errors and health bookkeeping
    build on it, never the other way round."""

    def in_store(name: str) -> bool:
        return name == "app.store" or name.startswith("app.store.")

    outside = {
        m: sorted(t for t in ts if t.startswith("app.") and not in_store(t))
        for m, ts in graph().items()
        if in_store(m)
    }
    assert {m: ts for m, ts in outside.items() if ts} == {}


def test_settings_import_no_behaviour() -> None:
    """Settings (app/settings.py and its groups) may name constants of leaf modules (which
    import nothing of the service), not the code that uses them."""
    edges = graph()
    settings = {"app.settings", "app.settings_groups", "app.settings_deploy"}
    used = {t for m in settings for t in edges[m] if t.startswith("app.")} - settings
    assert used, "the check would pass vacuously"
    assert {t: sorted(x for x in edges[t] if x.startswith("app.")) for t in used} == {
        t: [] for t in used
    }


LAYERS: dict[str, int] = {
    "api": 0,
    "store": 0,
    "index": 0,
    "settings": 1,
    "runtime": 2,
    "feedback": 3,
    "lifecycle": 4,
    "serving": 5,
    "learning": 5,
    "catalogue": 6,
    "users": 6,
    "service": 7,
    "http": 8,
    "commands": 9,
    "cli": 10,
}
"""The parts of app/, lowest first (docs/ARCHITECTURE.md): a part imports only parts
below it; parts at one level do not import each other."""


def part_of(module: str) -> str | None:
    """The part of app/ ``module`` belongs to (its subpackage, or a top-level module's
    own name; the settings' groups are the settings)."""
    parts = module.split(".")
    if parts[0] != "app" or len(parts) < 2:
        return None
    return "settings" if parts[1].startswith("settings") else parts[1]


def test_every_part_of_the_service_has_a_layer() -> None:
    parts = {part_of(m) for m in modules()} - {None}
    assert parts == set(LAYERS)


def test_imports_point_down_the_layers() -> None:
    upward = sorted(
        f"{m} -> {t}"
        for m, targets in graph().items()
        for t in targets
        if (a := part_of(m)) is not None
        and (b := part_of(t)) is not None
        and a != b
        and LAYERS[a] <= LAYERS[b]
    )
    assert upward == []


def test_every_subpackage_says_what_it_holds() -> None:
    """A one-paragraph docstring in each ``__init__`` and no code (so importing one part
    never imports another)."""
    for m in modules().values():
        if not m.is_package or not m.name.startswith("app."):
            continue
        tree = ast.parse(m.path.read_text())
        doc = ast.get_docstring(tree)
        assert doc and "\n\n" not in doc.strip(), m.name
        assert len(tree.body) == 1, f"{m.name}: only a docstring"


MAX_CLASS_LINES = 300


def test_no_class_is_longer_than_300_lines() -> None:
    long = {}
    for m in modules().values():
        for node in ast.walk(ast.parse(m.path.read_text(), str(m.path))):
            if isinstance(node, ast.ClassDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_CLASS_LINES:
                    long[f"{m.name}.{node.name}"] = lines
    assert long == {}


# --- the map of the code ------------------------------------------------------------------
ARCHITECTURE = ROOT / "docs" / "ARCHITECTURE.md"


def named_modules(text: str) -> tuple[set[str], set[str]]:
    """(names, patterns): the ``.py`` paths the map names in backticks, as repository
    paths. Under a ``## app/ ...`` or ``## model/ ...`` heading a path is relative to that
    package (``store/redis.py`` there is ``app/store/redis.py``); a name with ``*`` is a
    pattern (``data/synth_*.py``)."""
    names: set[str] = set()
    patterns: set[str] = set()
    section = ""
    for line in text.splitlines():
        if line.startswith("## "):
            head = line[3:].split()[0] if line[3:].split() else ""
            section = head if head.rstrip("/") in PACKAGES else ""
        for token in re.findall(r"`([^`\s]+\.py)`", line):
            path = token if token.split("/")[0] in PACKAGES or not section else section + token
            (patterns if "*" in path else names).add(path)
    return names, patterns


def test_the_map_names_every_module_and_only_modules_that_exist() -> None:
    files = {
        str(m.path.relative_to(ROOT)) for m in modules().values() if m.path.name != "__init__.py"
    }
    names, patterns = named_modules(ARCHITECTURE.read_text())
    covered = names | {f for f in files for p in patterns if fnmatch.fnmatch(f, p)}
    assert sorted(files - covered) == [], "modules docs/ARCHITECTURE.md does not name"
    stale = sorted(n for n in names if n.split("/")[0] in PACKAGES and n not in files)
    stale += sorted(p for p in patterns if not any(fnmatch.fnmatch(f, p) for f in files))
    assert stale == [], "paths docs/ARCHITECTURE.md names that do not exist"


def test_the_map_reader_resolves_section_paths() -> None:
    text = "## app/ — the service\n`store/redis.py`, `model/bundle.py`\n## model/ x\n`data/*.py`"
    assert named_modules(text) == ({"app/store/redis.py", "model/bundle.py"}, {"model/data/*.py"})
