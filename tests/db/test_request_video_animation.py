"""request_video_animation: validation, existence, idempotency, as an attacker tries it."""

from __future__ import annotations

import threading
import uuid

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.db.helpers import REQUEST, raises_sqlstate, request_job, usage
from tests.support.postgrest import as_anon, as_user, request
from tests.support.seed import create_user, put_input_image, put_object


@pytest.fixture
def alice(conn):
    return create_user(conn)


@pytest.fixture
def image(conn, alice):
    return put_input_image(conn, alice)


def test_a_signed_in_user_creates_a_queued_job_and_pays_one_unit(conn, alice, image):
    job = request_job(conn, alice, image, "wave hello", {"duration": 5}, "click-1")
    assert job["status"] == "queued"
    assert job["user_id"] == alice
    assert job["input_image_path"] == image
    assert job["options"] == {"duration": 5}
    assert job["client_request_id"] == "click-1"
    assert job["attempts"] == 0
    assert usage(conn, alice) == 1
    events = conn.execute("select status from public.video_job_events where job_id = %s", (job["id"],)).fetchall()
    assert events == [("queued",)]


def test_options_default_to_an_empty_object_and_null_prompt_is_allowed(conn, alice, image):
    with as_user(conn, alice) as cur:
        cur.execute("select * from public.request_video_animation(%s)", (image,))
        job = cur.fetchone()
    assert job is not None
    assert job["options"] == {}
    assert job["prompt"] is None


def test_anon_gets_permission_denied(conn, image):
    with raises_sqlstate("42501"), as_anon(conn) as cur:
        cur.execute(REQUEST, (image, None, Jsonb({}), None))


def test_authenticated_role_without_a_sub_claim_is_not_signed_in(conn, image):
    with raises_sqlstate("42501", "not signed in"), request(conn, "authenticated", {"aud": "authenticated"}) as cur:
        cur.execute(REQUEST, (image, None, Jsonb({}), None))


def test_anonymous_sign_in_users_cannot_spend_provider_money(conn):
    ghost = create_user(conn, anonymous=True)
    path = put_input_image(conn, ghost)
    with raises_sqlstate("42501", "anonymous"), as_user(conn, ghost, is_anonymous=True) as cur:
        cur.execute(REQUEST, (path, None, Jsonb({}), None))
    assert usage(conn, ghost) == 0


def test_a_missing_image_is_not_found_and_costs_nothing(conn, alice):
    with raises_sqlstate("PT404", "not found"):
        request_job(conn, alice, f"{alice}/nope.png")
    assert usage(conn, alice) == 0


def test_an_image_in_another_users_folder_is_refused(conn, alice):
    bob = create_user(conn)
    bobs_image = put_input_image(conn, bob)
    with raises_sqlstate("22023", "your own folder"):
        request_job(conn, alice, bobs_image)
    assert usage(conn, alice) == 0


def test_an_object_of_the_same_name_in_the_outputs_bucket_does_not_count(conn, alice):
    put_object(conn, "video-outputs", f"{alice}/x.png", owner=alice)
    with raises_sqlstate("PT404"):
        request_job(conn, alice, f"{alice}/x.png")


def _bad_paths(uid: str) -> list[tuple[str, str]]:
    return [
        ("", "required"),
        (f"/{uid}/a.png", "leading slash"),
        (f"{uid}/../{uid}/a.png", "segment"),
        (f"{uid}/./a.png", "segment"),
        (f"{uid}//a.png", "segment"),
        (f"{uid}/", "segment"),
        (f"{uid}\\a.png", "backslash"),
        (f"{uid}/a\x01.png", "control character"),
        (f"{uid}/a\n.png", "control character"),
        (f"{uid}/a.gif", "image"),
        (f"{uid}/a.png.exe", "image"),
        (f"{uid}/.png", "image"),
        (f"{uid}/a", "image"),
        ("a.png", "own folder"),
        (f"{uid.upper()}/a.png", "own folder"),
        (f"{uid}x/a.png", "own folder"),
        (f"../{uid}/a.png", "segment"),
        (f"{uid}/" + "a" * 1020 + ".png", "1024"),
    ]


