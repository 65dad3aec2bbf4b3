"""The dashboard's pages in headless Chromium (Debian's), against a real database with jobs in every state.

Each test leaves a screenshot in artifacts/screenshots/ (gitignored); docs/dashboard/ holds copies.
"""

from __future__ import annotations

from tests.dashboard.conftest import ARTIFACTS, OPERATOR_PASSWORD, VIEWER_PASSWORD


def _page(browser, dashboard, password):
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20000)
    page.goto(f"{dashboard.url}/")
    assert page.url.endswith("/login")
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{dashboard.url}/")
    return context, page


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_an_operator_filters_opens_a_job_bulk_retries_after_the_dry_run_and_pauses_and_resumes(browser, dashboard):
    context, page = _page(browser, dashboard, OPERATOR_PASSWORD)
    try:
        assert page.locator(".tile b").first.inner_text() == "2"  # queued: the waiting ones
        assert "out of credits" in page.inner_text("body")
        _shot(page, "overview")

        page.goto(f"{dashboard.url}/jobs")
        page.select_option("select[name=status]", "failed")
        page.fill("input[name=error_code]", "provider_unavailable")
        page.click("form.filters button[type=submit]")
        page.wait_for_url("**/jobs?*status=failed*")
        assert page.locator("table.jobs tr").count() == 1 + 3
        _shot(page, "jobs")

        page.click("#bulk-retry")
        assert page.inner_text("#matched") == "3"
        _shot(page, "bulk-retry-confirm")
        page.click("#confirm")
        page.wait_for_selector(".notice")
        assert page.inner_text(".notice") == "Done: 3 jobs."

        page.goto(f"{dashboard.url}/jobs/{dashboard.seeded.completed}")
        assert page.locator("#timeline tr").count() >= 4  # header, queued, processing, completed
        src = page.get_attribute("#video", "src")
        assert src is not None
        assert "/object/sign/video-outputs/" in src
        assert page.request.get(src).status == 200
        _shot(page, "job")

        page.goto(f"{dashboard.url}/")
        page.click("#pause-all")
        page.wait_for_selector(".notice")
        assert page.inner_text("#pause-all") == "Resume all submissions"
        page.click("#pause-all")
        page.wait_for_selector(".notice")
        assert page.inner_text("#pause-all") == "Pause all submissions"
    finally:
        context.close()
    with dashboard.db.connect() as conn:
        actions = [r[0] for r in conn.execute("select action from vidanim_private.video_operator_actions order by id")]
    assert actions == ["retry_jobs", "pause_submissions", "resume_submissions"]


def test_a_viewer_sees_the_pages_without_a_single_action_and_a_forced_post_is_refused(browser, dashboard):
    context, page = _page(browser, dashboard, VIEWER_PASSWORD)
    try:
        assert page.inner_text(".readonly").startswith("Read-only")
        for path in ["/", "/jobs?status=failed", f"/jobs/{dashboard.seeded.queued}"]:
            page.goto(f"{dashboard.url}{path}")
            assert page.locator("form[method=post]:not([action='/logout'])").count() == 0, path
        _shot(page, "viewer-job")
        token = page.get_attribute("input[name=csrf]", "value")
        response = page.request.post(f"{dashboard.url}/submissions/pause", form={"csrf": token or ""})
        assert response.status == 403
    finally:
        context.close()
    with dashboard.db.connect() as conn:
        assert conn.execute("select count(*) from vidanim_private.video_submission_pauses").fetchone()[0] == 0
