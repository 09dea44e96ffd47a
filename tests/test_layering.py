"""The package's imports point one way: a module never imports a layer above its own, the commands never import
each other, and no import cycle exists. Layers, bottom to top:

    _version/_validate/_modes < functional < attention < layers < blocks < checkpoint < hub < models
    < macs/memory/fuse/explain < integrations < app

(``checkpoint`` knows no model: ``create_model(pretrained=...)`` uses it, so it sits below ``models``.) Inside
``app``: common < data/weights/runtimes < timing < report < the commands < cli; a command may import only its own
modules and the layers below it.
"""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "visattn"

RANKS = [  # (module prefix, rank); the longest matching prefix wins
    ("visattn._version", 0), ("visattn._validate", 0), ("visattn._modes", 0),
    ("visattn.functional", 1), ("visattn.attention", 2), ("visattn.layers", 3), ("visattn.blocks", 4),
    ("visattn.checkpoint", 5), ("visattn.hub", 5.5), ("visattn.models", 6),
    ("visattn.macs", 7), ("visattn.memory", 7), ("visattn.fuse", 7), ("visattn.explain", 7),
    ("visattn.integrations", 7.5),
    ("visattn.app.common", 8.0), ("visattn.app.cpu_bf16", 8.0), ("visattn.app.data", 8.1), ("visattn.app.weights", 8.1),
    ("visattn.app.timing", 8.15), ("visattn.app.runtimes", 8.1), ("visattn.app.report", 8.2),
    ("visattn.app.summary", 8.3), ("visattn.app.bench", 8.3), ("visattn.app.zoo", 8.3),
    ("visattn.app.train", 8.3), ("visattn.app.evaluate", 8.3), ("visattn.app.export", 8.3),
    ("visattn.app.pretrained", 8.3), ("visattn.app.explain", 8.3),
    ("visattn.app.cli", 8.4), ("visattn.app", 8.5), ("visattn.__main__", 9), ("visattn", 9),
]
COMMANDS = {"visattn.app.summary", "visattn.app.bench", "visattn.app.zoo", "visattn.app.train",
            "visattn.app.evaluate", "visattn.app.export", "visattn.app.pretrained", "visattn.app.explain"}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (SRC / rel).with_suffix(".py").is_file() or (SRC / rel / "__init__.py").is_file()


def imports(path: Path) -> set[str]:
    """visattn modules imported anywhere in the file (functions included)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("visattn")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            if not base.startswith("visattn"):
                continue
            for alias in node.names:  # `from pkg import module` imports the module itself
                full = f"{base}.{alias.name}"
                found.add(full if is_module(full) else base)
    return found


def rank(name: str) -> float:
    return max(((len(p), r) for p, r in RANKS if name == p or name.startswith(p + ".")), default=(0, None))[1]


def command_of(name: str) -> str | None:
    return next((c for c in COMMANDS if name == c or name.startswith(c + ".")), None)


GRAPH = {module_name(p): imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_has_a_layer():
    assert [m for m in GRAPH if rank(m) is None] == []


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_upward_import(module):
    upward = [t for t in GRAPH[module] if rank(t) > rank(module)]
    assert upward == [], f"{module} (layer {rank(module)}) imports from above: {upward}"
    mine = command_of(module)
    if mine is not None:
        others = [t for t in GRAPH[module] if command_of(t) not in (None, mine)]
        assert others == [], f"command module {module} imports another command: {others}"


def test_no_import_cycle():
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(GRAPH.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])


def test_the_walker_sees_relative_imports():
    assert "visattn.functional.attention" in GRAPH["visattn.attention.hilo"]
    assert "visattn._validate" in GRAPH["visattn.attention.hilo"]
    assert "visattn.app.common" in GRAPH["visattn.app.train.loop"]
