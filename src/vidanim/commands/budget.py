"""`vidanim budget show|set`: the global daily spend cap, and spend by day and provider (operators)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Annotated, LiteralString

import typer

from vidanim.commands.common import (
    DatabaseUrl,
    JsonOut,
    as_service,
    emit_json,
    fail,
    handled,
    refused_values,
    settings,
    table,
)

app = typer.Typer(help="The daily spend cap across every worker, and what was spent (operators).", no_args_is_help=True)

SPEND: LiteralString = "select * from public.get_video_spend(%s)"
CAP: LiteralString = "select public.get_video_daily_budget() as cap"
SET_CAP: LiteralString = "select public.set_video_daily_budget(%s)"


def _usd(value: Decimal | None) -> str:
    """Dollars and cents, or every digit the database keeps when a cent would hide some."""
    if value is None:
        return "none"
    if value == value.quantize(Decimal("0.01")):
        return f"${value:,.2f}"
    return f"${value.normalize():,f}"


@app.command("show")
def show(
    days: Annotated[int, typer.Option(min=1, max=366, help="Days of spend to list, today included.")] = 7,
    database_url: DatabaseUrl = None,
    json_out: JsonOut = False,
) -> None:
    """The daily cap, and the committed spend per UTC day and provider (newest first)."""
    s = settings(database_url)
    with handled(), as_service(s) as cur:
        rows = cur.execute(SPEND, (days,)).fetchall()
        cap = cur.execute(CAP).fetchone()
    daily_cap = cap["cap"] if cap else None
    if json_out:
        spend = [{k: v for k, v in r.items() if k != "daily_cap_usd"} for r in rows]
        return emit_json({"daily_cap_usd": daily_cap, "spend": spend})
    typer.echo(f"daily cap: {_usd(daily_cap)}")
    table(
        [[r["day"], r["provider"], _usd(r["committed_usd"]), r["submissions"]] for r in rows],
        ["day (UTC)", "provider", "committed", "submissions"],
    )
    return None


@app.command("set")
def set_cap(
    daily_usd: Annotated[str | None, typer.Option("--daily-usd", help="The cap in USD per UTC day.")] = None,
    unlimited: Annotated[bool, typer.Option("--unlimited", help="Remove the cap.")] = False,
    database_url: DatabaseUrl = None,
    json_out: JsonOut = False,
) -> None:
    """Set the global daily spend cap (or remove it); jobs waiting for budget start at once if it rose."""
    if unlimited == (daily_usd is not None):
        raise typer.BadParameter("give --daily-usd AMOUNT or --unlimited (one of them)")
    try:
        cap = None if unlimited else Decimal(str(daily_usd))
    except InvalidOperation:
        cap = Decimal("NaN")
    if cap is not None and not cap.is_finite():
        raise fail(f"--daily-usd must be an amount in USD, not {daily_usd!r}", 2)
    s = settings(database_url)
    with handled(), as_service(s) as cur:
        with refused_values("--daily-usd"):
            cur.execute(SET_CAP, (cap,))
        stored = cur.execute(CAP).fetchone()
    cap = stored["cap"] if stored else cap
    if json_out:
        return emit_json({"daily_cap_usd": cap})
    typer.echo(f"daily cap: {_usd(cap)}")
    return None
