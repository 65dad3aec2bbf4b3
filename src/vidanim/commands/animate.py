"""`vidanim animate IMAGE`: request a video as a user, and follow it live."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn, TimeElapsedColumn

from vidanim.client import JobView, PostgresTransport, SupabaseTransport, VidanimClient
from vidanim.commands.common import DatabaseUrl, JsonOut, emit_json, fail, handled, settings, user_client
from vidanim.images import rules_for
from vidanim.settings import Settings
from vidanim.storage.local import LocalSigner
from vidanim.supabase_keys import WrongKey


def _client(s: Settings, user: uuid.UUID | None, token: str | None) -> VidanimClient:
    if user is not None and token is not None:
        raise typer.BadParameter("give --user or --access-token, not both")
    if user is not None:
        return user_client(s, user)
    if token is None:
        raise typer.BadParameter("say who asks: --access-token TOKEN (a user's), or --user UUID (operators)")
    if s.storage_backend == "supabase" and s.supabase_url and s.supabase_anon_key is not None:
        try:
            transport = SupabaseTransport(s.supabase_url, s.supabase_anon_key.get_secret_value(), token)
        except WrongKey as exc:
            raise fail(str(exc), 2) from None
        return VidanimClient(transport, image_rules=rules_for(s.provider_order()))
    signer = LocalSigner(
        s.local_storage_secret.get_secret_value() if s.local_storage_secret else None, s.local_storage_url
    )
    return VidanimClient(
        PostgresTransport.from_token(
            s.require_database_url(),
            token,
            jwt_secret=s.jwt_secret.get_secret_value() if s.jwt_secret else None,
            jwks_url=s.jwks_url,
            storage_root=s.local_storage_dir,
            signer=signer,
        ),
        image_rules=rules_for(s.provider_order()),
    )


BAR_WIDTH = 20


def describe(view: JobView, *, text_bar: bool = False) -> str:
    """The job's state in a few words: status, provider status, its progress as a bar of text
    (with `text_bar`) or else its place in the queue, and why it waits."""
    job = view.job
    text = job.status + (f" [{job.provider}: {job.provider_status}]" if job.provider_status else "")
    if job.status == "processing" and job.progress is not None:
        if text_bar:
            filled = round(job.progress / 100 * BAR_WIDTH)
            text += f" {'█' * filled}{'░' * (BAR_WIDTH - filled)} {job.progress:3d}%"
    elif job.status == "processing" and job.queue_position is not None:
        text += f" (place {job.queue_position} in the provider's queue)"
    return text + (f" (waiting: {job.waiting_message})" if job.waiting_message else "")


class LiveProgress:
    """`animate --wait` on a terminal: one rich progress bar that follows the job.

    The bar fills with the provider's progress (Runway's), pulses while the provider
    does not say how far along it is (fal), and is full at `completed`. Off a terminal
    (a pipe, a log, CI) the command prints `progress_line` per change instead.
    """

    def __init__(self, console: Console | None = None):
        self.progress = Progress(
            TextColumn("{task.description}", markup=False),  # provider statuses hold brackets
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        self.task: TaskID | None = None

    def __enter__(self) -> LiveProgress:
        self.progress.start()
        self.task = self.progress.add_task("queued", total=None)
        return self

    def show(self, view: JobView) -> None:
        assert self.task is not None
        job = view.job
        done = 100 if job.status == "completed" else job.progress
        self.progress.update(
            self.task, description=describe(view), total=100 if done is not None else None, completed=done or 0
        )

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.progress.stop()


def progress_line(view: JobView) -> str:
    """One line per change (off a terminal): the job described, with a bar of text for its progress."""
    return "  " + describe(view, text_bar=True)


def interrupted_message(job_id: uuid.UUID) -> str:
    """What Ctrl-C during --wait leaves: the job, untouched, and how to find it again."""
    return (
        f"stopped following job {job_id}; the job goes on (it is not canceled, and stopping here costs nothing): "
        f"follow it with `vidanim jobs show {job_id}`, stop it with `vidanim jobs cancel {job_id}`"
    )


def _follow(client: VidanimClient, job_id: uuid.UUID, timeout: float, on_change: Callable[[JobView], None]) -> JobView:
    try:
        return client.wait(job_id, timeout=timeout, on_change=on_change)
    except TimeoutError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        raise fail(interrupted_message(job_id), 130) from None


def animate(
    image: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="A PNG, JPEG or WebP.")],
    prompt: Annotated[str | None, typer.Option(help="What should move, and how.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the job to its end, live.")] = False,
    user: Annotated[uuid.UUID | None, typer.Option(help="Act as this user (operators, direct database).")] = None,
    access_token: Annotated[
        str | None,
        typer.Option(envvar="VIDANIM_ACCESS_TOKEN", show_default=False, help="A signed-in user's access token."),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait with --wait.")] = 900.0,
    database_url: DatabaseUrl = None,
    json_out: JsonOut = False,
) -> None:
    """Upload IMAGE and request an animation of it."""
    s = settings(database_url)
    with handled(), _client(s, user, access_token) as client:
        path = client.upload_image(image)
        job = client.request_animation(path, prompt=prompt)
        if not json_out:
            typer.echo(f"job {job.id} {job.status} (image {path})")
        view = JobView(job)
        if wait and not json_out and sys.stdout.isatty():
            with LiveProgress() as live:
                view = _follow(client, job.id, timeout, live.show)
        elif wait:

            def show(v: JobView) -> None:
                if not json_out:
                    typer.echo(progress_line(v))

            view = _follow(client, job.id, timeout, show)
    if json_out:
        emit_json({"job": view.job, "video_url": view.video_url, "video_url_expires_at": view.video_url_expires_at})
    elif view.status == "completed":
        where = view.video_url or str(s.local_storage_dir / "video-outputs" / (view.job.output_video_path or ""))
        typer.echo(f"video: {where}")
    if view.status in ("failed", "canceled"):
        raise fail(f"job {view.status}: {view.job.error_message or ''}".strip(), 3)
