"""The PostgreSQL the tests run on.

In order: TEST_DATABASE_URL (an admin DSN of a server we may create databases
on), a testcontainers PostgreSQL 15 where a Docker engine answers, else a
throwaway cluster from the local binaries (vidanim.db.embedded).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import httpx

from vidanim.db.embedded import EmbeddedPostgres


def _docker_answers() -> bool:
    """Whether a Docker engine answers its ping (GET /_ping), within 2 seconds."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        if host.startswith("unix://"):
            path = host.removeprefix("unix://")
            if not os.path.exists(path):
                return False
            with httpx.Client(transport=httpx.HTTPTransport(uds=path), timeout=2) as client:
                return client.get("http://docker/_ping").status_code == 200
        if host.startswith("tcp://"):
            with httpx.Client(timeout=2) as client:
                return client.get("http://" + host.removeprefix("tcp://") + "/_ping").status_code == 200
    except httpx.HTTPError:
        return False
    return False


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Yield an admin DSN (connected to the `postgres` database)."""
    if url := os.environ.get("TEST_DATABASE_URL"):
        yield url
        return
    if os.environ.get("VIDANIM_TEST_DOCKER", "auto") != "never" and _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:15", driver=None) as container:
            yield container.get_connection_url()
        return
    with EmbeddedPostgres() as pg:
        yield pg.dsn()
