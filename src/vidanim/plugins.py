"""Commands other packages add to the `vidanim` command line, found through entry points.

A package names a callable in the `vidanim.plugins` entry-point group
(`[project.entry-points."vidanim.plugins"]` in its pyproject.toml); it is called
with the CLI's Typer app and adds its commands. The provider simulator adds
`vidanim simulator` and `vidanim demo` this way, so the product never imports the
test double it is tried against.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import cast

import typer

ENTRY_POINT_GROUP = "vidanim.plugins"


def register_plugins(app: typer.Typer) -> list[str]:
    """Let every installed plugin add its commands to `app`; the names of those registered."""
    names = []
    for entry in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        register = cast(Callable[[typer.Typer], None], entry.load())
        register(app)
        names.append(entry.name)
    return names