@pytest.mark.parametrize("case", range(18))
def test_malformed_image_paths_are_refused_with_22023(conn, alice, case):
    path, message = _bad_paths(str(alice))[case]
    with raises_sqlstate("22023", message):
        request_job(conn, alice, path)
    assert usage(conn, alice) == 0


@pytest.mark.parametrize("name", ["a.PNG", "deep/er/b.Jpg", "c.jpeg", "d.WEBP", "x" * (1024 - 37 - 4) + ".png"])
def test_well_formed_paths_in_any_extension_case_are_accepted(conn, alice, name):
    path = put_input_image(conn, alice, name)
    assert request_job(conn, alice, path)["input_image_path"] == path


def test_a_null_image_path_is_refused(conn, alice):
    with raises_sqlstate("22023", "required"):
        request_job(conn, alice, None)  # type: ignore[arg-type]


def test_prompt_is_bounded_to_2000_characters(conn, alice, image):
    assert request_job(conn, alice, image, "é" * 2000)["prompt"] == "é" * 2000
    with raises_sqlstate("22023", "prompt"):
        request_job(conn, alice, image, "p" * 2001)


@pytest.mark.parametrize("options", [[1, 2], "text", 5, None])
def test_options_must_be_a_json_object(conn, alice, image, options):
    with raises_sqlstate("22023", "JSON object"), as_user(conn, alice) as cur:
        cur.execute(REQUEST, (image, None, Jsonb(options), None))


def test_options_are_bounded_to_16_kib(conn, alice, image):
    assert request_job(conn, alice, image, options={"negative_prompt": "v" * 2500})
    with raises_sqlstate("22023", "16 KiB"):
        request_job(conn, alice, image, options={"k": "v" * 16400})


@pytest.mark.parametrize("bad", ["", "a b", "a/b", "x" * 256, "ünï", "a;drop table", "\x00"[:0] + "tab\t"])
def test_client_request_id_charset_and_length_are_enforced(conn, alice, image, bad):
    with raises_sqlstate("22023", "client_request_id"):
        request_job(conn, alice, image, client_request_id=bad)


def test_a_uuid_and_the_full_charset_fit_in_client_request_id(conn, alice, image):
    assert request_job(conn, alice, image, client_request_id=str(uuid.uuid4()))
    assert request_job(conn, alice, image, client_request_id="Az09._:-" + "x" * 247)


def test_same_client_request_id_and_parameters_return_the_same_job_charged_once(conn, alice, image):
    first = request_job(conn, alice, image, "p", {"duration": 5}, "req-1")
    again = request_job(conn, alice, image, "p", {"duration": 5}, "req-1")
    assert again["id"] == first["id"]
    assert usage(conn, alice) == 1
    assert conn.execute("select count(*) from public.video_jobs").fetchone() == (1,)


def test_a_replay_returns_the_job_even_after_the_image_is_gone_and_quota_is_spent(conn, alice, image):
    first = request_job(conn, alice, image, client_request_id="req-1")
    conn.execute("set storage.allow_delete_query = 'true'")
    conn.execute("delete from storage.objects")
    conn.execute("update public.video_quota_usage set used = 1000")
    assert request_job(conn, alice, image, client_request_id="req-1")["id"] == first["id"]


@pytest.mark.parametrize(
    "change", [{"prompt": "other"}, {"options": {"duration": 10}}, {"path": "other.png"}, {"prompt": None}]
)
def test_same_client_request_id_with_different_parameters_is_pt422(conn, alice, image, change):
    request_job(conn, alice, image, "p", {"duration": 5}, "req-1")
    path = put_input_image(conn, alice, "other.png") if "path" in change else image
    with raises_sqlstate("PT422", "different parameters"):
        request_job(conn, alice, path, change.get("prompt", "p"), change.get("options", {"duration": 5}), "req-1")
    assert usage(conn, alice) == 1


def test_client_request_ids_are_per_user(conn, alice, image):
    bob = create_user(conn)
    bob_image = put_input_image(conn, bob)
    a = request_job(conn, alice, image, client_request_id="same")
    b = request_job(conn, bob, bob_image, client_request_id="same")
    assert a["id"] != b["id"]


