"""`make demo`: one image becomes one video, end to end, on this machine alone.

A throwaway PostgreSQL (migrated), the provider simulator rendering a real MP4 (a
pan-and-zoom of the input, made with the ffmpeg that the imageio-ffmpeg package
ships), local storage, a demo user with a signed access token, the client acting as
that user, and the worker with its HTTP server taking fal's signed webhooks. The
user watches the job move (its place in fal's queue, read by the fallback poll,
every 1.5 s here instead of 30 s so there is something to watch); the result
arrives by webhook. Everything but the video is removed at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import jwt
import psycopg

from vidanim.client import JobView, PostgresTransport, VidanimClient
from vidanim.commands.animate import progress_line
from vidanim.db.embedded import EmbeddedPostgres
from vidanim.db.migrate import migrate
from vidanim.ports import free_port
from vidanim.settings import Settings
from vidanim.simulator import Simulator
from vidanim.storage.local import LocalStorage
from vidanim.worker.assemble import assembled

PAN_AND_ZOOM = (
    "zoompan=z='min(zoom+0.002,1.4)':x='iw/2-(iw/zoom/2)':y='ih/2-(ih/zoom/2)':d=75:s=640x360:fps=25,format=yuv420p"
)


def ffmpeg() -> str:
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


def make_image(path: Path) -> None:
    subprocess.run(
        [
            ffmpeg(),
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "mandelbrot=size=640x360:rate=1",
            "-frames:v",
            "1",
            "-y",
            str(path),
        ],
        check=True,
    )


def pan_and_zoom(workdir: Path) -> Callable[[str], bytes]:
    """A video factory for the simulator: fetch the image the worker signed, animate it."""

    def render(image_url: str) -> bytes:
        key = uuid.uuid4().hex
        image, video = workdir / f"{key}.png", workdir / f"{key}.mp4"
        image.write_bytes(httpx.get(image_url, timeout=30).raise_for_status().content)
        subprocess.run(
            [
                ffmpeg(),
                "-hide_banner",
                "-loglevel",
                "error",
                "-loop",
                "1",
                "-i",
                str(image),
                "-vf",
                PAN_AND_ZOOM,
                "-frames:v",
                "75",
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-movflags",
                "+faststart",
                "-y",
                str(video),
            ],
            check=True,
        )
        return video.read_bytes()

    return render


def playable_seconds(video: Path) -> float:
    """Decode the whole file; its duration in seconds (raises if it does not decode)."""
    out = subprocess.run(
        [ffmpeg(), "-hide_banner", "-i", str(video), "-f", "null", "-"], capture_output=True, text=True, check=True
    ).stderr
    for line in out.splitlines():
        if "Duration:" in line:
            h, m, s = line.split("Duration:")[1].split(",")[0].strip().split(":")
            return int(h) * 3600 + int(m) * 60 + float(s)
    raise RuntimeError("ffmpeg reported no duration")


# The fallback poll of the demo: slower than the queue's steps, faster than the 30 s default.
DEMO_FALLBACK_POLL_SECONDS = 1.5


def run(output_dir: Path, say: Callable[[str], None] = print) -> Path:
    """Run the whole flow; returns the path of the finished video."""
    started = time.monotonic()
    output_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vidanim-demo-")))
        say("1/6 starting a throwaway PostgreSQL and applying the migrations")
        pg = stack.enter_context(EmbeddedPostgres())
        dsn = pg.dsn()
        migrate(dsn)
        with psycopg.connect(dsn) as conn:
            version = conn.execute("select current_setting('server_version')").fetchone()
        say(f"      PostgreSQL {version[0] if version else '?'} from {pg.bindir}")
        say("2/6 starting the provider simulator (fal.ai and Runway APIs on loopback)")
        sim = stack.enter_context(Simulator(queue_seconds=3.0, run_seconds=2.0, video_factory=pan_and_zoom(work)))

        user_id = uuid.uuid4()
        jwt_secret = uuid.uuid4().hex * 2
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "insert into auth.users (id, aud, role, email) values (%s, 'authenticated',"
                " 'authenticated', 'demo@example.test')",
                (user_id,),
            )
        token = jwt.encode(
            {
                "sub": str(user_id),
                "role": "authenticated",
                "aud": "authenticated",
                "email": "demo@example.test",
                "exp": datetime.now(UTC) + timedelta(hours=1),
            },
            jwt_secret,
            algorithm="HS256",
        )
        image = work / "demo.png"
        make_image(image)
        say(f"3/6 demo user {user_id} signed in (HS256 access token); input image {image.name} made")

        port = free_port()
        settings = Settings(
            _env_file=None,
            database_url=dsn,
            worker_id="demo-worker",
            fal_key=sim.fal_key,
            fal_queue_url=sim.base_url,
            http_port=port,
            webhook_public_url=f"http://127.0.0.1:{port}",
            fal_webhook_jwks_urls=sim.jwks_url,
            fal_webhook_user_id=sim.webhooks.user_id,
            output_dev_hosts=sim.base_url.removeprefix("http://"),
            fal_webhook_poll_seconds=DEMO_FALLBACK_POLL_SECONDS,
            runway_api_secret=sim.runway_secret,
            runway_base_url=sim.base_url,
            local_storage_dir=work / "storage",
            worker_idle_poll_seconds=0.2,
            log_level="WARNING",
        )

        async def flow() -> JobView:
            async with assembled(settings) as app:
                assert isinstance(app.storage, LocalStorage)
                transport = PostgresTransport.from_token(
                    dsn,
                    token,
                    jwt_secret=jwt_secret,
                    storage_root=settings.local_storage_dir,
                    signer=app.storage.signer,
                )
                with VidanimClient(transport) as client:
                    path = client.upload_image(image)
                    job = client.request_animation(path, prompt="slowly zoom into the fractal")
                    say(f"4/6 job {job.id} requested as the user ({path}); the worker takes it from here")
                    worker = asyncio.create_task(app.worker.run(install_signals=False))

                    def progress(view: JobView) -> None:
                        say(f"    {progress_line(view)}")

                    view = await asyncio.to_thread(
                        client.wait, job.id, timeout=120, poll_seconds=0.2, on_change=progress
                    )
                    app.worker.stop()
                    await worker
                    verified = app.metrics.registry.get_sample_value(
                        "vidanim_webhook_deliveries_total", {"provider": "fal", "outcome": "recorded"}
                    )
                    if view.status == "completed" and (verified != 1 or sim.requests["fal.result"]):
                        raise RuntimeError("the demo job did not complete through its webhook")
                    say(
                        f"      the result came by fal's signed webhook ({verified:.0f} verified delivery);"
                        f" {sim.requests['fal.status']} fallback status polls, no result fetched"
                    )
                    say("5/6 the job's timeline:")
                    for event in client.timeline(job.id):
                        say(
                            f"      {event.created_at:%H:%M:%S.%f}  {event.status:<10} "
                            f"{(event.provider or ''):<6} {event.provider_status or ''}"
                        )
                    return view

        view = asyncio.run(flow())
        if view.status != "completed" or view.job.output_video_path is None:
            raise RuntimeError(f"the demo job ended {view.status}: {view.job.error_message}")
        stored = settings.local_storage_dir / "video-outputs" / view.job.output_video_path
        final = output_dir / f"{view.job.id}.mp4"
        shutil.copyfile(stored, final)
        seconds = playable_seconds(final)
        say(f"6/6 completed in {time.monotonic() - started:.1f} s")
        say(f"      signed URL, valid until {view.video_url_expires_at:%H:%M:%S} UTC while its storage server ran:")
        say(f"      {view.video_url}")
        say(f"      video: {final.resolve()} ({final.stat().st_size:,} bytes, {seconds:.1f} s, decodes cleanly)")
    return final
