-- What the worker knows about a job that its user need not: in a private companion table.
--
-- Why: users read their own rows of `public.video_jobs` with `select *` (supabase-js,
-- Realtime), and two columns there were the worker's: `submitting_to` (set the moment
-- a submission starts: exactly when a cancel is worth timing) and `estimated_cost_usd`
-- (our price). A user's `select *` must keep working, and PostgREST's `select=*` fails
-- on a table with column privileges, so hiding columns by grants is not an option: they
-- move to `vidanim_private.video_job_internals`, one row per job that has any, with the
-- operator's detail of a job's last error (`error_detail`: the provider's own words, a
-- refused key), which `error_message` no longer carries. docs/security.md says what
-- stays in the user's row and why.
create table if not exists vidanim_private.video_job_internals (
  job_id uuid primary key references public.video_jobs (id) on delete cascade,
  submitting_to text check (submitting_to in ('fal', 'runway')),
  estimated_cost_usd numeric(12, 4),
  error_detail text check (char_length(error_detail) <= 2000),
  updated_at timestamptz not null default now()
);

comment on table vidanim_private.video_job_internals is
  'The worker''s own facts about a job (slot, cost estimate, operator error detail); never readable by its user.';

create index if not exists video_job_internals_submitting
  on vidanim_private.video_job_internals (submitting_to) where submitting_to is not null;

alter table vidanim_private.video_job_internals enable row level security;
revoke all on table vidanim_private.video_job_internals from public, anon, authenticated, service_role;

insert into vidanim_private.video_job_internals (job_id, submitting_to, estimated_cost_usd)
select j.id, j.submitting_to, j.estimated_cost_usd
  from public.video_jobs j
 where j.submitting_to is not null or j.estimated_cost_usd is not null
on conflict (job_id) do nothing;

-- The state machine's lists no longer name the moved columns.
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
    'progress', 'queue_position', 'provider_submissions', 'uncertain_submissions']
$$;

create or replace function vidanim_private.video_job_ended_columns()
returns text[]
language sql
immutable
set search_path = ''
as $$
  select array[
    'locked_by', 'locked_until', 'updated_at', 'waiting_reason',
    'provider_submissions', 'uncertain_submissions', 'quota_refunded_at']
$$;

-- A job that changes status or hands over its lease no longer submits: its slot is free (0026).
create or replace function vidanim_private.free_video_provider_slot()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if new.status is distinct from old.status or new.locked_by is distinct from old.locked_by then
    update vidanim_private.video_job_internals i
       set submitting_to = null, updated_at = now()
     where i.job_id = new.id and i.submitting_to is not null;
  end if;
  return new;
end
$$;

-- Service role: may this leased job submit to p_provider now, under its cap? (0026, 0033)
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
  select * into v_job from public.video_jobs j where j.id = p_job_id for update;
  if not vidanim_private.holds_queued_job(v_job, p_worker_id) then
    raise exception 'worker % does not hold the lease on queued video job %', p_worker_id, p_job_id
      using errcode = 'PT409';
  end if;
  -- One lock per provider: acquisitions at one provider are serialized.
  select l.max_in_flight into v_max from vidanim_private.video_provider_limits l
   where l.provider = p_provider for update;
  if v_max is not null then
    select (select count(*) from public.video_jobs j
             where j.id <> p_job_id and j.status = 'processing' and j.provider = p_provider)
         + (select count(*) from vidanim_private.video_job_internals i
              join public.video_jobs j on j.id = i.job_id
             where i.submitting_to = p_provider and i.job_id <> p_job_id
               and j.status = 'queued' and j.locked_until > now())
      into v_in_flight;
    if v_in_flight >= v_max then
      return false;
    end if;
  end if;
  insert into vidanim_private.video_job_internals as i (job_id, submitting_to)
  values (p_job_id, p_provider)
  on conflict (job_id) do update set submitting_to = excluded.submitting_to, updated_at = now();
  return true;
end
$$;

-- Service role: reserve a submission's cost (0024, 0033); the estimate is the worker's.
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
  insert into vidanim_private.video_submissions_in_flight as f (job_id, worker_id, provider, day, cost_usd)
  values (p_job_id, p_worker_id, p_provider, v_day, p_cost_usd)
  on conflict (job_id) do update
    set worker_id = excluded.worker_id, provider = excluded.provider, day = excluded.day,
        cost_usd = excluded.cost_usd, reserved_at = now();
  insert into vidanim_private.video_job_internals as i (job_id, estimated_cost_usd)
  values (p_job_id, p_cost_usd)
  on conflict (job_id) do update set estimated_cost_usd = excluded.estimated_cost_usd, updated_at = now();
  return query select true, v_committed + p_cost_usd, v_cap;
end
$$;

-- Service role: give back a reservation that cannot have been paid (0024, 0033).
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
    update vidanim_private.video_job_internals i
       set estimated_cost_usd = null, updated_at = now()
     where i.job_id = p_job_id;
  end if;
  if v_job.status = 'canceled' and v_job.started_at is null and v_job.quota_refunded_at is null then
    perform vidanim_private.give_back_video_quota_unit(v_job.user_id, v_job.quota_day);
    update public.video_jobs j set quota_refunded_at = now() where j.id = p_job_id;
  end if;
end
$$;

-- Service role: the operator's detail of a job's last error (never shown to its user).
create or replace function public.note_video_job_error_detail(p_job_id uuid, p_detail text)
returns void
language plpgsql
security definer
set search_path = ''
as $$
begin
  if p_job_id is null then
    raise exception 'p_job_id is required' using errcode = '22023';
  end if;
  insert into vidanim_private.video_job_internals as i (job_id, error_detail)
  select j.id, left(p_detail, 2000) from public.video_jobs j where j.id = p_job_id
  on conflict (job_id) do update set error_detail = excluded.error_detail, updated_at = now();
end
$$;

comment on function public.note_video_job_error_detail(uuid, text) is
  'Service role only: records the operator''s detail of a job''s last error (the user reads error_message only).';

-- Service role (operators): what the worker knows about a job besides its row.
create or replace function public.get_video_job_internals(p_job_id uuid)
returns table (submitting_to text, estimated_cost_usd numeric, error_detail text)
language sql
stable
security definer
set search_path = ''
as $$
  select i.submitting_to, i.estimated_cost_usd, i.error_detail
    from vidanim_private.video_job_internals i
   where i.job_id = p_job_id
$$;

comment on function public.get_video_job_internals(uuid) is
  'Service role only: a job''s provider slot, cost estimate and operator error detail.';

do $$
declare
  f text;
begin
  foreach f in array array[
    'public.acquire_video_provider_slot(uuid, text, text)',
    'public.reserve_video_spend(uuid, text, text, numeric)',
    'public.release_video_spend(uuid, text, numeric)',
    'public.note_video_job_error_detail(uuid, text)',
    'public.get_video_job_internals(uuid)'
  ] loop
    execute format('revoke execute on function %s from public, anon, authenticated, service_role', f);
    execute format('grant execute on function %s to service_role', f);
  end loop;
end
$$;

-- squawk-ignore ban-drop-column
alter table public.video_jobs drop column if exists submitting_to, drop column if exists estimated_cost_usd;
