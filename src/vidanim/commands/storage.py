"""`vidanim storage cleanup`: remove old output videos, keep their jobs readable."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Annotated, Any, LiteralString

import typer

from vidanim.commands.common import (
    DatabaseUrl,
    JsonOut,
    as_service,
    emit_json,
    handled,
    parse_duration,
    settings,
    table,
)
from vidanim.settings import Settings
from vidanim.storage.base import Storage, StorageError
from vidanim.storage.local import LocalStorage
from vidanim.storage.supabase import SupabaseStorage
from vidanim.worker.db import open_pool

app = typer.Typer(help="Manage stored videos.", no_args_is_help=True)

CANDIDATES: LiteralString = """
    select id, user_id, completed_at from public.video_jobs
     where status = 'completed' and output_expired_at is null and completed_at < now() - %s
     order by completed_at limit %s
"""
EXPIRE: LiteralString = "select id, user_id, completed_at from public.expire_video_outputs(%s, %s)"


async def _delete(s: Settings, rows: list[dict[str, Any]]) -> list[str]:
    """Delete each expired job's video; the names that could not be deleted."""
    failed: list[str] = []
    pool = open_pool(s.require_database_url(), size=2)
    await pool.open()
    storage: Storage
    if s.storage_backend == "supabase":
        if not s.supabase_url or s.supabase_service_role_key is None:
            raise StorageError("storage_backend=supabase needs VIDANIM_SUPABASE_URL and the service role key")
        storage = SupabaseStorage(
            supabase_url=s.supabase_url, service_role_key=s.supabase_service_role_key.get_secret_value()
        )
    else:
        storage = LocalStorage(root=s.local_storage_dir, pool=pool)
    try:
        for row in rows:
            name = f"{row['user_id']}/{row['id']}.mp4"
            try:
                await storage.delete("video-outputs", [name])
            except StorageError:
                failed.append(name)
    finally:
        await storage.aclose()
        await pool.close()
    return failed


@app.command("cleanup")
def cleanup(
    older_than: Annotated[str, typer.Option("--older-than", help="Age of completed jobs, e.g. 30d, 12h.")] = "30d",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would be removed.")] = False,
    limit: Annotated[int, typer.Option(min=1, max=100000, help="At most this many jobs per run.")] = 1000,
    database_url: DatabaseUrl = None,
    json_out: JsonOut = False,
) -> None:
    """Remove output videos of jobs completed longer ago than --older-than.

    Each job is first marked expired (it stays readable, `completed`, with no output
    path), then its video is deleted: no job ever points at a missing object.
    """
    age: timedelta = parse_duration(older_than)
    s = settings(database_url)
    with handled():
        with as_service(s) as cur:
            cur.execute(CANDIDATES if dry_run else EXPIRE, (age, limit))
            rows = cur.fetchall()
        failed = [] if dry_run else asyncio.run(_delete(s, rows))
    if json_out:
        return emit_json({"dry_run": dry_run, "jobs": rows, "failed_deletions": failed})
    verb = "would expire" if dry_run else "expired"
    typer.echo(f"{verb} {len(rows)} video(s) older than {older_than}")
    if rows:
        table([[r["id"], r["user_id"], r["completed_at"]] for r in rows], ["job", "user", "completed"])
    if failed:
        typer.echo(
            f"could not delete {len(failed)} object(s) (their jobs are already expired): " + ", ".join(failed), err=True
        )
        raise typer.Exit(1)
    return None
