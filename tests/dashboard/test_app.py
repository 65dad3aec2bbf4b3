"""The dashboard over HTTP, as an attacker would try it: sessions, CSRF, roles, escaping."""

from __future__ import annotations

import contextlib

import httpx
import pytest

from tests.dashboard.conftest import EVIL, OPERATOR_PASSWORD, VIEWER_PASSWORD

PAGES = ["/", "/jobs", "/jobs?status=failed"]
ACTIONS = [
    ("/submissions/pause", {}),
    ("/submissions/resume", {}),
    ("/breakers", {"provider": "runway", "state": "closed"}),
    ("/budget", {"daily_usd": "1000"}),
    ("/jobs/bulk", {"action": "retry", "status": "failed", "confirm": "yes", "expected": "4"}),
]


def _job_actions(d):
    return [(f"/jobs/{d.seeded.queued}/cancel", {}), (f"/jobs/{d.seeded.failed[0]}/retry", {})]


def _unchanged(d) -> None:
    """Nothing any refused action would have done happened."""
    with d.db.connect() as conn:
        assert conn.execute("select count(*) from vidanim_private.video_operator_actions").fetchone()[0] == 0
        assert conn.execute("select count(*) from vidanim_private.video_submission_pauses").fetchone()[0] == 0
        assert conn.execute("select status from public.video_jobs where id = %s", (d.seeded.queued,)).fetchone()[0] == (
            "queued"
        )


def test_no_page_and_no_action_without_a_session(dashboard):
    with dashboard.client() as client:
        for path in [*PAGES, f"/jobs/{dashboard.seeded.completed}"]:
            response = client.get(path)
            assert (response.status_code, response.headers["location"]) == (303, "/login"), path
        for path, data in [*ACTIONS, *_job_actions(dashboard)]:
            assert client.post(path, data=data).status_code == 401, path
    _unchanged(dashboard)


def test_a_forged_or_tampered_session_cookie_is_no_session(dashboard):
    with dashboard.client() as client:
        client.post("/login", data={"password": VIEWER_PASSWORD})
        cookie = client.cookies["vidanim_dashboard"]
        payload, mac = cookie.rsplit(".", 1)
        forged = payload.replace(payload[:4], payload[:4]) + "." + "0" * len(mac)
    with httpx.Client(base_url=dashboard.url, cookies={"vidanim_dashboard": forged}) as client:
        assert client.get("/", follow_redirects=False).status_code == 303


def test_an_action_without_the_sessions_csrf_token_is_refused(dashboard):
    client, token = dashboard.signed_in(OPERATOR_PASSWORD)
    with contextlib.closing(client):
        for path, data in [*ACTIONS, *_job_actions(dashboard)]:
            assert client.post(path, data=data).status_code == 403, path
            assert client.post(path, data={**data, "csrf": token[::-1]}).status_code == 403, path
    _unchanged(dashboard)


def test_a_viewer_sees_every_page_and_can_run_no_action(dashboard):
    client, token = dashboard.signed_in(VIEWER_PASSWORD)
    with contextlib.closing(client):
        for path in [*PAGES, f"/jobs/{dashboard.seeded.completed}"]:
            assert client.get(path).status_code == 200, path
        for path, data in [*ACTIONS, *_job_actions(dashboard)]:
            response = client.post(path, data={**data, "csrf": token})
            assert response.status_code == 403, path
            assert "Viewers can look, not act" in response.text
        job_page = client.get(f"/jobs/{dashboard.seeded.queued}").text
    assert "Cancel job" not in job_page
    _unchanged(dashboard)


def test_an_operator_with_the_csrf_token_acts_and_the_action_is_recorded(dashboard):
    client, token = dashboard.signed_in(OPERATOR_PASSWORD)
    with contextlib.closing(client):
        response = client.post(f"/jobs/{dashboard.seeded.queued}/cancel", data={"csrf": token})
        assert response.status_code == 303
    with dashboard.db.connect() as conn:
        assert conn.execute("select actor, action, jobs from vidanim_private.video_operator_actions").fetchall() == [
            ("dashboard:operator (password)", "cancel_job", 1)
        ]


@pytest.mark.parametrize(
    ("email", "password", "status", "message"),
    [
        ("user@example.test", "user-secret", 401, "this account has no dashboard role"),
        ("ops@example.test", "wrong", 401, "wrong email or password"),
    ],
)
def test_a_supabase_user_without_the_role_or_the_password_gets_nothing(dashboard, email, password, status, message):
    with dashboard.client() as client:
        response = client.post("/login", data={"email": email, "password": password})
        assert (response.status_code, message in response.text) == (status, True)
        assert "vidanim_dashboard" not in client.cookies
        assert client.get("/").status_code == 303


def test_a_supabase_user_whose_app_metadata_names_a_role_signs_in_with_it(dashboard):
    with dashboard.client() as client:
        assert client.post("/login", data={"email": "look@example.test", "password": "look-secret"}).status_code == 303
        page = client.get("/").text
    assert "look@example.test" in page
    assert "role-viewer" in page


def test_a_wrong_password_signs_nobody_in(dashboard):
    with dashboard.client() as client:
        assert client.post("/login", data={"password": "guess"}).status_code == 401
        assert client.get("/").status_code == 303


def test_html_in_prompts_and_error_messages_is_escaped(dashboard):
    client, _ = dashboard.signed_in(VIEWER_PASSWORD)
    with contextlib.closing(client):
        job = client.get(f"/jobs/{dashboard.seeded.evil}").text
        overview = client.get("/").text
    assert EVIL not in job
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in job
    assert "<script>" not in overview


def test_a_bad_filter_is_a_clear_error_not_a_crash(dashboard):
    client, _ = dashboard.signed_in(VIEWER_PASSWORD)
    with contextlib.closing(client):
        response = client.get("/jobs", params={"status": "lost"})
    assert response.status_code == 400
    assert "unknown status" in response.text


def test_every_page_forbids_framing_and_foreign_scripts(dashboard):
    client, _ = dashboard.signed_in(VIEWER_PASSWORD)
    with contextlib.closing(client):
        headers = client.get("/").headers
    assert headers["x-frame-options"] == "DENY"
    assert "script-src 'self'" in headers["content-security-policy"]
