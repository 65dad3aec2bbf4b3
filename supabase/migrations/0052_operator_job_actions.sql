-- Operators cancel and retry jobs: one, or every job matching a filter, after a dry run.
--
-- Why: an operator cleaning up after an outage needs "retry every job that failed with
-- provider_unavailable yesterday" without a loop over the CLI, and must see how many
-- jobs that is before it happens. The filter is the dashboard's (status, provider,
-- waiting reason, error code, user, creation time range, and a job id or provider task
-- id), passed as a JSON object whose keys are checked. A dry run counts; the real run
-- takes the count the operator confirmed and refuses when the filter now matches a
-- different number (the table moved under the confirmation). At most 10000 jobs per call.
--
-- A cancel ends a queued or processing job as the user's own cancel does (the refund
-- trigger, 0007 and 0033, gives the quota unit back under the same rules); its code is
-- canceled_by_operator. A retry of a failed or canceled job is a new request on its
-- owner's behalf, exactly as the owner would make it (the quota, limits and validation
-- of request_video_animation, charged as a new job), with client_request_id
-- 'retry:<job id>', so retrying a job twice gives the same new job (as `vidanim jobs
-- retry`). A retry the owner's quota refuses is skipped and counted, never forced.
create or replace function vidanim_private.check_video_job_filter(p_filter jsonb)
returns void
language plpgsql
immutable
set search_path = ''
as $$
declare
  v_key text;
begin
  if p_filter is null or jsonb_typeof(p_filter) <> 'object' then
    raise exception 'the filter must be a JSON object' using errcode = '22023';
  end if;
  for v_key in select jsonb_object_keys(p_filter) loop
    if v_key not in ('status', 'provider', 'waiting_reason', 'error_code', 'user_id', 'created_from', 'created_to', 'q')
    then
      raise exception 'unknown filter key %', quote_literal(v_key) using errcode = '22023',
        hint = 'use status, provider, waiting_reason, error_code, user_id, created_from, created_to or q';
    end if;
    if jsonb_typeof(p_filter -> v_key) not in ('string', 'null') then
      raise exception 'filter key % must be text', quote_literal(v_key) using errcode = '22023';
    end if;
  end loop;
  if (p_filter ->> 'status') is not null
     and (p_filter ->> 'status') not in ('queued', 'processing', 'completed', 'failed', 'canceled') then
    raise exception 'unknown status %', quote_literal(p_filter ->> 'status') using errcode = '22023';
  end if;
  if (p_filter ->> 'provider') is not null then
    perform vidanim_private.check_provider(p_filter ->> 'provider');
  end if;
  begin
    perform (p_filter ->> 'user_id')::uuid, (p_filter ->> 'created_from')::timestamptz,
            (p_filter ->> 'created_to')::timestamptz;
  exception when invalid_text_representation or invalid_datetime_format or datetime_field_overflow then
    raise exception 'user_id must be a UUID and created_from/created_to timestamps' using errcode = '22023';
  end;
end
$$;

-- The jobs a (checked) filter matches, newest first. The dashboard's list applies the same rules.
create or replace function vidanim_private.video_jobs_matching(p_filter jsonb, p_statuses text[])
returns setof public.video_jobs
language sql
stable
set search_path = ''
as $$
  select j.*
    from public.video_jobs j
   where j.status = any (p_statuses)
     and ((p_filter ->> 'status') is null or j.status = (p_filter ->> 'status'))
     and ((p_filter ->> 'provider') is null or j.provider = (p_filter ->> 'provider'))
     and ((p_filter ->> 'waiting_reason') is null or j.waiting_reason = (p_filter ->> 'waiting_reason'))
     and ((p_filter ->> 'error_code') is null or j.error_code = (p_filter ->> 'error_code'))
     and ((p_filter ->> 'user_id') is null or j.user_id = (p_filter ->> 'user_id')::uuid)
     and ((p_filter ->> 'created_from') is null or j.created_at >= (p_filter ->> 'created_from')::timestamptz)
     and ((p_filter ->> 'created_to') is null or j.created_at < (p_filter ->> 'created_to')::timestamptz)
     and ((p_filter ->> 'q') is null
          or j.provider_task_id = (p_filter ->> 'q')
          or j.id = case when (p_filter ->> 'q') ~* '^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$'
                         then (p_filter ->> 'q')::uuid end)
   order by j.created_at desc, j.id desc
