-- The hardening summary's deployment checklist, one query per check.
-- Format: a line `-- check: <what must hold>`, then a query returning one boolean.

-- check: client_request_id column on video_jobs
select exists (
  select 1 from information_schema.columns
   where table_schema = 'public' and table_name = 'video_jobs' and column_name = 'client_request_id');

-- check: unique index idx_video_jobs_client_request_id
select exists (
  select 1 from pg_index i
   where i.indexrelid = to_regclass('public.idx_video_jobs_client_request_id') and i.indisunique);

-- check: updated_at trigger active on video_jobs
select exists (
  select 1 from pg_trigger
   where tgname = 'update_video_jobs_updated_at'
     and tgrelid = to_regclass('public.video_jobs') and tgenabled <> 'D');

-- check: state machine trigger active on video_jobs
select exists (
  select 1 from pg_trigger
   where tgname = 'video_jobs_enforce_transition'
     and tgrelid = to_regclass('public.video_jobs') and tgenabled <> 'D');

-- check: row-level security on every vidanim table
select count(*) = 5 and bool_and(c.relrowsecurity)
  from pg_class c join pg_namespace n on n.oid = c.relnamespace
 where n.nspname = 'public'
   and c.relname in ('video_jobs', 'video_job_events', 'video_quota_defaults', 'video_user_quotas',
                     'video_quota_usage');

-- check: no client write policy on video_jobs
select to_regclass('public.video_jobs') is not null
   and not exists (select 1 from pg_policies
                    where schemaname = 'public' and tablename = 'video_jobs' and cmd <> 'SELECT');

-- check: buckets video-inputs and video-outputs exist and are private
select count(*) = 2 and not bool_or(coalesce(public, false))
  from storage.buckets where id in ('video-inputs', 'video-outputs');

-- check: anon and authenticated cannot write vidanim tables
select not exists (
  select 1 from information_schema.role_table_grants
   where table_schema = 'public' and table_name like 'video%'
     and grantee in ('anon', 'authenticated', 'PUBLIC') and privilege_type <> 'SELECT');

-- check: service functions executable by service_role only
select to_regprocedure('public.service_update_video_job_status(uuid,text,text,text,text,text,text,text,text)') is not null
   and not exists (
     select 1 from pg_proc p
      where p.pronamespace = 'public'::regnamespace
        and p.proname in ('service_update_video_job_status', 'claim_video_jobs', 'renew_video_job_leases',
                          'release_video_jobs', 'schedule_video_job_retry', 'reset_video_quota',
                          'set_video_quota_limits', 'set_video_quota_defaults', 'expire_video_outputs')
        and (has_function_privilege('anon', p.oid, 'EXECUTE')
             or has_function_privilege('authenticated', p.oid, 'EXECUTE')));

-- check: user API executable by authenticated, not anon
select to_regprocedure('public.request_video_animation(text,text,jsonb,text)') is not null
   and has_function_privilege('authenticated', 'public.request_video_animation(text,text,jsonb,text)', 'EXECUTE')
   and not has_function_privilege('anon', 'public.request_video_animation(text,text,jsonb,text)', 'EXECUTE');
