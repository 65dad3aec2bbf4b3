"""The repository stands alone: nothing in it points at files outside it."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "vidanim"
SIMULATOR = "vidanim.simulator"
# Spelled in two parts so this file does not match itself.
OUTSIDE = "../" + "shared"


def tracked_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    return [ROOT / name for name in listed.stdout.decode().split("\0") if name]


def test_no_tracked_file_refers_to_a_path_outside_the_repository():
    files = tracked_files()
    assert len(files) > 50, "git ls-files listed too little to be this repository"
    offenders = [
        str(path.relative_to(ROOT))
        for path in files
        if path.is_file() and OUTSIDE in path.read_text(encoding="utf-8", errors="replace")
    ]
    assert offenders == []


def test_the_docs_the_code_cites_exist():
    for name in ("api.md", "hardening.md", "security.md", "worker.md", "testing.md"):
        assert (ROOT / "docs" / name).is_file(), name


def module_name(path: Path, root: Path) -> str:
    """The dotted name of the module at `path` in the package at `root`."""
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, root: Path) -> list[str]:
    """Every module `path` imports, anywhere in it (in functions too), relative imports resolved.

    `from a import b` counts as importing both `a` and `a.b` (b may be a module);
    `importlib.import_module("x")` and `__import__("x")` with a literal name count as importing x.
    """
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            found += [source] + [f"{source}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if called in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                found.append(node.args[0].value)
    return found


def simulator_imports(root: Path) -> list[str]:
    """`file: module` for each import of vidanim.simulator by a module under `root` outside the simulator."""
    offenders = []
    for path in sorted(root.rglob("*.py")):
        if (root / "simulator") in path.parents:
            continue
        for imported in imported_modules(path, root):
            if imported == SIMULATOR or imported.startswith(SIMULATOR + "."):
                offenders.append(f"{path.relative_to(root)}: {imported}")
    return offenders


def test_no_product_module_imports_the_simulator():
    """The simulator is a test double: it may import the product, never the other way round."""
    assert len(list(PACKAGE.rglob("*.py"))) > 50, "found too few modules to be the package"
    assert (PACKAGE / "simulator" / "server.py").is_file()
    assert simulator_imports(PACKAGE) == []


def test_each_way_of_importing_the_simulator_is_found(tmp_path):
    """The check above sees imports in functions, `from vidanim import simulator`, relative and dynamic ones."""
    package = tmp_path / "vidanim"
    (package / "simulator").mkdir(parents=True)
    (package / "worker").mkdir()
    (package / "simulator" / "server.py").write_text("from vidanim.media import looks_like_mp4\n")
    planted = {
        "a.py": "import vidanim.simulator.server\n",
        "b.py": "def f():\n    from vidanim import simulator\n    return simulator\n",
        "worker/c.py": "def f():\n    from ..simulator.server import Simulator\n    return Simulator\n",
        "worker/d.py": "import importlib\nSIM = importlib.import_module('vidanim.simulator')\n",
        "e.py": "from vidanim.simulator import Simulator\n",
    }
    for name, source in planted.items():
        (package / name).write_text(source)
    (package / "fine.py").write_text("from vidanim import media\nimport vidanim.simulators_elsewhere\n")
    found = simulator_imports(package)
    assert sorted({line.split(":")[0] for line in found}) == sorted(planted), found


def test_each_worker_module_holds_one_step_and_the_orchestrator_stays_small():
    sizes = {p.name: len(p.read_text().splitlines()) for p in (PACKAGE / "worker").glob("*.py")}
    assert {name: n for name, n in sizes.items() if n > 350} == {}, "split the module along the job's steps"
    assert sizes["pipeline.py"] < 200, "the orchestrator reads as the job's state machine; logic lives in a stage"
