-- Supabase Realtime: an app gets its users' job changes pushed instead of polling.
--
-- Why: a job's status, provider status and waiting reason change while the user
-- watches. Putting `video_jobs` in the `supabase_realtime` publication lets an app
-- subscribe to `postgres_changes` on it; Realtime checks each subscriber's RLS, so a
-- user only ever receives its own rows (the README has the supabase-js snippet). The
-- publication exists on every Supabase project; on a plain PostgreSQL the compat layer
-- creates it. Where it does not exist, nothing is done.
do $$
begin
  if exists (select 1 from pg_publication where pubname = 'supabase_realtime')
     and not exists (
       select 1 from pg_publication_tables
        where pubname = 'supabase_realtime' and schemaname = 'public' and tablename = 'video_jobs'
     ) then
    alter publication supabase_realtime add table public.video_jobs;
  end if;
end
$$;
