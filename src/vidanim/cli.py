"""The `vidanim` command line: thin commands over the package, no business logic."""

from __future__ import annotations

import json
from typing import Annotated

import psycopg
import typer

from vidanim.commands.common import DatabaseUrl, JsonOut, emit_json, fail, handled, settings, table
from vidanim.db import checklist
from vidanim.db.migrate import MigrationError, migrate, status
from vidanim.plugins import register_plugins
from vidanim.settings import DatabaseSettings, InvalidSetting, check_database_url
from vidanim.worker.http import ListenError

app = typer.Typer(
    help="vidanim: animate a user's image into a video on Supabase.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Apply and inspect the database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")


# the setting behind each listener, named when its address cannot be bound
LISTENER_PORTS = {
    "public": "VIDANIM_HTTP_PORT",
    "operator": "VIDANIM_OPERATOR_PORT",
    "dashboard": "VIDANIM_DASHBOARD_PORT",
}


def _register_commands() -> None:
    from vidanim.commands import animate, budget, jobs, quota, storage, submissions

    app.add_typer(budget.app, name="budget")
    app.add_typer(jobs.app, name="jobs")
    app.add_typer(quota.app, name="quota")
    app.add_typer(storage.app, name="storage")
    app.add_typer(submissions.app, name="submissions")
    app.command("animate")(animate.animate)


def _database_url(value: str | None) -> str:
    try:
        if value:
            check_database_url(value)
            return value
        return DatabaseSettings().require_database_url()
    except InvalidSetting as exc:
        raise fail(str(exc), 2) from None


@db_app.command("migrate")
def db_migrate(
    database_url: DatabaseUrl = None,
    compat: Annotated[
        bool | None,
        typer.Option(
            "--compat/--no-compat", help="Apply the Supabase compat layer first (default: only on plain PostgreSQL)."
        ),
    ] = None,
    json_out: JsonOut = False,
) -> None:
    """Apply supabase/migrations in order; a no-op when everything is applied."""
    url = _database_url(database_url)
    try:
        result = migrate(url, compat=compat)
    except MigrationError as exc:
        raise fail(str(exc)) from None
    except psycopg.OperationalError as exc:
        raise fail(f"cannot connect to the database: {exc}".strip()) from None
    if json_out:
        typer.echo(
            json.dumps({"compat_applied": result.compat_applied, "applied": [m.filename for m in result.applied]})
        )
        return
    if result.compat_applied:
        typer.echo("applied the Supabase compatibility layer (plain PostgreSQL)")
    for m in result.applied:
        typer.echo(f"applied {m.filename}")
    if not result.applied:
        typer.echo("database is up to date")


@db_app.command("status")
def db_status(database_url: DatabaseUrl = None, json_out: JsonOut = False) -> None:
    """List migrations and run the hardening deployment checklist; exit 1 if anything is missing."""
    url = _database_url(database_url)
    try:
        migrations = status(url)
        with psycopg.connect(url, autocommit=True) as conn:
            checks = checklist.run(conn)
    except psycopg.OperationalError as exc:
        raise fail(f"cannot connect to the database: {exc}".strip()) from None
    pending = [m.filename for m, done in migrations if not done]
    failing = [c for c in checks if not c.ok]
    if json_out:
        typer.echo(
            json.dumps(
                {
                    "migrations": [{"file": m.filename, "applied": done} for m, done in migrations],
                    "checks": [{"name": c.name, "ok": c.ok, "error": c.error} for c in checks],
                }
            )
        )
    else:
        for m, done in migrations:
            typer.echo(f"{'applied' if done else 'PENDING':8} {m.filename}")
        typer.echo("")
        for c in checks:
            typer.echo(f"[{'ok' if c.ok else 'MISSING'}] {c.name}" + (f" ({c.error})" if c.error else ""))
    if pending or failing:
        raise typer.Exit(1)


