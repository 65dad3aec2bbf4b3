"""Catalog checks and Supabase's advisors over the migrated schema."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest

from tests.db.advisors import LINTS

OUR_SCHEMAS = ("public", "vidanim_private")

USER_API = {"request_video_animation", "get_video_quota", "cancel_video_job", "get_video_input_limits"}
SERVICE_API = {
    "service_update_video_job_status",
    "claim_video_jobs",
    "renew_video_job_leases",
    "release_video_jobs",
    "schedule_video_job_retry",
    "reset_video_quota",
    "set_video_quota_limits",
    "set_video_quota_defaults",
    "expire_video_outputs",
    "list_stale_video_inputs",
    "restore_video_output",
    "defer_video_job",
    "get_video_provider_breakers",
    "open_video_provider_breaker",
    "begin_video_provider_probe",
    "close_video_provider_breaker",
    "recheck_video_provider_breakers",
    "reserve_video_spend",
    "release_video_spend",
    "set_video_daily_budget",
    "get_video_spend",
    "get_video_daily_budget",
    "acquire_video_provider_slot",
    "set_video_provider_limit",
    "service_update_video_job_progress",
    "record_video_job_submission",
    "record_uncertain_video_job_submission",
    "record_video_provider_delivery",
    "get_video_provider_delivery",
    "check_video_job_input",
    "note_video_job_error_detail",
    "get_video_job_internals",
    "issue_video_webhook_token",
    "video_webhook_token_valid",
    # operators' actions and the dashboard's reads (0050-0054)
    "get_video_operator_actions",
    "get_video_submission_pauses",
    "pause_video_submissions",
    "resume_video_submissions",
    "operator_cancel_video_job",
    "operator_retry_video_job",
    "operator_cancel_video_jobs",
    "operator_retry_video_jobs",
    "operator_set_video_provider_breaker",
    "operator_set_video_daily_budget",
    "get_video_job_deliveries",
    "get_video_job_submission_in_flight",
    "prune_video_jobs",
    "count_prunable_video_jobs",
    "get_video_job_daily_totals",
    "arm_video_job_wakeups",
    "disarm_video_job_wakeups",
}

FUNCTIONS = """
    select n.nspname as schema, p.proname as name, p.prosecdef as definer, p.proconfig as config,
           has_function_privilege('anon', p.oid, 'EXECUTE') as anon,
           has_function_privilege('authenticated', p.oid, 'EXECUTE') as authenticated,
           has_function_privilege('service_role', p.oid, 'EXECUTE') as service_role
      from pg_proc p join pg_namespace n on n.oid = p.pronamespace
     where n.nspname in ('public', 'vidanim_private')