$$;

revoke execute on function vidanim_private.check_video_job_filter(jsonb) from public;
revoke execute on function vidanim_private.video_jobs_matching(jsonb, text[]) from public;

-- End one job as canceled by an operator; false when it had already ended.
create or replace function vidanim_private.operator_cancel_video_job(p_job_id uuid)
returns boolean
language plpgsql
set search_path = ''
as $$
begin
  update public.video_jobs j
     set status = 'canceled',
         error_code = 'canceled_by_operator',
         error_message = 'Canceled by an operator.',
         completed_at = now()
   where j.id = p_job_id and j.status in ('queued', 'processing');
  return found;
end
$$;

-- A new request for a failed or canceled job, made as its owner makes requests.
create or replace function vidanim_private.operator_retry_video_job(p_job public.video_jobs)
returns public.video_jobs
language plpgsql
set search_path = ''
as $$
declare
  v_claims text := current_setting('request.jwt.claims', true);
  v_sub text := current_setting('request.jwt.claim.sub', true);
  v_new public.video_jobs;
begin
  if p_job.status not in ('failed', 'canceled') then
    raise exception 'video job % is %: only failed or canceled jobs are retried', p_job.id, p_job.status
      using errcode = 'PT409';
  end if;
  -- As PostgREST would for the owner's own token, for this one call only.
  perform set_config('request.jwt.claims', jsonb_build_object(
    'sub', p_job.user_id, 'role', 'authenticated', 'aud', 'authenticated', 'is_anonymous', false)::text, true);
  perform set_config('request.jwt.claim.sub', '', true);
  begin
    v_new := vidanim_private.request_video_animation(
      p_job.input_image_path, p_job.prompt, p_job.options, 'retry:' || p_job.id::text);
  exception when others then
    perform set_config('request.jwt.claims', coalesce(v_claims, ''), true);
    perform set_config('request.jwt.claim.sub', coalesce(v_sub, ''), true);
    raise;
  end;
  perform set_config('request.jwt.claims', coalesce(v_claims, ''), true);
  perform set_config('request.jwt.claim.sub', coalesce(v_sub, ''), true);
  return v_new;
end
$$;

revoke execute on function vidanim_private.operator_cancel_video_job(uuid) from public;
revoke execute on function vidanim_private.operator_retry_video_job(public.video_jobs) from public;

-- Service role (operators): cancel one queued or processing job.
create or replace function public.operator_cancel_video_job(p_job_id uuid, p_actor text)
returns public.video_jobs
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_job public.video_jobs;
begin
  perform vidanim_private.check_operator_actor(p_actor);
  select * into v_job from public.video_jobs j where j.id = p_job_id for update;
  if not found then
    raise exception 'video job % not found', p_job_id using errcode = 'PT404';
  end if;
  if not vidanim_private.operator_cancel_video_job(p_job_id) then
    raise exception 'video job % has already ended (%)', p_job_id, v_job.status using errcode = 'PT409';
  end if;
  perform vidanim_private.record_operator_action(p_actor, 'cancel_job', jsonb_build_object('job_id', p_job_id), 1);
  select * into v_job from public.video_jobs j where j.id = p_job_id;
  return v_job;
end
$$;

comment on function public.operator_cancel_video_job(uuid, text) is
  'Service role only: an operator cancels a queued or processing job (refunded as a user''s cancel); audited.';

-- Service role (operators): retry one failed or canceled job; returns the new job.
create or replace function public.operator_retry_video_job(p_job_id uuid, p_actor text)
returns public.video_jobs
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_job public.video_jobs;
  v_new public.video_jobs;
begin
  perform vidanim_private.check_operator_actor(p_actor);
  select * into v_job from public.video_jobs j where j.id = p_job_id;
  if not found then
    raise exception 'video job % not found', p_job_id using errcode = 'PT404';
  end if;
  v_new := vidanim_private.operator_retry_video_job(v_job);
  perform vidanim_private.record_operator_action(
    p_actor, 'retry_job', jsonb_build_object('job_id', p_job_id, 'new_job_id', v_new.id), 1);
  return v_new;
end
$$;

comment on function public.operator_retry_video_job(uuid, text) is
  'Service role only: a new request for a failed or canceled job, on its owner''s behalf and quota; audited.';

