-- Jobs that wait: a job the worker cannot move on for a reason that is not the
-- user's stays where it is, for later, and says why.
--
-- Why: an operator's fault (a wrong Storage key, Storage down, and later a provider
-- outage or a spent budget) must never fail a user's job. Until now the worker's
-- only ways out were to fail the job or to schedule a retry, which puts it back to
-- `queued` and submits it again: for a job whose video is already made, that pays
-- the provider twice. `defer_video_job` keeps the job's status and provider task,
-- hands its lease back, makes it due again after a delay, and records a
-- `waiting_reason` the user can read (docs/api.md lists the codes). A queued job
-- deferred before its submission gets its attempt back. The reason clears itself
-- on the job's next status or provider-status change.
alter table public.video_jobs
  add column if not exists waiting_reason text;

do $$
begin
  if not exists (
    select 1 from pg_constraint
     where conname = 'video_jobs_waiting_reason_format' and conrelid = 'public.video_jobs'::regclass
  ) then
    alter table public.video_jobs
      -- squawk-ignore constraint-missing-not-valid
      add constraint video_jobs_waiting_reason_format check (waiting_reason ~ '^[a-z_]{1,64}$');
  end if;
end
$$;

-- Which columns may change, as functions of their own: a later migration that adds a
-- column the worker updates replaces one of these, not the whole state machine.
create or replace function vidanim_private.video_job_live_columns()
returns text[]
language sql
immutable
set search_path = ''
as $$
  select array[
    'status', 'provider', 'provider_task_id', 'provider_status', 'output_video_path',
    'error_code', 'error_message', 'attempts', 'next_attempt_at', 'locked_by',
    'locked_until', 'updated_at', 'started_at', 'completed_at', 'waiting_reason']
$$;

comment on function vidanim_private.video_job_live_columns() is
  'Columns of a queued or processing job that may change; every other column is the request and never changes.';

create or replace function vidanim_private.video_job_ended_columns()
returns text[]
language sql
immutable
set search_path = ''
as $$
  select array['locked_by', 'locked_until', 'updated_at', 'waiting_reason']
$$;

comment on function vidanim_private.video_job_ended_columns() is
  'Columns of a completed, failed or canceled job that may still change (its lease, nothing of substance).';

revoke execute on function vidanim_private.video_job_live_columns() from public;
revoke execute on function vidanim_private.video_job_ended_columns() from public;

-- The state machine (0006, 0018, 0021), reading those lists.
create or replace function vidanim_private.enforce_video_job_transition()
returns trigger
language plpgsql
set search_path = ''
as $$
declare
  mutable_live constant text[] := vidanim_private.video_job_live_columns();
  mutable_ended constant text[] := vidanim_private.video_job_ended_columns();
  expiring constant text[] := array['locked_by', 'locked_until', 'updated_at', 'output_video_path', 'output_expired_at'];
begin
  if old.status in ('completed', 'failed', 'canceled') then
    if old.status = 'completed' and old.output_expired_at is null and new.output_expired_at is not null
       and new.output_video_path is null
       and (to_jsonb(new) - expiring) is not distinct from (to_jsonb(old) - expiring) then
      return new;
    end if;
    -- ... and take it back, when its deletion did not happen (restore_video_output).
    if old.status = 'completed' and old.output_expired_at is not null and new.output_expired_at is null
       and new.output_video_path = old.user_id::text || '/' || old.id::text || '.mp4'
       and (to_jsonb(new) - expiring) is not distinct from (to_jsonb(old) - expiring) then
      return new;
    end if;
    if (to_jsonb(new) - mutable_ended) is distinct from (to_jsonb(old) - mutable_ended) then
      raise exception 'video job % has already ended (%)', old.id, old.status
        using errcode = 'PT409',
              hint = 'A completed, failed or canceled job cannot change; create a new job instead.';
    end if;
    return new;
  end if;

  if (to_jsonb(new) - mutable_live) is distinct from (to_jsonb(old) - mutable_live) then
    raise exception 'video job %: the request (owner, image, prompt, options, quota day) cannot change', old.id
      using errcode = 'PT409';
  end if;

  if new.status is distinct from old.status and not (
       (old.status = 'queued' and new.status in ('processing', 'failed', 'canceled'))
    or (old.status = 'processing' and new.status in ('queued', 'completed', 'failed', 'canceled'))
  ) then
    raise exception 'video job %: illegal status change % -> %', old.id, old.status, new.status
      using errcode = 'PT409';
  end if;

  if old.status = 'processing' and new.status = 'processing'
     and (new.provider_task_id is distinct from old.provider_task_id
          or new.provider is distinct from old.provider) then
    raise exception 'video job % already runs as % task %', old.id, old.provider, old.provider_task_id
      using errcode = 'PT409',
            hint = 'Cancel the new provider task; the job keeps the one it was given.';
  end if;

  return new;
end
$$;

-- A status or provider-status change means the job moved on: it no longer waits.
create or replace function vidanim_private.clear_video_job_waiting_reason()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if new.waiting_reason is not distinct from old.waiting_reason
     and (new.status is distinct from old.status or new.provider_status is distinct from old.provider_status) then
    new.waiting_reason := null;
  end if;
  return new;
end
$$;

comment on function vidanim_private.clear_video_job_waiting_reason() is
  'Trigger: a job whose status or provider status changes no longer waits.';

revoke execute on function vidanim_private.clear_video_job_waiting_reason() from public;

drop trigger if exists video_jobs_clear_waiting_reason on public.video_jobs;
create trigger video_jobs_clear_waiting_reason
  before update on public.video_jobs
  for each row
  execute function vidanim_private.clear_video_job_waiting_reason();

-- Service role: the worker leaves a leased job to wait `p_delay_seconds`, saying why.
create or replace function public.defer_video_job(
  p_job_id uuid,
  p_worker_id text,
  p_delay_seconds double precision,
  p_reason text
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
    raise exception 'delay must be between 0 and 86400 seconds' using errcode = '22023';
  end if;
  if p_reason is null or p_reason !~ '^[a-z_]{1,64}$' then
    raise exception 'reason must be 1-64 characters of a-z and "_"' using errcode = '22023';
  end if;
  select * into v_job from public.video_jobs where id = p_job_id for update;
  if not found then
    raise exception 'video job % not found', p_job_id using errcode = 'PT404';
  end if;
  if v_job.locked_by is distinct from p_worker_id or v_job.locked_until is null or v_job.locked_until <= now() then
    raise exception 'worker % does not hold the lease on video job %', p_worker_id, p_job_id
      using errcode = 'PT409';
  end if;
  update public.video_jobs j
     set next_attempt_at = now() + make_interval(secs => p_delay_seconds),
         locked_by = null,
         locked_until = null,
         waiting_reason = p_reason,
         -- waiting is not trying: a queued job gets the attempt its claim counted back
         attempts = case when j.status = 'queued' and j.attempts > 0 then j.attempts - 1 else j.attempts end
   where j.id = p_job_id
  returning j.* into v_job;
  return v_job;
end
$$;

comment on function public.defer_video_job(uuid, text, double precision, text) is
  'Service role only: a leased job waits p_delay_seconds without changing status or provider task; p_reason says why.';

revoke execute on function public.defer_video_job(uuid, text, double precision, text)
  from public, anon, authenticated, service_role;
grant execute on function public.defer_video_job(uuid, text, double precision, text) to service_role;
