"""Import structure: no import circles, counting every import statement of the package (function-level
ones included; those only for type checking left out), and the report modules load no torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import odimo_moo

PACKAGE = Path(odimo_moo.__file__).parent


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("odimo_moo", *path.relative_to(PACKAGE).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _type_checking_only(tree: ast.Module) -> set[int]:
    return {id(node) for block in ast.walk(tree) if isinstance(block, ast.If) and "TYPE_CHECKING" in
            ast.unparse(block.test) for statement in block.body for node in ast.walk(statement)}


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules that module ``name`` imports, anywhere in it."""
    tree = ast.parse(path.read_text())
    skipped, targets = _type_checking_only(tree), []
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            targets += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join([*package[:len(package) - node.level + 1], *([node.module] if node.module else [])]) \
                if node.level else node.module or ""
            targets += [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
    found = set()
    for target in targets:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != name and not name.startswith(target + "."):  # a package's own __init__
            found.add(target)
    return found


def _reaches(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_no_module_is_in_an_import_circle():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert len(modules) > 90 and "odimo_moo.study.report" in modules  # the walk found every package
    circles = {name: sorted(m for m in _reaches(graph, name) if name in _reaches(graph, m))
               for name in modules if name in _reaches(graph, name)}
    assert not circles, circles


def test_the_report_modules_do_not_import_torch():
    """``odimo report`` and ``odimo compare --from`` read results: a fresh process importing what they
    use (checkpoint's atomic writes included) loads no torch."""
    modules = ("odimo_moo.study.report", "odimo_moo.study.report_output", "odimo_moo.compare",
               "odimo_moo.commands.report", "odimo_moo.commands.compare", "odimo_moo.checkpoint", "odimo_moo.results")
    script = f"import sys\nfor name in {modules!r}:\n    __import__(name)\nassert 'torch' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
