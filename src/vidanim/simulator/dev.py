"""`vidanim dev` (what `make dev` runs): everything a developer runs vidanim against, on this machine.

A throwaway PostgreSQL with the migrations and two seed users, the provider simulator
rendering real MP4s, and a worker with its operator listener (/metrics, /healthz,
/readyz) and local storage; then the exact variables to paste into another shell, so
`vidanim animate`, `vidanim jobs list` or your own code talk to it. Ctrl-C (or SIGTERM)
stops the worker, the simulator and the database, in that order. Nothing outlives it
but the stored files under its data directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shlex
import tempfile
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import psycopg

from vidanim.db.embedded import EmbeddedPostgres
from vidanim.db.migrate import migrate
from vidanim.ports import free_port
from vidanim.settings import Settings
from vidanim.simulator import Simulator
from vidanim.simulator.demo import pan_and_zoom
from vidanim.worker.assemble import assembled

SEED_USERS = ("alice@example.test", "bob@example.test")
SEED_USER: str = "insert into auth.users (id, aud, role, email) values (%s, 'authenticated', 'authenticated', %s)"
READY = "vidanim dev is ready"


def user_token(user_id: uuid.UUID, email: str, secret: str, hours: float = 12) -> str:
    """An access token as Supabase Auth signs one (HS256, the project's JWT secret)."""
    claims = {
        "sub": str(user_id),
        "role": "authenticated",
        "aud": "authenticated",
        "email": email,
        "exp": datetime.now(UTC) + timedelta(hours=hours),
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def run(data_dir: Path | None = None, say: Callable[[str], None] = print) -> None:
    """Start everything, print the variables, serve until SIGINT/SIGTERM, stop everything."""
    with contextlib.ExitStack() as stack:
        base = data_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vidanim-dev-")))
        base.mkdir(parents=True, exist_ok=True)
        say("starting PostgreSQL and applying the migrations")
        pg = stack.enter_context(EmbeddedPostgres())
        dsn = pg.dsn()
        migrate(dsn)
        users = [(uuid.uuid4(), email) for email in SEED_USERS]
        with psycopg.connect(dsn, autocommit=True) as conn:
            for user_id, email in users:
                conn.execute(SEED_USER, (user_id, email))
        say("starting the provider simulator (rendered MP4s)")
        renders = base / "renders"
        renders.mkdir(exist_ok=True)
        sim = stack.enter_context(Simulator(queue_seconds=1.0, run_seconds=2.0, video_factory=pan_and_zoom(renders)))
        jwt_secret = secrets.token_urlsafe(32)
        env = {
            "VIDANIM_DATABASE_URL": dsn,
            "VIDANIM_JWT_SECRET": jwt_secret,
            "VIDANIM_FAL_KEY": sim.fal_key,
            "VIDANIM_FAL_QUEUE_URL": sim.base_url,
            "VIDANIM_RUNWAY_API_SECRET": sim.runway_secret,
            "VIDANIM_RUNWAY_BASE_URL": sim.base_url,
            "VIDANIM_RUNWAY_ENFORCE_MIN_POLL": "false",
            "VIDANIM_OUTPUT_DEV_HOSTS": sim.base_url.removeprefix("http://"),
            "VIDANIM_LOCAL_STORAGE_DIR": str(base / "storage"),
            "VIDANIM_LOCAL_STORAGE_SECRET": secrets.token_urlsafe(24),
            "VIDANIM_LOCAL_STORAGE_URL": f"http://127.0.0.1:{free_port()}",
        }
        operator_port = free_port()
        values: dict[str, object] = {k.removeprefix("VIDANIM_").lower(): v for k, v in env.items()}
        values |= {"worker_id": "dev-worker", "fal_poll_seconds": 0.5, "runway_poll_seconds": 0.5}
        settings = Settings.model_validate({**values, "operator_port": operator_port})

        async def serve() -> None:
            async with assembled(settings) as app:
                say("")
                say("Paste into another shell:")
                for key, value in env.items():
                    say(f"  export {key}={shlex.quote(value)}")
                say("")
                for user_id, email in users:
                    name = email.split("@")[0].upper()
                    say(
                        f"  export {name}_ID={user_id} {name}_TOKEN={user_token(user_id, email, jwt_secret)}  # {email}"
                    )
                say("")
                say("Then, for example (as a signed-in user, then as an operator acting for one):")
                say('  vidanim animate cat.png --access-token "$ALICE_TOKEN" --wait')
                say('  vidanim animate cat.png --user "$BOB_ID" --wait')
                say("  vidanim jobs list")
                say(f"  curl http://127.0.0.1:{operator_port}/metrics")
                say("")
                say(f"{READY} (Ctrl-C stops it)")
                await app.worker.run()
            say("stopping: the worker has left its jobs; the simulator and PostgreSQL stop now")

        asyncio.run(serve())
    say("stopped")
