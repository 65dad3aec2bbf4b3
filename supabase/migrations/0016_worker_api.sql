-- The worker API: claim, renew, release and retry, for service_role only.
--
-- Why: workers coordinate through leases on the job rows, never through memory.
-- A worker claims due jobs with FOR UPDATE SKIP LOCKED (no two workers get the
-- same job), renews its leases while it works, hands them back on shutdown so
-- another worker continues at once, and schedules retries with a delay. A job whose
-- worker died becomes claimable when its lease runs out; a processing job keeps its
-- provider task, so the next worker resumes polling it instead of paying again.

create or replace function vidanim_private.check_worker_args(p_worker_id text, p_lease_seconds integer)
returns void
language plpgsql
immutable
set search_path = ''
as $$
begin
  if p_worker_id is null or p_worker_id !~ '^[[:graph:]]{1,255}$' then
    raise exception 'worker id must be 1-255 printable characters without spaces' using errcode = '22023';
  end if;
  if p_lease_seconds is null or p_lease_seconds not between 1 and 86400 then
    raise exception 'lease must be between 1 and 86400 seconds' using errcode = '22023';
  end if;
end
$$;

revoke execute on function vidanim_private.check_worker_args(text, integer) from public;

-- claim_video_jobs -------------------------------------------------------------------
create or replace function public.claim_video_jobs(
  p_worker_id text,
  p_limit integer default 1,
  p_lease_seconds integer default 300
)
returns setof public.video_jobs
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform vidanim_private.check_worker_args(p_worker_id, p_lease_seconds);
  if p_limit is null or p_limit not between 1 and 1000 then
    raise exception 'p_limit must be between 1 and 1000' using errcode = '22023';
  end if;

  return query
  with due as (
    select j.id
      from public.video_jobs j
     where j.status in ('queued', 'processing')
       and j.next_attempt_at <= now()
       and (j.locked_until is null or j.locked_until <= now())
     order by j.next_attempt_at, j.created_at
     limit p_limit
     for update skip locked
  )
  update public.video_jobs j
     set locked_by = p_worker_id,
         locked_until = now() + make_interval(secs => p_lease_seconds),
         -- a queued job is taken up for a (re)submission; a processing one is resumed
         attempts = j.attempts + case when j.status = 'queued' then 1 else 0 end
    from due
   where j.id = due.id
  returning j.*;
end
$$;

comment on function public.claim_video_jobs(text, integer, integer) is
  'Service role only: leases up to p_limit due jobs (queued, or processing with an expired lease) to a worker.';

-- renew_video_job_leases --------------------------------------------------------------
create or replace function public.renew_video_job_leases(
  p_worker_id text,
  p_job_ids uuid[],
  p_lease_seconds integer default 300
)
returns table (job_id uuid, status text, lease_held boolean, locked_until timestamptz)
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform vidanim_private.check_worker_args(p_worker_id, p_lease_seconds);
  if p_job_ids is null then
    raise exception 'p_job_ids is required' using errcode = '22023';
  end if;

  return query
  with renewed as (
    update public.video_jobs j
       set locked_until = now() + make_interval(secs => p_lease_seconds)
     where j.id = any (p_job_ids)
       and j.status in ('queued', 'processing')
       and j.locked_by = p_worker_id
       and j.locked_until > now()
    returning j.id, j.status, j.locked_until
  )
  select j.id, coalesce(r.status, j.status), r.id is not null, coalesce(r.locked_until, j.locked_until)
    from public.video_jobs j
    left join renewed r on r.id = j.id
   where j.id = any (p_job_ids);
end
$$;

comment on function public.renew_video_job_leases(text, uuid[], integer) is
  'Service role only: extends the worker''s unexpired leases; reports each job''s status and whether the lease is still held (a canceled job reports canceled).';

-- release_video_jobs ---------------------------------------------------------------------
create or replace function public.release_video_jobs(p_worker_id text, p_job_ids uuid[])
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_count integer;
begin
  perform vidanim_private.check_worker_args(p_worker_id, 1);
  if p_job_ids is null then
    raise exception 'p_job_ids is required' using errcode = '22023';
  end if;
  update public.video_jobs j
     set locked_by = null,
         locked_until = null,
         -- a queued job given back before its submission did not use an attempt
         attempts = case when j.status = 'queued' and j.attempts > 0 then j.attempts - 1 else j.attempts end
   where j.id = any (p_job_ids)
     and j.locked_by = p_worker_id;
  get diagnostics v_count = row_count;
  return v_count;
end
$$;

comment on function public.release_video_jobs(text, uuid[]) is
  'Service role only: the worker gives its leases back (on shutdown) so another worker can continue at once.';

-- schedule_video_job_retry -----------------------------------------------------------------
create or replace function public.schedule_video_job_retry(
  p_job_id uuid,
  p_worker_id text,
  p_delay_seconds double precision,
  p_error_code text default null,
  p_error_message text default null
)
returns public.video_jobs
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_job public.video_jobs;
begin
  perform vidanim_private.check_worker_args(p_worker_id, 1);
  if p_delay_seconds is null or p_delay_seconds < 0 or p_delay_seconds > 86400 then
    raise exception 'retry delay must be between 0 and 86400 seconds' using errcode = '22023';
  end if;
  select * into v_job from public.video_jobs where id = p_job_id for update;
  if not found then
    raise exception 'video job % not found', p_job_id using errcode = 'PT404';
  end if;
  if v_job.locked_by is distinct from p_worker_id or v_job.locked_until is null or v_job.locked_until <= now() then
    raise exception 'worker % does not hold the lease on video job %', p_worker_id, p_job_id
      using errcode = 'PT409';
  end if;
  -- Back to queued, for a fresh submission after the delay: the failed provider
  -- task (if any) is forgotten, its status and the error are kept for the record.
  update public.video_jobs j
     set status = 'queued',
         provider_task_id = null,
         provider_status = null,
         error_code = coalesce(p_error_code, j.error_code),
         error_message = coalesce(left(p_error_message, 2000), j.error_message),
         next_attempt_at = now() + make_interval(secs => p_delay_seconds),
         locked_by = null,
         locked_until = null
   where j.id = p_job_id
  returning j.* into v_job;
  return v_job;
end
$$;

comment on function public.schedule_video_job_retry(uuid, text, double precision, text, text) is
  'Service role only: puts a leased job back to queued after a delay (backoff), releasing the lease.';

revoke execute on function public.claim_video_jobs(text, integer, integer) from public, anon, authenticated, service_role;
revoke execute on function public.renew_video_job_leases(text, uuid[], integer) from public, anon, authenticated, service_role;
revoke execute on function public.release_video_jobs(text, uuid[]) from public, anon, authenticated, service_role;
revoke execute on function public.schedule_video_job_retry(uuid, text, double precision, text, text) from public, anon, authenticated, service_role;
grant execute on function public.claim_video_jobs(text, integer, integer) to service_role;
grant execute on function public.renew_video_job_leases(text, uuid[], integer) to service_role;
grant execute on function public.release_video_jobs(text, uuid[]) to service_role;
grant execute on function public.schedule_video_job_retry(uuid, text, double precision, text, text) to service_role;
