"""The shape of the code: the library never imports the commands, no command imports another,
and the commands only orchestrate (short functions)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
#: the command modules (``pipelines/cli.py`` wires them to the command line and may import them all)
VERBS = {"pretrain", "suggest", "adapt", "predict", "evaluate", "compare", "tune", "data", "bench", "refine", "evaluate_interactive", "annotate"}
MAX_LINES = 60


def modules(folder: str):
    return sorted((ROOT / folder).rglob("*.py"))


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def verb_of(path: Path) -> str | None:
    parts = path.relative_to(ROOT / "pipelines").with_suffix("").parts
    return parts[0] if parts[0] in VERBS else None


@pytest.mark.parametrize("path", modules("experts"), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_library_never_imports_the_commands(path):
    assert not [m for m in imported(path) if m == "pipelines" or m.startswith("pipelines.")]


@pytest.mark.parametrize("path", [p for p in modules("pipelines") if p.name != "cli.py"], ids=lambda p: str(p.relative_to(ROOT)))
def test_no_command_imports_another(path):
    own = verb_of(path)
    others = {m.split(".")[1] for m in imported(path) if m.startswith("pipelines.") and len(m.split(".")) > 1}
    assert not (others & VERBS) - {own}, f"{path.name} imports the command(s) {sorted((others & VERBS) - {own})}; move what they share into experts/ or pipelines/runtime/"


@pytest.mark.parametrize("path", modules("pipelines"), ids=lambda p: str(p.relative_to(ROOT)))
def test_command_functions_are_short(path):
    long = [(n.name, n.end_lineno - n.lineno + 1) for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > MAX_LINES]
    assert not long, f"functions over {MAX_LINES} lines (move the algorithm into experts/): {long}"
