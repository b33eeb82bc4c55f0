"""The shape of the package: no import cycles, no private names across modules, light imports."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import voicenlu

PACKAGE = Path(voicenlu.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(name: str) -> list[tuple[str, str | None, int]]:
    """(module imported, name taken from it or None, line) for every import, at any depth."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, None, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                if sub in MODULES:  # `from voicenlu import bundle`: the submodule itself
                    found.append((sub, None, node.lineno))
                else:
                    found.append((node.module, alias.name, node.lineno))
    return [f for f in found if f[0] in MODULES]


def graph() -> dict[str, set[str]]:
    return {name: {target for target, _, _ in imports(name)} - {name} for name in MODULES}


def test_the_walk_sees_the_package():
    edges = graph()
    assert len(MODULES) > 20
    assert "voicenlu.bundle" in edges["voicenlu.runtime"]
    assert "voicenlu.trainer" in edges["voicenlu.pipeline"]  # an import inside a function


def test_no_import_cycles():
    edges = graph()
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                cycle = stack[stack.index(nxt) :] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for name in sorted(edges):
        if name not in state:
            visit(name)


def test_no_module_imports_another_modules_private_names():
    offences = []
    for name in MODULES:
        for target, imported, line in imports(name):
            if imported and imported.startswith("_") and not imported.startswith("__"):
                offences.append(f"{MODULES[name].name}:{line} imports {target}.{imported}")
    assert not offences, offences


def reachable(edges: dict[str, set[str]], start: str) -> set[str]:
    """Every module ``start`` imports, directly or through others (inside functions too)."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in edges[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


# What parses and serves: the base install (Parser, predict, info) and the serve, speech,
# wyoming and sign extras, with the commands that run them.
RUNTIME = (
    "voicenlu.runtime",
    "voicenlu.bundle",
    "voicenlu.values",
    "voicenlu.speech",
    "voicenlu.listen",
    "voicenlu.wyoming",
    "voicenlu.signing",
    "voicenlu.info",
    "voicenlu.cli.predict",
    "voicenlu.cli.listen",
    "voicenlu.cli.serve",
)


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_runtime_never_reaches_training_or_experiments():
    """Serving needs neither torch (the trainer, the model) nor the experiments that measure
    the product, not even through another module or an import inside a function."""
    edges = graph()
    runtime = [*RUNTIME, *(m for m in MODULES if within(m, "voicenlu.server"))]
    assert set(runtime) <= set(MODULES)
    offences = {
        module: sorted(
            m
            for m in reachable(edges, module)
            if m in ("voicenlu.trainer", "voicenlu.model") or within(m, "voicenlu.experiments")
        )
        for module in runtime
    }
    assert not any(offences.values()), {k: v for k, v in offences.items() if v}


def test_only_the_cli_imports_the_experiments():
    """The experiments measure the product: only the commands that run them may import them
    (and the experiments one another)."""
    offences = [
        f"{MODULES[name].relative_to(PACKAGE)}:{line} imports {target}"
        for name in MODULES
        if not (within(name, "voicenlu.experiments") or within(name, "voicenlu.cli"))
        for target, _, line in imports(name)
        if within(target, "voicenlu.experiments")
    ]
    assert not offences, offences


def test_api_names_are_not_shadowed_by_submodules():
    """Importing a submodule sets it as an attribute of the package: one named like an API
    function would replace that function."""
    for name in voicenlu.__all__:
        assert f"voicenlu.{name}" not in MODULES, name
    importlib.import_module("voicenlu.evaluation")
    importlib.import_module("voicenlu.pipeline")
    assert callable(voicenlu.train) and callable(voicenlu.evaluate)
    assert voicenlu.train.__module__ == "voicenlu.pipeline"


def test_light_modules_do_not_import_torch():
    """The runtime, the config, the data and the package root load without torch."""
    code = (
        "import sys, voicenlu, voicenlu.config, voicenlu.runtime, voicenlu.features, "
        "voicenlu.data.training, voicenlu.pipeline, voicenlu.evaluation, voicenlu.cli\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert 'transformers' not in sys.modules, 'transformers was imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_trainer_only_trains():
    """The decision layer over the network (lexical model, in-scope statistics, calibration)
    is a pipeline step of its own, not part of training."""
    edges = graph()
    assert "voicenlu.scoring" in edges["voicenlu.pipeline"]
    assert not edges["voicenlu.trainer"] & {"voicenlu.calibration", "voicenlu.scoring"}