-- Service role (operators): cancel every queued or processing job matching p_filter.
create or replace function public.operator_cancel_video_jobs(
  p_filter jsonb,
  p_actor text,
  p_dry_run boolean,
  p_expected integer default null
)
returns table (matched integer, acted integer, skipped integer)
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_ids uuid[];
  v_id uuid;
  v_acted integer := 0;
begin
  perform vidanim_private.check_operator_actor(p_actor);
  perform vidanim_private.check_video_job_filter(p_filter);
  select coalesce(array_agg(m.id), '{}') into v_ids
    from vidanim_private.video_jobs_matching(p_filter, array['queued', 'processing']) m;
  if cardinality(v_ids) > 10000 then
    raise exception 'the filter matches % jobs; narrow it to at most 10000', cardinality(v_ids) using errcode = '22023';
  end if;
  if p_dry_run is distinct from false then
    return query select cardinality(v_ids), 0, 0;
    return;
  end if;
  if p_expected is distinct from cardinality(v_ids) then
    raise exception 'the filter now matches % jobs, not the % confirmed; look again', cardinality(v_ids),
      coalesce(p_expected::text, 'none') using errcode = 'PT409';
  end if;
  foreach v_id in array v_ids loop
    if vidanim_private.operator_cancel_video_job(v_id) then
      v_acted := v_acted + 1;
    end if;
  end loop;
  perform vidanim_private.record_operator_action(p_actor, 'cancel_jobs', jsonb_build_object('filter', p_filter), v_acted);
  return query select cardinality(v_ids), v_acted, cardinality(v_ids) - v_acted;
end
$$;

comment on function public.operator_cancel_video_jobs(jsonb, text, boolean, integer) is
  'Service role only: cancel the queued and processing jobs matching a filter; a dry run counts; audited.';

-- Service role (operators): retry every failed or canceled job matching p_filter.
create or replace function public.operator_retry_video_jobs(
  p_filter jsonb,
  p_actor text,
  p_dry_run boolean,
  p_expected integer default null
)
returns table (matched integer, acted integer, skipped integer)
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_jobs public.video_jobs[];
  v_job public.video_jobs;
  v_acted integer := 0;
begin
  perform vidanim_private.check_operator_actor(p_actor);
  perform vidanim_private.check_video_job_filter(p_filter);
  select coalesce(array_agg(m), '{}') into v_jobs
    from vidanim_private.video_jobs_matching(p_filter, array['failed', 'canceled']) m;
  if cardinality(v_jobs) > 10000 then
    raise exception 'the filter matches % jobs; narrow it to at most 10000', cardinality(v_jobs) using errcode = '22023';
  end if;
  if p_dry_run is distinct from false then
    return query select cardinality(v_jobs), 0, 0;
    return;
  end if;
  if p_expected is distinct from cardinality(v_jobs) then
    raise exception 'the filter now matches % jobs, not the % confirmed; look again', cardinality(v_jobs),
      coalesce(p_expected::text, 'none') using errcode = 'PT409';
  end if;
  foreach v_job in array v_jobs loop
    begin
      perform vidanim_private.operator_retry_video_job(v_job);
      v_acted := v_acted + 1;
    exception when sqlstate 'PT429' or sqlstate 'PT422' or sqlstate 'PT409' or sqlstate 'PT404'
                 or sqlstate '42501' or sqlstate '22023' then
      -- the owner's quota or limits refuse it (or its image is gone): skipped, never forced
      null;
    end;
  end loop;
  perform vidanim_private.record_operator_action(p_actor, 'retry_jobs', jsonb_build_object('filter', p_filter), v_acted);
  return query select cardinality(v_jobs), v_acted, cardinality(v_jobs) - v_acted;
end
$$;

comment on function public.operator_retry_video_jobs(jsonb, text, boolean, integer) is
  'Service role only: retry the failed and canceled jobs matching a filter, each on its owner''s quota; audited.';

do $$
declare
  f text;
begin
  foreach f in array array[
    'public.operator_cancel_video_job(uuid, text)',
    'public.operator_retry_video_job(uuid, text)',
    'public.operator_cancel_video_jobs(jsonb, text, boolean, integer)',
    'public.operator_retry_video_jobs(jsonb, text, boolean, integer)'
  ] loop
    execute format('revoke execute on function %s from public, anon, authenticated, service_role', f);
    execute format('grant execute on function %s to service_role', f);
  end loop;
end
$$;