"""


def _functions(conn):
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute(FUNCTIONS)
        return cur.fetchall()


def _run_lints(conn):
    findings = []
    with conn.transaction(force_rollback=True):
        conn.execute("set local pgrst.db_schemas = 'public, graphql_public'")
        for name, (level, query) in LINTS.items():
            findings += [(name, level, r[0]) for r in conn.execute(query).fetchall()]
    return findings


def test_every_function_pins_search_path_to_empty(conn):
    funcs = _functions(conn)
    assert funcs
    unpinned = [f["name"] for f in funcs if 'search_path=""' not in (f["config"] or [])]
    assert unpinned == []


def test_security_definer_only_where_needed(conn):
    definers = {(f["schema"], f["name"]) for f in _functions(conn) if f["definer"]}
    assert definers == {("public", n) for n in SERVICE_API} | {
        ("vidanim_private", "request_video_animation"),
        ("vidanim_private", "cancel_video_job"),
        ("vidanim_private", "get_video_quota"),
        ("vidanim_private", "get_video_input_limits"),
    }


def test_every_public_table_has_row_level_security(conn):
    rows = conn.execute(
        "select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = 'public' and c.relkind in ('r', 'p') and not c.relrowsecurity"
    ).fetchall()
    assert rows == []


def test_anon_can_execute_nothing_of_ours(conn):
    assert [f["name"] for f in _functions(conn) if f["anon"]] == []


def test_authenticated_executes_exactly_the_user_api(conn):
    public = {f["name"] for f in _functions(conn) if f["authenticated"] and f["schema"] == "public"}
    assert public == USER_API
    private = {f["name"] for f in _functions(conn) if f["authenticated"] and f["schema"] == "vidanim_private"}
    assert private == USER_API, "only the definer halves the wrappers call"


def test_service_role_executes_exactly_the_service_api(conn):
    public = {f["name"] for f in _functions(conn) if f["service_role"] and f["schema"] == "public"}
    assert public == SERVICE_API


def test_api_roles_hold_no_write_grant_on_any_vidanim_table(conn):
    rows = conn.execute(
        """select grantee, table_name, privilege_type from information_schema.role_table_grants
            where table_schema = 'public' and grantee in ('anon', 'authenticated', 'service_role', 'PUBLIC')
              and privilege_type <> 'SELECT'"""
    ).fetchall()
    assert rows == []
    readable = conn.execute(
        """select grantee, table_name from information_schema.role_table_grants
            where table_schema = 'public' and grantee in ('anon', 'authenticated') order by 1, 2"""
    ).fetchall()
    assert readable == [("authenticated", "video_job_events"), ("authenticated", "video_jobs")]


def test_the_hardening_checklist_objects_exist(conn):
    checks = conn.execute(
        """select
             exists (select 1 from information_schema.columns where table_schema = 'public'
                     and table_name = 'video_jobs' and column_name = 'client_request_id'),
             to_regclass('public.idx_video_jobs_client_request_id') is not null,
             exists (select 1 from pg_trigger where tgname = 'update_video_jobs_updated_at'
                     and tgrelid = 'public.video_jobs'::regclass and tgenabled = 'O'),
             not exists (select 1 from pg_policies where tablename = 'video_jobs' and cmd <> 'SELECT')"""
    ).fetchone()
    assert checks == (True, True, True, True)


def test_supabase_advisors_find_nothing_at_warn_or_error(conn):
    assert _run_lints(conn) == []


BAD_OBJECTS = {
    "0003_auth_rls_initplan": "create table public.bad (uid uuid); alter table public.bad enable row level security;"
    " create policy p on public.bad for select using (uid = auth.uid())",
    "0006_multiple_permissive_policies": "create table public.bad (uid uuid); alter table public.bad enable row level security;"
    " create policy p1 on public.bad for select to authenticated using (true);"
    " create policy p2 on public.bad for select to authenticated using (false)",
    "0007_policy_exists_rls_disabled": "create table public.bad (uid uuid); create policy p on public.bad for select using (false)",
    "0010_security_definer_view": "create view public.bad as select 1 as x; grant select on public.bad to authenticated",
    "0011_function_search_path_mutable": "create function public.bad() returns int language sql as 'select 1'",
    "0013_rls_disabled_in_public": "create table public.bad (x int); grant select on public.bad to anon",
    "0015_rls_references_user_metadata": "create table public.bad (x int); alter table public.bad enable row level security;"
    " create policy p on public.bad for select using ((select auth.jwt()) -> 'user_metadata' is null)",
    "0024_rls_policy_always_true": "create table public.bad (x int); alter table public.bad enable row level security;"
    " create policy p on public.bad for insert to authenticated with check (true)",
    "0028_anon_security_definer_function_executable": "create function public.bad() returns int language sql security definer set search_path = ''"
    " as 'select 1'; grant execute on function public.bad() to anon",
    "0029_authenticated_security_definer_function_executable": "create function public.bad() returns int language sql security definer set search_path = ''"
    " as 'select 1'; grant execute on function public.bad() to authenticated",
}


@pytest.mark.parametrize("lint", sorted(BAD_OBJECTS))
def test_each_advisor_check_catches_a_deliberate_mistake(conn, lint):
    conn.execute(BAD_OBJECTS[lint])
    assert lint in {name for name, _, _ in _run_lints(conn)}


@pytest.mark.skipif(not os.environ.get("SPLINTER_SQL"), reason="SPLINTER_SQL not set")
def test_the_real_splinter_finds_nothing_at_warn_or_error_in_our_schemas(conn):
    text = Path(os.environ["SPLINTER_SQL"]).read_text()
    with conn.transaction(force_rollback=True):
        conn.execute("set local pgrst.db_schemas = 'public'")
        with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            rows = cur.execute(text).fetchall()
    assert [r["detail"] for r in rows if r["level"] in ("WARN", "ERROR")] == []
