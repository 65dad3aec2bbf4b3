"""Supabase's database advisors (splinter) at WARN and ERROR, as catalog queries.

splinter (github.com/supabase/splinter, `lints/`) is not packaged on any registry
this project can install from, so these queries restate, in our own words, the
checks of its WARN and ERROR lints that can apply to a schema like ours. Each
returns one row per finding (`detail`). Where splinter limits a lint to the
schemas PostgREST exposes, so do we (`pgrst.db_schemas`, set by the caller).
Set SPLINTER_SQL to a checkout's `splinter.sql` to run the real thing as well.
"""

from __future__ import annotations

# Schemas Supabase owns; splinter skips them.
SYSTEM_SCHEMAS = (
    "'auth','cron','extensions','graphql','graphql_public','information_schema','net','pgmq','pgsodium',"
    "'pgsodium_masks','pgtle','pgbouncer','pg_catalog','pg_toast','realtime','storage','supabase_functions',"
    "'supabase_migrations','vault'"
)
EXPOSED = "array(select trim(s) from unnest(string_to_array(current_setting('pgrst.db_schemas', true), ',')) s)"

LINTS: dict[str, tuple[str, str]] = {
    # name: (level, query returning `detail`)
    "0002_auth_users_exposed": (
        "ERROR",
        f"""
        select format('%s.%s exposes auth.users', n.nspname, c.relname) as detail
          from pg_depend d
          join pg_rewrite r on r.oid = d.objid
          join pg_class c on c.oid = r.ev_class
          join pg_namespace n on n.oid = c.relnamespace
         where d.refobjid = 'auth.users'::regclass and c.relkind in ('v', 'm')
           and n.nspname = any({EXPOSED})
           and (has_table_privilege('anon', c.oid, 'SELECT') or has_table_privilege('authenticated', c.oid, 'SELECT'))
    """,
    ),
    "0003_auth_rls_initplan": (
        "WARN",
        """
        select format('%s.%s policy %s calls auth.<fn>() per row', schemaname, tablename, policyname) as detail
          from pg_policies
         where (qual ~ '(auth)\\.(uid|jwt|role|email)\\(\\)'
                and lower(qual) !~ 'select\\s+(auth)\\.(uid|jwt|role|email)\\(\\)')
            or (with_check ~ '(auth)\\.(uid|jwt|role|email)\\(\\)'
                and lower(with_check) !~ 'select\\s+(auth)\\.(uid|jwt|role|email)\\(\\)')
    """,
    ),
    "0006_multiple_permissive_policies": (
        "WARN",
        f"""
        select format('%s.%s: %s policies for %s %s', n.nspname, c.relname, count(*), r.rolname, a.cmd) as detail
          from pg_policy p
          join pg_class c on c.oid = p.polrelid
          join pg_namespace n on n.oid = c.relnamespace
          join pg_roles r on p.polroles @> array[r.oid] or p.polroles = array[0::oid]
          cross join lateral unnest(case p.polcmd when 'r' then array['SELECT'] when 'a' then array['INSERT']
                                                  when 'w' then array['UPDATE'] when 'd' then array['DELETE']
                                                  else array['SELECT','INSERT','UPDATE','DELETE'] end) a(cmd)
         where p.polpermissive and c.relkind = 'r' and n.nspname not in ({SYSTEM_SCHEMAS})
           and r.rolname not like 'pg_%' and not r.rolbypassrls
         group by n.nspname, c.relname, r.rolname, a.cmd
        having count(*) > 1
    """,
    ),
    "0007_policy_exists_rls_disabled": (
        "ERROR",
        f"""
        select format('%s.%s has policies but RLS is off', n.nspname, c.relname) as detail
          from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where c.relkind = 'r' and not c.relrowsecurity and n.nspname not in ({SYSTEM_SCHEMAS})
           and exists (select 1 from pg_policy p where p.polrelid = c.oid)
    """,
    ),
    "0010_security_definer_view": (
        "ERROR",
        f"""
        select format('view %s.%s runs as its owner', n.nspname, c.relname) as detail
          from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where c.relkind = 'v' and n.nspname = any({EXPOSED})
           and not coalesce('security_invoker=true' = any(c.reloptions), false)
           and (has_table_privilege('anon', c.oid, 'SELECT') or has_table_privilege('authenticated', c.oid, 'SELECT'))
    """,
    ),
    "0011_function_search_path_mutable": (
        "WARN",
        f"""
        select format('function %s.%s has no fixed search_path', n.nspname, p.proname) as detail
          from pg_proc p join pg_namespace n on n.oid = p.pronamespace
         where n.nspname not in ({SYSTEM_SCHEMAS}) and n.nspname not like 'pg_temp%'
           and not exists (select 1 from pg_depend d where d.objid = p.oid and d.deptype = 'e')
           and not exists (select 1 from unnest(coalesce(p.proconfig, '{{}}')) c where c like 'search_path=%')
    """,
    ),
    "0013_rls_disabled_in_public": (
        "ERROR",
        f"""
        select format('table %s.%s is exposed without RLS', n.nspname, c.relname) as detail
          from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where c.relkind = 'r' and not c.relrowsecurity and n.nspname = any({EXPOSED})
           and (has_table_privilege('anon', c.oid, 'SELECT') or has_table_privilege('authenticated', c.oid, 'SELECT'))
    """,
    ),
    "0014_extension_in_public": (
        "WARN",
        """
        select format('extension %s is installed in public', e.extname) as detail
          from pg_extension e join pg_namespace n on n.oid = e.extnamespace
         where n.nspname = 'public'
    """,
    ),
    "0015_rls_references_user_metadata": (
        "ERROR",
        """
        select format('%s.%s policy %s reads user_metadata', schemaname, tablename, policyname) as detail
          from pg_policies
         where coalesce(qual, '') || coalesce(with_check, '') ~ 'user_metadata'
    """,
    ),
    "0024_rls_policy_always_true": (
        "WARN",
        f"""
        select format('%s.%s policy %s is always true for %s', schemaname, tablename, policyname, cmd) as detail
          from pg_policies
         where cmd in ('INSERT', 'UPDATE', 'DELETE', 'ALL') and schemaname not in ({SYSTEM_SCHEMAS})
           and (trim(coalesce(qual, '')) in ('true', '(true)') or trim(coalesce(with_check, '')) in ('true', '(true)'))
    """,
    ),
    "0028_anon_security_definer_function_executable": (
        "WARN",
        f"""
        select format('%s.%s is security definer and executable by anon', n.nspname, p.proname) as detail
          from pg_proc p join pg_namespace n on n.oid = p.pronamespace
         where p.prosecdef and has_function_privilege('anon', p.oid, 'EXECUTE')
           and n.nspname = any({EXPOSED}) and n.nspname not in ({SYSTEM_SCHEMAS})
    """,
    ),
    "0029_authenticated_security_definer_function_executable": (
        "WARN",
        f"""
        select format('%s.%s is security definer and executable by authenticated', n.nspname, p.proname) as detail
          from pg_proc p join pg_namespace n on n.oid = p.pronamespace
         where p.prosecdef and has_function_privilege('authenticated', p.oid, 'EXECUTE')
           and n.nspname = any({EXPOSED}) and n.nspname not in ({SYSTEM_SCHEMAS})
    """,
    ),
}
