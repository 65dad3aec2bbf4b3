-- Who may execute which function of the SQL API.
--
-- Users (`authenticated`) call the user API; the worker and operators
-- (`service_role`) call the service functions; `anon` calls nothing. A new function
-- that forgets `revoke ... from public` or grants too widely fails here.
begin;
create extension if not exists pgtap with schema extensions;
set local search_path = public, extensions;

select plan(112);

-- The user API: authenticated only.
select function_privs_are('public', f, args, 'authenticated', array['EXECUTE'], format('authenticated may call %s', f))
  from (values ('request_video_animation', array['text', 'text', 'jsonb', 'text']),
               ('get_video_quota', array[]::text[]),
               ('cancel_video_job', array['uuid']),
               ('get_video_input_limits', array[]::text[])) as api(f, args);
select function_privs_are('public', f, args, r, array[]::text[], format('%s may not call %s', r, f))
  from (values ('request_video_animation', array['text', 'text', 'jsonb', 'text']),
               ('get_video_quota', array[]::text[]),
               ('cancel_video_job', array['uuid']),
               ('get_video_input_limits', array[]::text[])) as api(f, args)
 cross join (values ('anon'), ('service_role')) as roles(r);

-- The service functions: service_role only.
create temporary table service_functions (f name, args text[]) on commit drop;
insert into service_functions values
  ('claim_video_jobs', array['text', 'integer', 'integer']),
  ('renew_video_job_leases', array['text', 'uuid[]', 'integer']),
  ('release_video_jobs', array['text', 'uuid[]']),
  ('schedule_video_job_retry', array['uuid', 'text', 'double precision', 'text', 'text']),
  ('service_update_video_job_status', array['uuid', 'text', 'text', 'text', 'text', 'text', 'text', 'text', 'text']),
  ('reset_video_quota', array['uuid', 'date']),
  ('set_video_quota_limits', array['uuid', 'integer', 'integer']),
  ('set_video_quota_defaults', array['integer', 'integer']),
  ('expire_video_outputs', array['interval', 'integer']),
  ('restore_video_output', array['uuid']),
  ('defer_video_job', array['uuid', 'text', 'double precision', 'text']),
  ('get_video_provider_breakers', array[]::text[]),
  ('open_video_provider_breaker', array['text', 'text', 'text', 'double precision']),
  ('begin_video_provider_probe', array['text', 'uuid', 'double precision']),
  ('close_video_provider_breaker', array['text']),
  ('recheck_video_provider_breakers', array[]::text[]),
  ('reserve_video_spend', array['uuid', 'text', 'text', 'numeric']),
  ('release_video_spend', array['uuid', 'text', 'numeric']),
  ('set_video_daily_budget', array['numeric']),
  ('get_video_spend', array['integer']),
  ('get_video_daily_budget', array[]::text[]),
  ('acquire_video_provider_slot', array['uuid', 'text', 'text']),
  ('set_video_provider_limit', array['text', 'integer']),
  ('service_update_video_job_progress', array['uuid', 'text', 'integer', 'integer']),
  ('record_video_job_submission', array['uuid', 'text', 'text', 'text', 'text']),
  ('record_uncertain_video_job_submission', array['uuid', 'text', 'text', 'double precision']),
  ('record_video_provider_delivery', array['uuid', 'text', 'text', 'text', 'jsonb']),
  ('get_video_provider_delivery', array['uuid']),
  ('prune_video_jobs', array['interval', 'integer']),
  ('count_prunable_video_jobs', array['interval']),
  ('get_video_job_daily_totals', array['date']),
  ('arm_video_job_wakeups', array['text', 'integer']),
  ('disarm_video_job_wakeups', array['text']);

select function_privs_are('public', f, args, 'service_role', array['EXECUTE'], format('service_role may call %s', f))
  from service_functions;
select function_privs_are('public', f, args, r, array[]::text[], format('%s may not call %s', r, f))
  from service_functions cross join (values ('anon'), ('authenticated')) as roles(r);

-- No other vidanim function in public is callable by an API role without a test saying so.
select is_empty(
  $$select p.oid::regprocedure::text
      from pg_proc p
     where p.pronamespace = 'public'::regnamespace
       and p.prokind = 'f'
       and p.proname like '%video%'
       and p.proname not like '%video_provider%'
       and p.proname not in ('reserve_video_spend', 'release_video_spend', 'set_video_daily_budget', 'get_video_spend', 'get_video_daily_budget')
       and p.proname not like '%video_provider_%'
       and p.proname not in ('request_video_animation', 'get_video_quota', 'cancel_video_job', 'get_video_input_limits',
                             'claim_video_jobs', 'renew_video_job_leases', 'release_video_jobs',
                             'schedule_video_job_retry', 'service_update_video_job_status', 'service_update_video_job_progress',
                             'reset_video_quota', 'set_video_quota_limits', 'set_video_quota_defaults',
                             'expire_video_outputs', 'restore_video_output', 'defer_video_job',
                             'record_video_job_submission', 'record_uncertain_video_job_submission')
       and (has_function_privilege('anon', p.oid, 'execute')
            or has_function_privilege('authenticated', p.oid, 'execute'))$$,
  'no other vidanim function in public is executable by anon or authenticated'
);

select * from finish();
rollback;
