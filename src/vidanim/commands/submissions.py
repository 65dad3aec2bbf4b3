"""`vidanim submissions pause|resume|show`: stop and restart new submissions, for every provider or one (operators)."""

from __future__ import annotations

import getpass
from typing import Annotated, LiteralString

import typer

from vidanim.commands.common import DatabaseUrl, JsonOut, as_service, emit_json, fail, handled, settings, table

app = typer.Typer(
    help="Pause or resume new submissions to the providers; running jobs go on, paused jobs wait (operators).",
    no_args_is_help=True,
)

PAUSE: LiteralString = "select public.pause_video_submissions(%s, %s, %s) as paused"
RESUME: LiteralString = "select public.resume_video_submissions(%s, %s) as woken"
PAUSES: LiteralString = "select * from public.get_video_submission_pauses()"
PROVIDERS = ("fal", "runway")

Provider = Annotated[
    str | None, typer.Option("--provider", help="Only this provider (fal or runway); default: every provider.")
]


def actor() -> str:
    """Who acts, for the audit trail: the login running the CLI."""
    return f"cli:{getpass.getuser()}"


def _checked(provider: str | None) -> str | None:
    if provider is not None and provider not in PROVIDERS:
        raise fail(f"unknown provider {provider!r}: use one of {', '.join(PROVIDERS)}", 2)
    return provider


@app.command("pause")
def pause(
    provider: Provider = None,
    reason: Annotated[str | None, typer.Option(help="Why, for the other operators.")] = None,
    database_url: DatabaseUrl = None,
    json_out: JsonOut = False,
) -> None:
    """No new submission (to --provider, or to any provider) until resumed; queued jobs wait, none fails."""
    scope = _checked(provider)
    s = settings(database_url)
    with handled(), as_service(s) as cur:
        row = cur.execute(PAUSE, (scope, actor(), reason)).fetchone()
    newly = bool(row and row["paused"])
    if json_out:
        return emit_json({"scope": scope or "all", "newly_paused": newly})
    typer.echo(f"submissions paused: {scope or 'every provider'}" + ("" if newly else " (already paused)"))
    return None


@app.command("resume")
def resume(provider: Provider = None, database_url: DatabaseUrl = None, json_out: JsonOut = False) -> None:
    """Lift a pause (of --provider, or the one of every provider); the jobs that waited for it start at once."""
    scope = _checked(provider)
    s = settings(database_url)
    with handled(), as_service(s) as cur:
        row = cur.execute(RESUME, (scope, actor())).fetchone()
        left = cur.execute(PAUSES).fetchall()
    woken = int(row["woken"]) if row else 0
    if json_out:
        return emit_json({"scope": scope or "all", "woken": woken, "still_paused": [r["scope"] for r in left]})
    typer.echo(f"submissions resumed: {scope or 'every provider'}; {woken} waiting jobs woken")
    if left:
        typer.echo(f"still paused: {', '.join(r['scope'] for r in left)}")
    return None


@app.command("show")
def show(database_url: DatabaseUrl = None, json_out: JsonOut = False) -> None:
    """What is paused, by whom, since when."""
    s = settings(database_url)
    with handled(), as_service(s) as cur:
        rows = cur.execute(PAUSES).fetchall()
    if json_out:
        return emit_json(rows)
    if not rows:
        typer.echo("no submissions paused")
        return None
    table([[r["scope"], r["paused_by"], r["paused_at"], r["reason"]] for r in rows], ["scope", "by", "since", "reason"])
    return None
