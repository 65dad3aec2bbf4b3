"""The client's behaviour, the same over both transports where the transport allows.

`postgres`: a direct connection acting as the user after verifying the token.
`supabase`: supabase-py against a loopback PostgREST + Storage stand-in that runs
every call on the same real database as that user (tests/support/fake_supabase_api.py).
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from tests.db.helpers import claim, update_status
from tests.support import images
from tests.support.fake_supabase_api import FakeSupabaseApi
from tests.support.image_cases import REFUSED
from tests.support.images import PNG
from tests.support.postgrest import as_service
from tests.support.seed import create_user, put_object, set_limits
from vidanim import errors
from vidanim.client import PostgresTransport, SupabaseTransport, VidanimClient
from vidanim.storage.base import StorageError
from vidanim.storage.local import LocalSigner

SECRET = "client-tests-jwt-secret-with-enough-length!!"


def token_for(user: uuid.UUID, **overrides) -> str:
    claims = {
        "sub": str(user),
        "role": "authenticated",
        "aud": "authenticated",
        "exp": datetime.now(UTC) + timedelta(hours=1),
        **overrides,
    }
    return jwt.encode(claims, SECRET, algorithm="HS256")


@pytest.fixture(params=["postgres", "supabase"])
def make_client(request, db, tmp_path):
    clients = []
    api = None
    if request.param == "supabase":
        api = FakeSupabaseApi(db.dsn, SECRET).__enter__()

    def build(user: uuid.UUID) -> VidanimClient:
        if request.param == "postgres":
            transport = PostgresTransport.from_token(
                db.dsn,
                token_for(user),
                jwt_secret=SECRET,
                storage_root=tmp_path / "store",
                signer=LocalSigner("s", "http://127.0.0.1:9"),
            )
        else:
            transport = SupabaseTransport(api.url, api.anon_key(), token_for(user))
        client = VidanimClient(transport)
        clients.append(client)
        return client

    build.kind = request.param
    yield build
    for c in clients:
        c.close()
    if api is not None:
        api.__exit__()


@pytest.fixture
def conn(db):
    with db.connect() as c:
        yield c


def complete(conn, job) -> None:
    claim(conn, "w")
    update_status(conn, job.id, "processing", provider="fal", provider_task_id="t", worker_id="w")
    path = f"{job.user_id}/{job.id}.mp4"
    put_object(conn, "video-outputs", path, mimetype="video/mp4")
    update_status(conn, job.id, "completed", output_video_path=path, worker_id="w")


def test_upload_request_and_read_back_a_job(make_client, conn):
    user = create_user(conn)
    client = make_client(user)
    path = client.upload_image(PNG, name="cat.png")
    assert path == f"{user}/cat.png"
    job = client.request_animation(path, prompt="wave", options={"duration": 5})
    assert (job.status, job.user_id, job.prompt, job.options) == ("queued", user, "wave", {"duration": 5})
    assert job.client_request_id, "a client_request_id is generated when none is given"
    view = client.get_job(job.id)
    assert view.job.id == job.id
    assert view.video_url is None
    assert [j.id for j in client.list_jobs()] == [job.id]
    assert [e.status for e in client.timeline(job.id)] == ["queued"]


def test_the_same_client_request_id_returns_the_same_job(make_client, conn):
    user = create_user(conn)
    client = make_client(user)
    path = client.upload_image(PNG, name="a.png")
    first = client.request_animation(path, client_request_id="click-1")
    assert client.request_animation(path, client_request_id="click-1").id == first.id
    with pytest.raises(errors.IdempotencyMismatch):
        client.request_animation(path, prompt="other", client_request_id="click-1")


def test_a_completed_job_comes_with_a_fresh_signed_url_every_time(make_client, conn):
    user = create_user(conn)
    client = make_client(user)
    job = client.request_animation(client.upload_image(PNG, name="a.png"))
    complete(conn, job)
    first = client.get_job(job.id, url_expires_in=60)
    assert first.status == "completed"
    assert first.video_url is not None
    assert f"video-outputs/{user}/{job.id}.mp4" in first.video_url
    assert first.video_url_expires_at > datetime.now(UTC)
    later = client.get_job(job.id, url_expires_in=600)
    assert later.video_url_expires_at > first.video_url_expires_at


def test_users_see_only_their_own_jobs(make_client, conn):
    alice, bob = create_user(conn), create_user(conn)
    a, b = make_client(alice), make_client(bob)
    job = a.request_animation(a.upload_image(PNG, name="a.png"))
    assert b.list_jobs() == []
    with pytest.raises(errors.NotFound):
        b.get_job(job.id)
    with pytest.raises(errors.NotFound):
        b.cancel(job.id)


def test_quota_and_its_errors_are_typed(make_client, conn):
    user = create_user(conn)
    set_limits(conn, user, 1, 5)
    client = make_client(user)
    path = client.upload_image(PNG, name="a.png")
    client.request_animation(path)
    q = client.quota()
    assert (q.daily_limit, q.used, q.remaining, q.active_jobs) == (1, 1, 0, 1)
    with pytest.raises(errors.QuotaExceeded) as info:
        client.request_animation(path)
    assert info.value.resets_at == q.resets_at
    set_limits(conn, user, 10, 1)
    with pytest.raises(errors.TooManyActiveJobs):
        client.request_animation(path)


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("{user}/missing.png", errors.NotFound),
        ("{other}/a.png", errors.InvalidInput),
        ("{user}/../x.png", errors.InvalidInput),
    ],
)
def test_bad_requests_map_to_typed_errors(make_client, conn, path, error):
    user = create_user(conn)
    client = make_client(user)
    with pytest.raises(error):
        client.request_animation(path.format(user=user, other=uuid.uuid4()))


def test_cancel_then_cancel_again_is_a_conflict(make_client, conn):
    user = create_user(conn)
    client = make_client(user)
    job = client.request_animation(client.upload_image(PNG, name="a.png"))
    assert client.cancel(job.id).status == "canceled"
    with pytest.raises(errors.Conflict):
        client.cancel(job.id)


def test_wait_follows_the_job_to_its_end(make_client, conn, db):
    user = create_user(conn)
    client = make_client(user)
    job = client.request_animation(client.upload_image(PNG, name="a.png"))
    seen = []
    watched = threading.Event()

    def watch(view) -> None:
        seen.append(view.status)
        watched.set()

    def worker() -> None:
        watched.wait(10)  # the client has seen the job queued
        with db.connect() as c:
            complete(c, job)

    threading.Thread(target=worker).start()
    view = client.wait(job.id, timeout=10, poll_seconds=0.05, on_change=watch)
    assert view.status == "completed"
    assert view.video_url
    assert seen[0] == "queued"
    assert seen[-1] == "completed"


def test_wait_gives_up_at_its_timeout(make_client, conn):
    user = create_user(conn)
    client = make_client(user)
    job = client.request_animation(client.upload_image(PNG, name="a.png"))
    with pytest.raises(TimeoutError):
        client.wait(job.id, timeout=0.2, poll_seconds=0.05)


def test_uploads_outside_the_image_types_are_refused_before_sending(make_client, conn):
    client = make_client(create_user(conn))
    with pytest.raises(errors.InvalidInput):
        client.upload_image(b"x", name="a.gif")


@pytest.mark.parametrize(("name", "data", "message"), REFUSED)
def test_a_bad_image_is_refused_before_storage_or_the_quota_see_it(make_client, conn, tmp_path, name, data, message):
    user = create_user(conn)
    client = make_client(user)
    image = tmp_path / name
    image.write_bytes(data)
    with pytest.raises(errors.InvalidInput) as info:
        client.upload_image(image)
    assert info.value.message.startswith(message)
    assert conn.execute("select count(*) from storage.objects").fetchone() == (0,)
    assert not (tmp_path / "store").exists(), "no file reached local storage"
    assert client.quota().used == 0


@pytest.mark.parametrize("name", ["My cat é.png", "cat+dog 100%.png", "猫.png", "..png", "a/b.png"])
def test_any_local_file_name_becomes_a_safe_object_name(make_client, conn, tmp_path, name):
    user = create_user(conn)
    client = make_client(user)
    image = tmp_path / "input.png"
    image.write_bytes(PNG)
    renamed = image.with_name(name.replace("/", "_"))
    image.rename(renamed)
    path = client.upload_image(renamed)
    folder, object_name = path.split("/")
    assert folder == str(user)
    assert re.fullmatch(r"[0-9a-f]{8}-[A-Za-z0-9._-]+\.png", object_name), object_name
    assert client.request_animation(path).status == "queued"


@pytest.mark.parametrize("bad", ["{user}/../{user}/x.png", "{user}/./x.png", "/{user}/x.png"])
def test_a_dot_segment_or_an_absolute_name_is_invalid_input_on_every_transport(make_client, conn, bad):
    user = create_user(conn)
    client = make_client(user)
    with pytest.raises(errors.InvalidInput):
        client.transport.upload("video-inputs", bad.format(user=user), PNG, "image/png")
    assert conn.execute("select count(*) from storage.objects").fetchone() == (0,)


def test_a_cmyk_jpeg_is_uploaded_as_rgb(make_client, conn, tmp_path):
    client = make_client(create_user(conn))
    image = tmp_path / "print.jpg"
    image.write_bytes(images.jpeg(mode="CMYK"))
    path = client.upload_image(image)
    row = conn.execute(
        "select metadata->>'mimetype' from storage.objects where bucket_id = 'video-inputs' and name = %s", (path,)
    ).fetchone()
    assert row == ("image/jpeg",)


def test_an_explicit_object_name_must_already_be_safe(make_client, conn):
    client = make_client(create_user(conn))
    with pytest.raises(errors.InvalidInput, match="an object name may hold only"):
        client.upload_image(PNG, name="my cat.png")


def test_an_image_cannot_be_uploaded_twice_under_one_name(make_client, conn):
    client = make_client(create_user(conn))
    client.upload_image(PNG, name="a.png")
    with pytest.raises(StorageError):
        client.upload_image(PNG, name="a.png")


# Postgres transport only: its local storage enforces the bucket as the Storage server does ----
def test_local_storage_refuses_what_the_storage_server_refuses_with_its_codes(db, conn, tmp_path):
    user = create_user(conn)
    transport = PostgresTransport.from_token(db.dsn, token_for(user), jwt_secret=SECRET, storage_root=tmp_path)
    with contextlib.closing(transport):
        with pytest.raises(StorageError) as info:
            transport.upload("video-inputs", f"{user}/a.png", b"x" * (10 * 1024 * 1024 + 1), "image/png")
        assert (info.value.status, info.value.code) == (413, "EntityTooLarge")
        with pytest.raises(StorageError) as info:
            transport.upload("video-inputs", f"{user}/a.png", images.gif(), "image/gif")
        assert (info.value.status, info.value.code) == (415, "InvalidMimeType")
        transport.upload("video-inputs", f"{user}/a.png", PNG, "image/png")
        with pytest.raises(StorageError) as info:
            transport.upload("video-inputs", f"{user}/a.png", PNG, "image/png")
        assert (info.value.status, info.value.code) == (409, "KeyAlreadyExists")
    assert conn.execute("select count(*) from storage.objects").fetchone() == (1,)


# Postgres transport only: it verifies the token itself -------------------------------------
@pytest.mark.parametrize(
    "overrides",
    [
        {"exp": datetime.now(UTC) - timedelta(seconds=5)},
        {"aud": "someone-else"},
        {"secret": "wrong" * 10},
        {"role": "service_role"},
    ],
)
def test_the_postgres_transport_refuses_bad_tokens(db, conn, overrides):
    user = create_user(conn)
    overrides = dict(overrides)
    secret = overrides.pop("secret", SECRET)
    claims = {
        "sub": str(user),
        "role": "authenticated",
        "aud": "authenticated",
        "exp": datetime.now(UTC) + timedelta(hours=1),
        **overrides,
    }
    token = jwt.encode(claims, secret, algorithm="HS256")
    with pytest.raises(errors.NotSignedIn):
        PostgresTransport.from_token(db.dsn, token, jwt_secret=SECRET)


def test_the_postgres_transport_refuses_a_token_that_never_expires(db, conn):
    user = create_user(conn)
    token = jwt.encode({"sub": str(user), "role": "authenticated", "aud": "authenticated"}, SECRET, algorithm="HS256")
    with pytest.raises(errors.NotSignedIn, match="invalid access token"):
        PostgresTransport.from_token(db.dsn, token, jwt_secret=SECRET)


def test_the_postgres_transport_verifies_jwks_signing_keys(db, conn):
    import http.server

    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwks = json.dumps({"keys": [{**jwk, "kid": "k1", "alg": "ES256", "use": "sig"}]}).encode()

    class Jwks(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(jwks)))
            self.end_headers()
            self.wfile.write(jwks)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Jwks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        user = create_user(conn)
        token = jwt.encode(
            {
                "sub": str(user),
                "role": "authenticated",
                "aud": "authenticated",
                "exp": datetime.now(UTC) + timedelta(hours=1),
            },
            key,
            algorithm="ES256",
            headers={"kid": "k1"},
        )
        url = f"http://127.0.0.1:{server.server_address[1]}/auth/v1/.well-known/jwks.json"
        transport = PostgresTransport.from_token(db.dsn, token, jwks_url=url)
        assert transport.user_id == user
        transport.close()
        forged = jwt.encode(
            {"sub": str(user), "aud": "authenticated", "exp": datetime.now(UTC) + timedelta(hours=1)},
            ec.generate_private_key(ec.SECP256R1()),
            algorithm="ES256",
            headers={"kid": "k1"},
        )
        with pytest.raises(errors.NotSignedIn):
            PostgresTransport.from_token(db.dsn, forged, jwks_url=url)
    finally:
        server.shutdown()
        server.server_close()


# Supabase transport only: Supabase verifies, and says so in PostgREST's words ------------------
def test_storage_refusing_an_expired_token_is_not_signed_in(db, conn):
    user = create_user(conn)
    expired = token_for(user, exp=datetime.now(UTC) - timedelta(seconds=5))
    with FakeSupabaseApi(db.dsn, SECRET) as api:
        transport = SupabaseTransport(api.url, api.anon_key(), expired)
        with contextlib.closing(transport), pytest.raises(errors.NotSignedIn, match="jwt expired"):
            transport.upload("video-inputs", f"{user}/a.png", PNG, "image/png")


def test_an_unreachable_supabase_is_unavailable_not_a_traceback(conn):
    user = create_user(conn)
    transport = SupabaseTransport("http://127.0.0.1:1", "anon", token_for(user))
    with contextlib.closing(transport):
        with pytest.raises(errors.Unavailable, match="could not be reached"):
            transport.rpc("get_video_quota", {})
        with pytest.raises(errors.Unavailable):
            transport.upload("video-inputs", f"{user}/a.png", PNG, "image/png")


def test_the_supabase_transport_maps_an_expired_token(db, conn):
    user = create_user(conn)
    with FakeSupabaseApi(db.dsn, SECRET) as api:
        expired = jwt.encode(
            {
                "sub": str(user),
                "role": "authenticated",
                "aud": "authenticated",
                "exp": datetime.now(UTC) - timedelta(seconds=5),
            },
            SECRET,
            algorithm="HS256",
        )
        with (
            VidanimClient(SupabaseTransport(api.url, api.anon_key(), expired)) as client,
            pytest.raises(errors.NotSignedIn),
        ):
            client.quota()


def test_the_supabase_transport_upload_into_another_folder_is_denied(db, conn):
    user = create_user(conn)
    with FakeSupabaseApi(db.dsn, SECRET) as api:
        transport = SupabaseTransport(api.url, api.anon_key(), token_for(user))
        with pytest.raises(StorageError) as info:
            transport.upload("video-inputs", f"{uuid.uuid4()}/x.png", PNG, "image/png")
        transport.close()
    assert "refused" in str(info.value)


def test_creating_a_job_is_logged_with_its_ids(make_client, conn, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="vidanim")
    user = create_user(conn)
    client = make_client(user)
    job = client.request_animation(client.upload_image(PNG, name="a.png"), client_request_id="req-9")
    (record,) = [r for r in caplog.records if getattr(r, "event", None) == "job.created"]
    assert record.fields == {"job_id": str(job.id), "user_id": str(user), "client_request_id": "req-9"}


def test_a_waiting_job_tells_its_user_why(make_client, conn):
    client = make_client(create_user(conn))
    job = client.request_animation(client.upload_image(PNG, name="a.png"))
    claim(conn, "w1")
    conn.execute("set role service_role")
    conn.execute("select public.defer_video_job(%s, 'w1', 60, 'providers_unavailable')", (job.id,))
    conn.execute("reset role")
    view = client.get_job(job.id)
    assert (view.job.status, view.job.waiting_reason) == ("queued", "providers_unavailable")
    assert view.job.waiting_message == (
        "The video providers are not available right now; your video starts as soon as they are."
    )


def complete_processing(conn, job) -> None:
    path = f"{job.user_id}/{job.id}.mp4"
    put_object(conn, "video-outputs", path, mimetype="video/mp4")
    update_status(conn, job.id, "completed", output_video_path=path, worker_id="w")


def _seen_while_waiting(make_client, conn, db, provider_status: str, updates, field: str):
    """`client.wait` on a processing job while a stand-in worker writes `updates` (progress, queue
    place) one at a time under one provider status; the final view and each `field` value seen."""
    user = create_user(conn)
    client = make_client(user)
    job = client.request_animation(client.upload_image(PNG, name="a.png"))
    claim(conn, "w")
    provider = "runway" if provider_status == "RUNNING" else "fal"
    update_status(
        conn,
        job.id,
        "processing",
        provider=provider,
        provider_task_id="t",
        provider_status=provider_status,
        worker_id="w",
    )
    seen: list[tuple[str, int | None]] = []
    changed = threading.Condition()

    def watch(view) -> None:
        with changed:
            seen.append((view.status, getattr(view.job, field)))
            changed.notify_all()

    def worker() -> None:
        with changed:  # the client has seen the job running, no progress yet
            changed.wait_for(lambda: bool(seen), timeout=5)
        with db.connect() as c:
            for progress, place in updates:
                with as_service(c) as cur:
                    cur.execute(
                        "select public.service_update_video_job_progress(%s, 'w', %s, %s)", (job.id, progress, place)
                    )
                value = progress if field == "progress" else place
                with changed:  # the client saw it (or 5 s went by: the caller's assertion says which)
                    changed.wait_for(lambda v=value: ("processing", v) in seen, timeout=5)
            complete_processing(c, job)

    thread = threading.Thread(target=worker)
    thread.start()
    view = client.wait(job.id, timeout=30, poll_seconds=0.05, on_change=watch)
    thread.join()
    return view, [v for s, v in seen if s == "processing"]


def test_wait_reports_each_new_progress_under_the_same_provider_status(make_client, conn, db):
    """`animate --wait` shows Runway's progress move: a change of progress alone is a change."""
    view, seen = _seen_while_waiting(make_client, conn, db, "RUNNING", [(40, None), (60, None)], "progress")
    assert view.status == "completed"
    assert seen == [None, 40, 60]


def test_wait_reports_each_new_queue_place_under_the_same_provider_status(make_client, conn, db):
    """fal stays IN_QUEUE while its queue place counts down: a change of place alone is a change."""
    updates = [(None, 3), (None, 2), (None, 1)]
    view, seen = _seen_while_waiting(make_client, conn, db, "IN_QUEUE", updates, "queue_position")
    assert view.status == "completed"
    assert seen == [None, 3, 2, 1]


def test_the_postgres_transport_refuses_a_signed_anon_token_as_a_user(db, conn):
    user = create_user(conn)
    token = token_for(user, role="anon")
    with pytest.raises(errors.NotSignedIn, match="not a signed-in user's"):
        PostgresTransport.from_token(db.dsn, token, jwt_secret=SECRET)
    signed_in = PostgresTransport.from_token(db.dsn, token_for(user), jwt_secret=SECRET)  # the control
    signed_in.close()
