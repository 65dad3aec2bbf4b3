-- vidanim_private: the schema for privileged helpers that the API must never expose.
--
-- Why: a few user-facing operations (create a job, cancel it) must write tables that
-- users cannot write directly, so they run as SECURITY DEFINER. Supabase's advice
-- (splinter lints 0028/0029) is to keep such functions out of the schemas PostgREST
-- exposes and to call them from a SECURITY INVOKER wrapper in `public`. PostgREST
-- only serves the schemas listed in its `db-schemas`, so nothing here is reachable
-- over HTTP, and each function still re-checks the caller itself.
create schema if not exists vidanim_private;

comment on schema vidanim_private is
  'vidanim internals: security definer helpers called by the public API wrappers; never exposed over PostgREST.';

revoke all on schema vidanim_private from public;
-- The public wrappers run as the caller, so the caller needs to reach the schema;
-- execute on each function is still granted one by one.
grant usage on schema vidanim_private to authenticated, service_role;

-- New functions here are executable by nobody until a migration grants them.
alter default privileges in schema vidanim_private revoke execute on functions from public;
