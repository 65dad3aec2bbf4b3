"""`vidanim quota show|set|reset` for operators."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated, LiteralString

import typer

from vidanim.commands.common import (
    DatabaseUrl,
    JsonOut,
    as_service,
    emit_json,
    handled,
    refused_values,
    settings,
    table,
    user_client,
)

app = typer.Typer(help="Show, change and reset users' daily video quotas (operators).", no_args_is_help=True)

SET_LIMITS: LiteralString = "select public.set_video_quota_limits(%s, %s, %s)"
SET_DEFAULTS: LiteralString = "select public.set_video_quota_defaults(%s, %s)"
RESET: LiteralString = "select public.reset_video_quota(%s, %s)"


@app.command("show")
def show(user: uuid.UUID, database_url: DatabaseUrl = None, json_out: JsonOut = False) -> None:
    """A user's limits, today's usage and active jobs, exactly as the user sees them."""
    s = settings(database_url)
    with handled(), user_client(s, user) as client:
        q = client.quota()
    if json_out:
        return emit_json(q)
    table(
        [[q.daily_limit, q.used, q.remaining, q.max_active_jobs, q.active_jobs, q.resets_at]],
        ["daily limit", "used", "remaining", "max active", "active", "resets at (UTC)"],
    )
    return None


@app.command("set")
def set_limits(
    user: Annotated[uuid.UUID | None, typer.Argument(help="The user; omit with --default.")] = None,
    daily: Annotated[int | None, typer.Option(help="Jobs per UTC day (omit: the default).")] = None,
    active: Annotated[int | None, typer.Option(help="Queued or processing jobs at once (omit: the default).")] = None,
    default: Annotated[bool, typer.Option("--default", help="Change the defaults instead of one user.")] = False,
    database_url: DatabaseUrl = None,
    json_out: JsonOut = False,
) -> None:
    """Override a user's limits (a missing one falls back to the default), or change the defaults."""
    s = settings(database_url)
    if default == (user is not None):
        raise typer.BadParameter("give a user, or --default (not both)")
    with handled(), as_service(s) as cur, refused_values("quota"):
        if default:
            cur.execute(SET_DEFAULTS, (daily, active))
        else:
            cur.execute(SET_LIMITS, (user, daily, active))
    result = {"user": user, "default": default, "daily_limit": daily, "max_active_jobs": active}
    if json_out:
        return emit_json(result)
    typer.echo(
        f"quota of {'the default' if default else user}: daily {daily if daily is not None else 'default'},"
        f" active {active if active is not None else 'default'}"
    )
    return None


@app.command("reset")
def reset(
    user: uuid.UUID,
    day: Annotated[str | None, typer.Option(help="The UTC day, YYYY-MM-DD (default: today).")] = None,
    database_url: DatabaseUrl = None,
    json_out: JsonOut = False,
) -> None:
    """Give a user its day's quota back."""
    s = settings(database_url)
    try:
        when = date.fromisoformat(day) if day else None
    except ValueError:
        raise typer.BadParameter(f"{day!r} is not a date (YYYY-MM-DD)") from None
    with handled(), as_service(s) as cur:
        cur.execute(RESET, (user, when))
    if json_out:
        return emit_json({"user": user, "day": when})
    typer.echo(f"quota of {user} reset for {when or 'today (UTC)'}")
    return None
