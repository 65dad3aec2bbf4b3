-- A submission in flight is a row: a cancel during it is settled by the worker, not refunded blind.
--
-- Why: the refund trigger (0007) gave the quota unit back for any cancel of a queued
-- job that never started, which is still true while a worker holds the lease, has
-- reserved the cost (0024) and waits for the provider's answer. A user who cancels at
-- that moment (the row says when) had a task run and paid for while getting the unit
-- back; and the worker's release of the reservation then wrote to an ended job, which
-- the state machine refused, so the day's ledger kept spend that nobody would pay.
--
-- The rule (docs/worker.md, "A cancel during a submission"):
--   * `reserve_video_spend` is the last look at the job before the provider is called:
--     under the job's row lock it requires a queued job whose unexpired lease the
--     caller holds, and records the reservation here (job, worker, provider, day, cost).
--   * A cancel while that row belongs to the lease holder is recorded at once, but its
--     refund waits for the worker, who alone learns what the submission did:
--       - the provider certainly created nothing (an HTTP error, a connection never
--         made): `release_video_spend` gives the reservation back to the day it was
--         taken from and refunds the unit;
--       - a task was created (`record_video_job_submission` answers `refused`, the
--         worker cancels the task): the unit stays charged and the spend committed,
--         because no provider documents whether a canceled task is billed;
--       - the answer was lost: the same, the task may run.
--     Either way the row is gone afterwards. A worker that dies in between leaves the
--     unit charged and the spend committed: the side that never lets a task run unpaid.
--   * `acquire_video_provider_slot` holds to the same lease rule.
create table if not exists vidanim_private.video_submissions_in_flight (
  job_id uuid primary key references public.video_jobs (id) on delete cascade,
  worker_id text not null,
  provider text not null check (provider in ('fal', 'runway')),
  day date not null,
  cost_usd numeric(12, 4) not null check (cost_usd >= 0),
  reserved_at timestamptz not null default now()
);

comment on table vidanim_private.video_submissions_in_flight is
  'A reservation whose submission has not been settled yet: written by reserve_video_spend, removed by the settling call.';

alter table vidanim_private.video_submissions_in_flight enable row level security;
revoke all on table vidanim_private.video_submissions_in_flight from public, anon, authenticated, service_role;

-- Settling a submission may touch an ended job: its cost estimate and its refund.
create or replace function vidanim_private.video_job_ended_columns()
returns text[]
language sql
immutable
set search_path = ''
as $$
  select array[
    'locked_by', 'locked_until', 'updated_at', 'waiting_reason', 'submitting_to',
    'provider_submissions', 'uncertain_submissions', 'estimated_cost_usd', 'quota_refunded_at']
$$;

-- The unit of a job goes back to the day it was charged (never below zero).
create or replace function vidanim_private.give_back_video_quota_unit(p_user_id uuid, p_day date)
returns void
language sql
set search_path = ''
as $$
  update public.video_quota_usage u
     set used = u.used - 1
   where u.user_id = p_user_id and u.day = p_day and u.used > 0
$$;

revoke execute on function vidanim_private.give_back_video_quota_unit(uuid, date) from public;

-- Whether the lease holder of the job is between its reservation and the provider's answer.
create or replace function vidanim_private.video_submission_in_flight(p_job public.video_jobs)
returns boolean
language sql
stable
set search_path = ''
as $$
  select exists (
    select 1 from vidanim_private.video_submissions_in_flight f
     where f.job_id = p_job.id and f.worker_id = p_job.locked_by and p_job.locked_until > now())
$$;

revoke execute on function vidanim_private.video_submission_in_flight(public.video_jobs) from public;

create or replace function vidanim_private.refund_video_job_quota()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if new.quota_refunded_at is null
     and old.status in ('queued', 'processing')
     and (new.status = 'failed'
          or (new.status = 'canceled' and old.status = 'queued' and old.started_at is null
              and not vidanim_private.video_submission_in_flight(old))) then
    perform vidanim_private.give_back_video_quota_unit(old.user_id, old.quota_day);
    new.quota_refunded_at := now();
  end if;
  return new;
end
$$;

comment on function vidanim_private.refund_video_job_quota() is
  'Trigger: gives a job''s quota unit back, once, when it fails or is canceled unsent; a cancel during a submission is settled by release_video_spend.';

-- Service role: reserve a submission's cost in today's ledger, or refuse at the cap.
-- PT409 unless the caller holds the queued job's unexpired lease.
create or replace function public.reserve_video_spend(
  p_job_id uuid,
  p_worker_id text,
  p_provider text,
  p_cost_usd numeric
)
returns table (reserved boolean, committed_usd numeric, daily_cap_usd numeric)
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_job public.video_jobs;
  v_cap numeric;
  v_committed numeric;
  v_day date := (now() at time zone 'utc')::date;
