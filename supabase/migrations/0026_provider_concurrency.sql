-- Per-provider concurrency caps, enforced here for every worker at once.
--
-- Why: Runway's tiers allow a few generations at once (Tier 1: 1-2, Tier 5: 20) and
-- fal counts an account's requests in progress; each worker bounding itself is not
-- enough when several run. A job takes a slot at a provider just before it submits
-- (`acquire_video_provider_slot`, under a lock on the provider's limit row) and holds
-- it while it is `processing` there; a job that moves on (another status, a lease
-- handed back, taken by another worker) gives the slot back by itself. A provider
-- without a row here has no cap.
alter table public.video_jobs
  add column if not exists submitting_to text;

-- What a slot counts: jobs in flight at a provider, found without a scan of every job.
create index if not exists video_jobs_in_flight_by_provider
  on public.video_jobs (provider) where status = 'processing';
create index if not exists video_jobs_submitting_by_provider
  on public.video_jobs (submitting_to) where status = 'queued' and submitting_to is not null;

create table if not exists vidanim_private.video_provider_limits (
  provider text primary key check (provider ~ '^[a-z_]{1,32}$'),
  max_in_flight integer not null check (max_in_flight >= 0),
  updated_at timestamptz not null default now()
);

comment on table vidanim_private.video_provider_limits is
  'Most tasks in flight at a provider at once, across every worker (no row: no cap).';

alter table vidanim_private.video_provider_limits enable row level security;
revoke all on table vidanim_private.video_provider_limits from public, anon, authenticated, service_role;

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
    'estimated_cost_usd', 'submitting_to']
$$;

create or replace function vidanim_private.video_job_ended_columns()
returns text[]
language sql
immutable
set search_path = ''
as $$
  select array['locked_by', 'locked_until', 'updated_at', 'waiting_reason', 'submitting_to']
$$;

-- A job that changes status or hands over its lease no longer submits: its slot is free.
create or replace function vidanim_private.free_video_provider_slot()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if new.submitting_to is not null and new.submitting_to is not distinct from old.submitting_to
     and (new.status is distinct from old.status or new.locked_by is distinct from old.locked_by) then
    new.submitting_to := null;
  end if;
  return new;
end
$$;

revoke execute on function vidanim_private.free_video_provider_slot() from public;

drop trigger if exists video_jobs_free_provider_slot on public.video_jobs;
create trigger video_jobs_free_provider_slot
  before update on public.video_jobs
  for each row
  execute function vidanim_private.free_video_provider_slot();

-- Service role: may this leased job submit to p_provider now, under its cap?
create or replace function public.acquire_video_provider_slot(p_job_id uuid, p_worker_id text, p_provider text)
returns boolean
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_max integer;
  v_in_flight integer;
begin
  perform vidanim_private.check_worker_args(p_worker_id, 1);
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
   where j.id = p_job_id and j.locked_by = p_worker_id and j.locked_until > now();
  if not found then
    raise exception 'worker % does not hold the lease on video job %', p_worker_id, p_job_id using errcode = 'PT409';
  end if;
  return true;
end
$$;

comment on function public.acquire_video_provider_slot(uuid, text, text) is
  'Service role only: true (and the slot is the job''s) when p_provider has fewer tasks in flight than its cap.';

-- Service role (operators, or a worker from its settings): a provider's cap; null removes it.
create or replace function public.set_video_provider_limit(p_provider text, p_max_in_flight integer)
returns void
language plpgsql
security definer
set search_path = ''
as $$
begin
  if p_provider is null or p_provider !~ '^[a-z_]{1,32}$' then
    raise exception 'provider must be 1-32 characters of a-z and "_"' using errcode = '22023';
  end if;
  if p_max_in_flight is null then
    delete from vidanim_private.video_provider_limits l where l.provider = p_provider;
    return;
  end if;
  if p_max_in_flight < 0 or p_max_in_flight > 100000 then
    raise exception 'max_in_flight must be between 0 and 100000' using errcode = '22023';
  end if;
  insert into vidanim_private.video_provider_limits as l (provider, max_in_flight)
  values (p_provider, p_max_in_flight)
  on conflict (provider) do update set max_in_flight = excluded.max_in_flight, updated_at = now();
end
$$;

comment on function public.set_video_provider_limit(text, integer) is
  'Service role only: the most tasks in flight at a provider across every worker (null: no cap).';

do $$
declare
  f text;
begin
  foreach f in array array[
    'public.acquire_video_provider_slot(uuid, text, text)',
    'public.set_video_provider_limit(text, integer)'
  ] loop
    execute format('revoke execute on function %s from public, anon, authenticated, service_role', f);
    execute format('grant execute on function %s to service_role', f);
  end loop;
end
$$;
