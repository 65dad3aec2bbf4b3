-- Submissions counted per job, and submissions whose answer was lost.
--
-- Why: a submission can reach the provider and lose its reply (a read timeout, a
-- connection reset after the body went out). The provider may then run a paid task
-- that nobody holds. Resubmitting at once would pay twice; failing the job would
-- punish the user for our network. So every submission that may have started a paid
-- task is counted on the job (`provider_submissions`), an uncertain one is counted
-- apart (`uncertain_submissions`) and recorded in the timeline (provider status
-- `submission_uncertain`), and the job waits for the provider to name the task (a
-- fal webhook carries the job in its URL: 0031 adopts it) before anyone submits
-- again. docs/worker.md gives the policy and its bound.
alter table public.video_jobs
  add column if not exists provider_submissions integer not null default 0,
  add column if not exists uncertain_submissions integer not null default 0;

comment on column public.video_jobs.provider_submissions is
  'Submissions sent to a provider that may have started a paid task (accepted, or answer lost).';
comment on column public.video_jobs.uncertain_submissions is
  'Submissions whose answer was lost: the provider may run a task the job does not hold.';

create or replace function vidanim_private.video_job_live_columns()
returns text[]
language sql
immutable
set search_path = ''
as $$
  select array[
    'status', 'provider', 'provider_task_id', 'provider_status', 'output_video_path',
    'error_code', 'error_message', 'attempts', 'next_attempt_at', 'locked_by',
    'locked_until', 'updated_at', 'started_at', 'completed_at', 'waiting_reason',
    'estimated_cost_usd', 'submitting_to', 'progress', 'queue_position',
    'provider_submissions', 'uncertain_submissions']
$$;

-- A worker that lost the job while its submission was on the way still counts it.
create or replace function vidanim_private.video_job_ended_columns()
returns text[]
language sql
immutable
set search_path = ''
as $$
  select array[
    'locked_by', 'locked_until', 'updated_at', 'waiting_reason', 'submitting_to',
    'provider_submissions', 'uncertain_submissions']
$$;

-- Two rules the submission functions below share with the delivery function (0031).
create or replace function vidanim_private.check_provider(p_provider text)
returns void
language plpgsql
immutable
set search_path = ''
as $$
begin
  if p_provider is null or p_provider not in ('fal', 'runway') then
    raise exception 'unknown provider %', coalesce(quote_literal(p_provider), 'null') using errcode = '22023';
  end if;
end
$$;

revoke execute on function vidanim_private.check_provider(text) from public;

-- Whether the worker holds the queued job's lease now: a lease run out, or none, is nobody's.
create or replace function vidanim_private.holds_queued_job(p_job public.video_jobs, p_worker_id text)
returns boolean
language sql
stable
set search_path = ''
as $$
  select coalesce(p_job.status = 'queued' and p_job.locked_by = p_worker_id and p_job.locked_until > now(), false)
$$;

revoke execute on function vidanim_private.holds_queued_job(public.video_jobs, text) from public;

-- Service role: the provider accepted a submission. It is counted whatever happens;
-- the task is recorded (queued -> processing) only while the worker holds the queued
-- job: 'recorded'. 'held': the job already holds this very task (its webhook was
-- adopted before the answer came back). 'refused': the job moved on without this
-- worker, so the task must be canceled.
create or replace function public.record_video_job_submission(
  p_job_id uuid,
  p_worker_id text,
  p_provider text,
  p_task_id text,
  p_provider_status text
)
returns text
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_job public.video_jobs;
begin
  perform vidanim_private.check_worker_args(p_worker_id, 1);
  perform vidanim_private.check_provider(p_provider);
  if p_task_id is null or char_length(p_task_id) not between 1 and 255 then
    raise exception 'the task id must be 1-255 characters' using errcode = '22023';
  end if;
  select * into v_job from public.video_jobs where id = p_job_id for update;
  if not found then
    raise exception 'video job % not found', p_job_id using errcode = 'PT404';
  end if;
  update public.video_jobs j
     set provider_submissions = j.provider_submissions + 1
   where j.id = p_job_id;
  if v_job.provider = p_provider and v_job.provider_task_id = p_task_id then
    return 'held';
  end if;
  if not vidanim_private.holds_queued_job(v_job, p_worker_id) then
    return 'refused';
  end if;
  perform public.service_update_video_job_status(
    p_job_id => p_job_id, p_status => 'processing', p_provider => p_provider,
    p_provider_task_id => p_task_id, p_provider_status => p_provider_status, p_worker_id => p_worker_id);
  return 'recorded';
end
$$;

comment on function public.record_video_job_submission(uuid, text, text, text, text) is
  'Service role only: count an accepted submission and record its task on the queued job the worker holds.';

revoke execute on function public.record_video_job_submission(uuid, text, text, text, text)
  from public, anon, authenticated, service_role;
grant execute on function public.record_video_job_submission(uuid, text, text, text, text) to service_role;

-- Service role: a submission's answer was lost. It is counted; the queued job the
-- worker holds waits `p_wait_seconds` (lease handed back, the attempt spent) with
-- provider status `submission_uncertain`, so the timeline shows it and an adoption
-- (0031) can find it.
create or replace function public.record_uncertain_video_job_submission(
  p_job_id uuid,
  p_worker_id text,
  p_provider text,
  p_wait_seconds double precision
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
  perform vidanim_private.check_provider(p_provider);
  if p_wait_seconds is null or p_wait_seconds < 0 or p_wait_seconds > 86400 then
    raise exception 'wait must be between 0 and 86400 seconds' using errcode = '22023';
  end if;
  select * into v_job from public.video_jobs where id = p_job_id for update;
  if not found then
    raise exception 'video job % not found', p_job_id using errcode = 'PT404';
  end if;
  update public.video_jobs j
     set provider_submissions = j.provider_submissions + 1,
         uncertain_submissions = j.uncertain_submissions + 1
   where j.id = p_job_id
  returning j.* into v_job;
  if not vidanim_private.holds_queued_job(v_job, p_worker_id) then
    return v_job;  -- counted; the job is another worker's (or ended) now
  end if;
  update public.video_jobs j
     set provider = p_provider,
         provider_status = 'submission_uncertain',
         waiting_reason = 'submission_uncertain',
         next_attempt_at = now() + make_interval(secs => p_wait_seconds),
         locked_by = null,
         locked_until = null
   where j.id = p_job_id
  returning j.* into v_job;
  return v_job;
end
$$;

comment on function public.record_uncertain_video_job_submission(uuid, text, text, double precision) is
  'Service role only: count a submission whose answer was lost; the queued job waits p_wait_seconds for its task to be named.';

revoke execute on function public.record_uncertain_video_job_submission(uuid, text, text, double precision)
  from public, anon, authenticated, service_role;
grant execute on function public.record_uncertain_video_job_submission(uuid, text, text, double precision)
  to service_role;