begin
  perform vidanim_private.check_worker_args(p_worker_id, 1);
  perform vidanim_private.check_provider(p_provider);
  if p_cost_usd is null or p_cost_usd < 0 or p_cost_usd > 10000 then
    raise exception 'cost must be between 0 and 10000 USD' using errcode = '22023';
  end if;
  -- the job's lock orders this against a cancel: the cancel sees the reservation, or we see the cancel
  select * into v_job from public.video_jobs j where j.id = p_job_id for update;
  if not vidanim_private.holds_queued_job(v_job, p_worker_id) then
    raise exception 'worker % does not hold the lease on queued video job %', p_worker_id, p_job_id
      using errcode = 'PT409';
  end if;
  -- One lock for the whole day's budget: reservations are serialized, so the sum
  -- read here is the sum every other reservation will read after this one.
  select b.daily_cap_usd into v_cap from vidanim_private.video_budget b where b.id for update;
  select coalesce(sum(s.committed_usd), 0) into v_committed from vidanim_private.video_spend s where s.day = v_day;
  if v_cap is not null and v_committed + p_cost_usd > v_cap then
    return query select false, v_committed, v_cap;
    return;
  end if;
  insert into vidanim_private.video_spend as s (day, provider, committed_usd, submissions)
  values (v_day, p_provider, p_cost_usd, 1)
  on conflict (day, provider) do update
    set committed_usd = s.committed_usd + excluded.committed_usd, submissions = s.submissions + 1;
  -- A row left by a worker that died mid-submission stays committed in its day; this one replaces it.
  insert into vidanim_private.video_submissions_in_flight as f (job_id, worker_id, provider, day, cost_usd)
  values (p_job_id, p_worker_id, p_provider, v_day, p_cost_usd)
  on conflict (job_id) do update
    set worker_id = excluded.worker_id, provider = excluded.provider, day = excluded.day,
        cost_usd = excluded.cost_usd, reserved_at = now();
  update public.video_jobs j set estimated_cost_usd = p_cost_usd where j.id = p_job_id;
  return query select true, v_committed + p_cost_usd, v_cap;
end
$$;

-- Service role: a submission that cannot have been paid gives its reservation back,
-- to the day and provider it was taken from, once; a job canceled during it gets its
-- unit back. Without a reservation for (job, provider) it does nothing.
create or replace function public.release_video_spend(p_job_id uuid, p_provider text, p_cost_usd numeric)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_flight vidanim_private.video_submissions_in_flight;
  v_job public.video_jobs;
begin
  perform vidanim_private.check_provider(p_provider);
  -- the caller's figure is checked, but the reservation's own cost is what goes back
  if p_cost_usd is null or p_cost_usd < 0 or p_cost_usd > 10000 then
    raise exception 'cost must be between 0 and 10000 USD' using errcode = '22023';
  end if;
  select * into v_job from public.video_jobs j where j.id = p_job_id for update;
  delete from vidanim_private.video_submissions_in_flight f
   where f.job_id = p_job_id and f.provider = p_provider
  returning f.* into v_flight;
  if not found then
    return;
  end if;
  update vidanim_private.video_spend s
     set committed_usd = greatest(s.committed_usd - v_flight.cost_usd, 0),
         submissions = greatest(s.submissions - 1, 0)
   where s.day = v_flight.day and s.provider = v_flight.provider;
  if v_job.provider_task_id is null then
    update public.video_jobs j set estimated_cost_usd = null where j.id = p_job_id;
  end if;
  if v_job.status = 'canceled' and v_job.started_at is null and v_job.quota_refunded_at is null then
    perform vidanim_private.give_back_video_quota_unit(v_job.user_id, v_job.quota_day);
    update public.video_jobs j set quota_refunded_at = now() where j.id = p_job_id;
  end if;
end
$$;

comment on function public.release_video_spend(uuid, text, numeric) is
  'Service role only: gives back the reservation of a submission the provider refused or never received (once), and the unit of a job canceled meanwhile.';

-- Service role: may this leased job submit to p_provider now, under its cap?
create or replace function public.acquire_video_provider_slot(p_job_id uuid, p_worker_id text, p_provider text)
returns boolean
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_job public.video_jobs;
  v_max integer;
  v_in_flight integer;
begin
  perform vidanim_private.check_worker_args(p_worker_id, 1);
  perform vidanim_private.check_provider(p_provider);
  select * into v_job from public.video_jobs j where j.id = p_job_id;
  if not vidanim_private.holds_queued_job(v_job, p_worker_id) then
    raise exception 'worker % does not hold the lease on queued video job %', p_worker_id, p_job_id
      using errcode = 'PT409';
  end if;
  -- One lock per provider: acquisitions at one provider are serialized.
  select l.max_in_flight into v_max from vidanim_private.video_provider_limits l
   where l.provider = p_provider for update;
  if v_max is not null then
    select count(*) into v_in_flight from public.video_jobs j
     where j.id <> p_job_id
       and ((j.status = 'processing' and j.provider = p_provider)
            or (j.status = 'queued' and j.submitting_to = p_provider and j.locked_until > now()));
    if v_in_flight >= v_max then
      return false;
    end if;
  end if;
  update public.video_jobs j set submitting_to = p_provider
   where j.id = p_job_id and j.locked_by = p_worker_id and j.locked_until > now() and j.status = 'queued';
  if not found then
    raise exception 'worker % does not hold the lease on queued video job %', p_worker_id, p_job_id
      using errcode = 'PT409';
  end if;
  return true;
end
$$;

-- Service role: the provider accepted a submission (0030); its reservation is settled.
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
  -- a task exists: its cost stays committed, and a cancel meanwhile keeps the unit
  delete from vidanim_private.video_submissions_in_flight f where f.job_id = p_job_id;
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

-- Service role: a submission's answer was lost (0030); the task may run, so its
-- reservation is settled as spent.
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
  delete from vidanim_private.video_submissions_in_flight f where f.job_id = p_job_id;
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

do $$
declare
  f text;
begin
  foreach f in array array[
    'public.reserve_video_spend(uuid, text, text, numeric)',
    'public.release_video_spend(uuid, text, numeric)',
    'public.acquire_video_provider_slot(uuid, text, text)',
    'public.record_video_job_submission(uuid, text, text, text, text)',
    'public.record_uncertain_video_job_submission(uuid, text, text, double precision)'
  ] loop
    execute format('revoke execute on function %s from public, anon, authenticated, service_role', f);
    execute format('grant execute on function %s to service_role', f);
  end loop;
end
$$;
