"""The repository stands alone: nothing in it points at files outside it."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
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