def test_concurrent_identical_client_request_ids_create_one_job(db):
    with db.connect() as admin:
        user = create_user(admin)
        path = put_input_image(admin, user)
    results: list[uuid.UUID] = []
    errors: list[Exception] = []
    barrier = threading.Barrier(20)

    def click() -> None:
        with db.connect() as c:
            barrier.wait()
            try:
                results.append(request_job(c, user, path, "p", {}, "double-click")["id"])
            except psycopg.Error as exc:
                errors.append(exc)

    threads = [threading.Thread(target=click) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(results) == 20
    assert len(set(results)) == 1
    with db.connect() as admin:
        assert usage(admin, user) == 1
        assert admin.execute("select count(*) from public.video_jobs").fetchone() == (1,)


@pytest.mark.parametrize("name", ["My cat é.png", "100%.png", "猫.png", "a#b.png", "a[1].png"])
def test_names_the_storage_server_would_refuse_are_refused_before_any_charge(conn, alice, name):
    path = put_input_image(conn, alice, name)  # recorded directly: the real server would have refused it
    with raises_sqlstate("22023", "may hold only letters, digits"):
        request_job(conn, alice, path)
    assert usage(conn, alice) == 0


@pytest.mark.parametrize("name", ["cat (1) & dog+more=ok.png", "it's @home;now:yes,?!.png"])
def test_names_in_the_storage_servers_character_set_are_accepted(conn, alice, name):
    assert request_job(conn, alice, put_input_image(conn, alice, name))["status"] == "queued"


def test_an_image_over_the_buckets_size_limit_is_refused_before_any_charge(conn, alice):
    path = put_input_image(conn, alice, "big.png")
    conn.execute(
        "update storage.objects set metadata = jsonb_set(metadata, '{size}', to_jsonb(10 * 1024 * 1024 + 1))"
        " where name = %s",
        (path,),
    )
    with raises_sqlstate(
        "22023", "the input image is 10485761 bytes; the video-inputs bucket accepts at most 10485760"
    ):
        request_job(conn, alice, path)
    assert usage(conn, alice) == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"duration": 7}, "options.duration must be 5 or 10"),
        ({"duration": "ten"}, "options.duration must be 5 or 10"),
        ({"ratio": "16:9"}, "options.ratio must be one of 1280:720"),
        ({"seed": -1}, "options.seed must be a whole number"),
        ({"seed": "12"}, "options.seed must be a whole number"),
        ({"seed": 4294967296}, "options.seed must be a whole number"),
        ({"negative_prompt": "x" * 2501}, "options.negative_prompt must be text of at most 2500"),
        ({"cfg_scale": 1.5}, "options.cfg_scale must be a number from 0 to 1"),
        ({"cfg_scale": "high"}, "options.cfg_scale must be a number from 0 to 1"),
        ({"model": "gen4_aleph"}, "options.model is not an option vidanim accepts"),
        ({"provider": "runway"}, "options.provider is not an option vidanim accepts"),
    ],
)
def test_undocumented_options_and_bad_values_are_refused_naming_the_field(conn, alice, image, options, message):
    with raises_sqlstate("22023", message):
        request_job(conn, alice, image, options=options)
    assert usage(conn, alice) == 0


def test_every_documented_option_is_accepted(conn, alice, image):
    options = {"duration": "10", "ratio": "720:1280", "seed": 42, "negative_prompt": "blur", "cfg_scale": 0.5}
    assert request_job(conn, alice, image, options=options)["options"] == options


def test_an_image_exactly_at_the_buckets_size_limit_is_accepted(conn, alice):
    path = put_input_image(conn, alice, "limit.png")
    conn.execute(
        "update storage.objects set metadata = jsonb_set(metadata, '{size}', to_jsonb(10 * 1024 * 1024))"
        " where name = %s",
        (path,),
    )
    assert request_job(conn, alice, path)["status"] == "queued", "10485760 bytes: exactly the limit"


def test_the_largest_documented_seed_is_accepted_and_one_more_refused(conn, alice):
    path = put_input_image(conn, alice)
    assert request_job(conn, alice, path, options={"seed": 4294967295})["options"] == {"seed": 4294967295}
    with raises_sqlstate("22023", "options.seed must be a whole number from 0 to 4294967295"):
        request_job(conn, alice, path, options={"seed": 4294967296})