@app.command("worker")
def worker(
    database_url: DatabaseUrl = None,
    concurrency: Annotated[
        int | None, typer.Option(help="Jobs run at once (VIDANIM_WORKER_CONCURRENCY, default 50).", min=1)
    ] = None,
    until_idle: Annotated[bool, typer.Option("--until-idle", help="Exit when no job is due or running.")] = False,
) -> None:
    """Run the worker: lease jobs, drive fal.ai then Runway, store each video once. SIGTERM stops it cleanly."""
    import asyncio

    from vidanim import logs
    from vidanim.worker.assemble import ConfigurationError, assembled
    from vidanim.worker.startup import ProvidersRefused, check_providers, check_storage

    s = settings(database_url)
    if concurrency is not None:
        s = s.model_copy(update={"worker_concurrency": concurrency})
    logs.configure(s.log_format, s.log_level)
    try:
        pending = [m.filename for m, applied in status(s.require_database_url()) if not applied]
    except psycopg.OperationalError as exc:
        raise fail(f"cannot connect to the database: {str(exc).splitlines()[0]}") from None
    if pending:
        # without its schema every claim would fail, once a second, forever
        raise fail(f"the database lacks {len(pending)} migration(s) ({pending[0]}…): run `vidanim db migrate`")

    async def run() -> None:
        async with assembled(s) as app_:
            # A configuration no provider accepts refuses to start, in one line; an outage
            # opens the breakers and the worker waits for their probe, as a running one would.
            await check_providers(
                app_.providers,
                app_.worker.db,
                worker_id=s.worker_id,
                breaker_open_seconds=s.breaker_open_seconds,
            )
            await check_storage(s, app_.storage, app_.pool)
            await app_.worker.run(until_idle=until_idle)

    try:
        asyncio.run(run())
    except ProvidersRefused as exc:
        raise fail(str(exc), 1) from None
    except ConfigurationError as exc:
        raise fail(str(exc), 2) from None
    except ListenError as exc:
        raise fail(f"{exc} (set {LISTENER_PORTS[exc.name]} to a free port, or 0 for any)") from None
    except psycopg.OperationalError as exc:
        raise fail(f"cannot connect to the database: {exc}".strip()) from None


@app.command("doctor")
def doctor(database_url: DatabaseUrl = None, json_out: JsonOut = False) -> None:
    """Check the deployment: database, migrations, checklist, Storage, each provider's credentials."""
    import asyncio

    from vidanim.doctor import run_checks

    s = settings(database_url)
    with handled():
        checks = asyncio.run(run_checks(s))
    if json_out:
        emit_json({"ok": all(c.ok is not False for c in checks), "checks": checks})
    else:
        table(
            [["ok" if c.ok else ("FAIL" if c.ok is False else "skip"), c.name, c.detail] for c in checks],
            ["", "check", "detail"],
        )
    if any(c.ok is False for c in checks):
        raise typer.Exit(1)


@app.command("dashboard")
def dashboard(
    host: Annotated[
        str | None, typer.Option(help="Address to bind (VIDANIM_DASHBOARD_HOST, default 127.0.0.1: loopback only).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (VIDANIM_DASHBOARD_PORT, default 8780).", min=0)] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Serve the operators' dashboard: jobs, timelines, spend, breakers and the actions behind them."""
    import asyncio

    from vidanim import logs
    from vidanim.dashboard.serve import serve
    from vidanim.worker.assemble import ConfigurationError

    s = settings(database_url)
    s = s.model_copy(
        update={k: v for k, v in {"dashboard_host": host, "dashboard_port": port}.items() if v is not None}
    )
    logs.configure(s.log_format, s.log_level)
    try:
        asyncio.run(serve(s))
    except ConfigurationError as exc:
        raise fail(str(exc), 2) from None
    except ListenError as exc:
        raise fail(f"{exc} (pass --port or set {LISTENER_PORTS[exc.name]} to a free port, or 0 for any)") from None
    except psycopg.OperationalError as exc:
        raise fail(f"cannot connect to the database: {exc}".strip()) from None
    except KeyboardInterrupt:
        pass


_register_commands()
register_plugins(app)  # the simulator's `simulator` and `demo` (vidanim.simulator.commands)


def main() -> None:
    app()
