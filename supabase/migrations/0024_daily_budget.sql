-- A global daily spend cap, checked atomically at every submission, across every worker.
--
-- Why: per-user quotas bound each user, not the bill. A bug or an abuse wave could
-- spend far more than a day's budget. Each submission now reserves its estimated
-- cost (a price table per provider, model and duration, kept by the worker) in the
-- day's ledger *before* the provider is called, under one lock on the budget row:
-- under any concurrency the day's committed spend never passes the cap. A submission
-- the provider refused, or one that never left, gives its reservation back. At the
-- cap, jobs wait in `queued` (`waiting_reason = budget_reached`) until the next UTC
-- day or a raised cap; nothing fails and no user's quota is touched.
alter table public.video_jobs
  add column if not exists estimated_cost_usd numeric(12, 4);

create table if not exists vidanim_private.video_budget (
  id boolean primary key default true check (id),
  -- null: no cap
  daily_cap_usd numeric(12, 4) check (daily_cap_usd >= 0),
  updated_at timestamptz not null default now()
);
insert into vidanim_private.video_budget (id) values (true) on conflict (id) do nothing;

create table if not exists vidanim_private.video_spend (
  day date not null,
  provider text not null,
  committed_usd numeric(14, 4) not null default 0 check (committed_usd >= 0),
  submissions integer not null default 0 check (submissions >= 0),
  primary key (day, provider)
);

comment on table vidanim_private.video_budget is 'The global daily spend cap (one row; null means no cap).';
comment on table vidanim_private.video_spend is
  'Committed spend per UTC day and provider: the estimated cost of every submission that may have been paid.';

alter table vidanim_private.video_budget enable row level security;
alter table vidanim_private.video_spend enable row level security;
revoke all on table vidanim_private.video_budget, vidanim_private.video_spend
  from public, anon, authenticated, service_role;

-- The worker's submitted job records its estimated cost; the state machine lets it.
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
    'estimated_cost_usd']
$$;

-- Service role: reserve a submission's cost in today's ledger, or refuse at the cap.
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
  v_cap numeric;
  v_committed numeric;
  v_day date := (now() at time zone 'utc')::date;
begin
  perform vidanim_private.check_worker_args(p_worker_id, 1);
  if p_provider is null or p_provider !~ '^[a-z_]{1,32}$' then
    raise exception 'provider must be 1-32 characters of a-z and "_"' using errcode = '22023';
  end if;
  if p_cost_usd is null or p_cost_usd < 0 or p_cost_usd > 10000 then
    raise exception 'cost must be between 0 and 10000 USD' using errcode = '22023';
  end if;
  if not exists (
    select 1 from public.video_jobs j
     where j.id = p_job_id and j.locked_by = p_worker_id and j.locked_until > now()
  ) then
    raise exception 'worker % does not hold the lease on video job %', p_worker_id, p_job_id using errcode = 'PT409';
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
  update public.video_jobs j set estimated_cost_usd = p_cost_usd where j.id = p_job_id;
  return query select true, v_committed + p_cost_usd, v_cap;
end
$$;

comment on function public.reserve_video_spend(uuid, text, text, numeric) is
  'Service role only: reserves a submission''s estimated cost in today''s ledger unless it would pass the daily cap.';

-- Service role: a submission that cannot have been paid gives its reservation back.
create or replace function public.release_video_spend(p_job_id uuid, p_provider text, p_cost_usd numeric)
returns void
language plpgsql
security definer
set search_path = ''
as $$
begin
  update vidanim_private.video_spend s
     set committed_usd = greatest(s.committed_usd - p_cost_usd, 0),
         submissions = greatest(s.submissions - 1, 0)
   where s.day = (now() at time zone 'utc')::date and s.provider = p_provider;
  update public.video_jobs j set estimated_cost_usd = null where j.id = p_job_id and j.provider_task_id is null;
end
$$;

comment on function public.release_video_spend(uuid, text, numeric) is
  'Service role only: gives back a reservation whose submission the provider refused or never received.';

-- Service role (operators): set the daily cap; null removes it. Jobs waiting for budget wake up.
create or replace function public.set_video_daily_budget(p_daily_cap_usd numeric)
returns void
language plpgsql
security definer
set search_path = ''
as $$
begin
  if p_daily_cap_usd is not null and (p_daily_cap_usd < 0 or p_daily_cap_usd > 100000000) then
    raise exception 'the daily cap must be between 0 and 100000000 USD, or null for none' using errcode = '22023';
  end if;
  update vidanim_private.video_budget b set daily_cap_usd = p_daily_cap_usd, updated_at = now() where b.id;
  update public.video_jobs j
     set next_attempt_at = now()
   where j.status = 'queued' and j.waiting_reason = 'budget_reached' and j.next_attempt_at > now();
end
$$;

comment on function public.set_video_daily_budget(numeric) is
  'Service role only: the global daily spend cap in USD (null: none); jobs waiting for budget are due at once.';

-- Service role: the cap (null: none).
create or replace function public.get_video_daily_budget()
returns numeric
language sql
stable
security definer
set search_path = ''
as $$
  select b.daily_cap_usd from vidanim_private.video_budget b where b.id
$$;

comment on function public.get_video_daily_budget() is 'Service role only: the global daily spend cap in USD (null: none).';

-- Service role: the cap and the spend by day and provider, newest day first.
create or replace function public.get_video_spend(p_days integer default 7)
returns table (day date, provider text, committed_usd numeric, submissions integer, daily_cap_usd numeric)
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
  if p_days is null or p_days not between 1 and 366 then
    raise exception 'p_days must be between 1 and 366' using errcode = '22023';
  end if;
  return query
  select s.day, s.provider, s.committed_usd, s.submissions, b.daily_cap_usd
    from vidanim_private.video_spend s
    cross join vidanim_private.video_budget b
   where s.day > (now() at time zone 'utc')::date - p_days
   order by s.day desc, s.provider;
end
$$;

comment on function public.get_video_spend(integer) is
  'Service role only: committed spend per UTC day and provider over the last p_days days, with the cap.';

do $$
declare
  f text;
begin
  foreach f in array array[
    'public.reserve_video_spend(uuid, text, text, numeric)',
    'public.release_video_spend(uuid, text, numeric)',
    'public.set_video_daily_budget(numeric)',
    'public.get_video_daily_budget()',
    'public.get_video_spend(integer)'
  ] loop
    execute format('revoke execute on function %s from public, anon, authenticated, service_role', f);
    execute format('grant execute on function %s to service_role', f);
  end loop;
end
$$;
