"""`vidanim storage cleanup`: remove old output videos, keep their jobs readable."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Annotated, LiteralString

import typer

from vidanim.commands.common import (
    DatabaseUrl,
    JsonOut,
    as_service,
    emit_json,
    fail,
    handled,
    parse_duration,
    settings,
    table,
)
from vidanim.settings import Settings
from vidanim.storage.base import StorageError
from vidanim.worker.assemble import ConfigurationError, build_storage, check_storage_settings
from vidanim.worker.db import ServiceDatabase, open_pool

app = typer.Typer(help="Manage stored videos.", no_args_is_help=True)

CANDIDATES: LiteralString = """
    select id, user_id, completed_at from public.video_jobs
     where status = 'completed' and output_expired_at is null and completed_at < now() - %s
     order by completed_at limit %s
"""
EXPIRE: LiteralString = "select id, user_id, completed_at from public.expire_video_outputs(%s, %s)"


RESTORE: LiteralString = "select id from public.restore_video_output(%s)"
# Names per DELETE request (the Storage server caps a request's list).
DELETE_BATCH = 100
# What Storage still holds, whatever its key may see: the service role reads storage.objects.
STILL_STORED: LiteralString = "select name from storage.objects where bucket_id = %s and name = any(%s)"
# Input images older than the TTL that no queued or processing job names (0055).
STALE_INPUTS: LiteralString = "select name, created_at from public.list_stale_video_inputs(%s, %s)"


async def _delete(s: Settings, bucket: str, names: list[str]) -> list[str]:
    """Delete these objects of `bucket`; the names of those still stored afterwards.

    Storage answers the list of what it deleted (`200 []` when it deleted nothing,
    e.g. when RLS hides the objects from the key in use), and asking Storage again
    would only hear "not found" from a key that cannot see them. So a name missing
    from that list is looked up in `storage.objects`, which says what is stored
    whatever the key: still there is reported.
    """
    pool = open_pool(s.require_database_url(), size=2)
    await pool.open()
    kept: list[str] = []
    try:
        # any key: what Storage does not delete is found in storage.objects and named
        storage = build_storage(s, pool, serve=False, service_key=False)
    except ConfigurationError as exc:
        await pool.close()
        raise StorageError(str(exc)) from None
    try:
        for start in range(0, len(names), DELETE_BATCH):
            batch = names[start : start + DELETE_BATCH]
            try:
                deleted = set(await storage.delete(bucket, batch))
            except StorageError:
                deleted = set()
            unconfirmed = [name for name in batch if name not in deleted]
            if unconfirmed:
                rows = await ServiceDatabase(pool).rows(STILL_STORED, (bucket, unconfirmed))
                stored = {r["name"] for r in rows}
                kept += [name for name in unconfirmed if name in stored]
    finally:
        await storage.aclose()
        await pool.close()
    return kept


def _key_hint(s: Settings) -> str:
    try:
        check_storage_settings(s)
    except ConfigurationError as exc:
        return str(exc)
    return "is VIDANIM_SUPABASE_SERVICE_ROLE_KEY this project's service role key? `vidanim doctor` checks it"


@app.command("cleanup")
def cleanup(
    older_than: Annotated[str, typer.Option("--older-than", help="Age of completed jobs, e.g. 30d, 12h.")] = "30d",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would be removed.")] = False,
    limit: Annotated[int, typer.Option(min=1, max=100000, help="At most this many jobs per run.")] = 1000,
    database_url: DatabaseUrl = None,
    json_out: JsonOut = False,
) -> None:
    """Remove output videos of jobs completed longer ago than --older-than, and input images as old
    that no queued or processing job needs (refused requests', ended jobs').

    Each job is first marked expired (it stays readable, `completed`, with no output
    path), then its video is deleted: no job ever points at a missing object. A
    video that was not deleted is named, its job gets its output back, and the exit
    code is 1.
    """
    age: timedelta = parse_duration(older_than)
    s = settings(database_url)
    try:  # before any job is marked expired: a Storage that cannot be built deletes nothing
        check_storage_settings(s, service_key=False)
    except ConfigurationError as exc:
        raise fail(str(exc), 2) from None
    with handled():
        with as_service(s) as cur:
            cur.execute(CANDIDATES if dry_run else EXPIRE, (age, limit))
            rows = cur.fetchall()
            inputs = cur.execute(STALE_INPUTS, (age, limit)).fetchall()
        by_name = {f"{r['user_id']}/{r['id']}.mp4": r for r in rows}
        failed = [] if dry_run else asyncio.run(_delete(s, "video-outputs", list(by_name)))
        if failed:
            with as_service(s) as cur:
                for name in failed:
                    cur.execute(RESTORE, (by_name[name]["id"],))
        inputs_kept = [] if dry_run else asyncio.run(_delete(s, "video-inputs", [r["name"] for r in inputs]))
    if json_out:
        emit_json(
            {
                "dry_run": dry_run,
                "jobs": rows,
                "failed_deletions": failed,
                "inputs": inputs,
                "failed_input_deletions": inputs_kept,
            }
        )
    else:
        verb = "would expire" if dry_run else "expired"
        typer.echo(f"{verb} {len(rows)} video(s) older than {older_than}")
        if rows:
            table([[r["id"], r["user_id"], r["completed_at"]] for r in rows], ["job", "user", "completed"])
        verb = "would remove" if dry_run else "removed"
        typer.echo(f"{verb} {len(inputs) - len(inputs_kept)} input image(s) older than {older_than} that no job needs")
        if dry_run and inputs:
            table([[r["name"], r["created_at"]] for r in inputs], ["input image", "uploaded"])
    if failed:
        typer.echo(f"could not delete {len(failed)} video(s); their jobs keep them: " + ", ".join(failed), err=True)
    if inputs_kept:
        typer.echo(f"could not delete {len(inputs_kept)} input image(s): " + ", ".join(inputs_kept), err=True)
    if failed or inputs_kept:
        typer.echo(f"Storage's key did not delete what storage.objects holds: {_key_hint(s)}", err=True)
        raise typer.Exit(1)
    return None
