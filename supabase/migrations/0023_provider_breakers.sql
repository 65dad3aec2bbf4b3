-- Provider circuit breakers, shared by every worker: an operator's fault never fails a user's job.
--
-- Why: a wrong or revoked key, an account out of credits, a model that does not
-- exist, or an outage that outlasts the retries is the provider's or the operator's
-- fault, not the request's. Before this, each worker found out job by job and failed
-- every queued job ("The video providers refused this request"). Now the first
-- worker that meets such a fault opens that provider's breaker here, for every
-- worker at once; jobs fall back to a healthy provider or wait in `queued` (see
-- defer_video_job, 0022) without spending an attempt. When the breaker's open time
-- is up, one job at a time probes the provider (half-open); its success closes the
-- breaker and wakes the waiting jobs. Each answer says whether the state changed, so
-- the worker logs an operator alert once per state change, not once per job.
create table if not exists vidanim_private.video_provider_breakers (
  provider text primary key,
  state text not null default 'closed' check (state in ('closed', 'open', 'half_open')),
  -- credentials | credits | model | outage
  kind text check (kind ~ '^[a-z_]{1,32}$'),
  reason text check (char_length(reason) <= 500),
  opened_at timestamptz,
  open_until timestamptz,
  probe_job_id uuid,
  probe_until timestamptz,
  trips integer not null default 0,
  updated_at timestamptz not null default now()
);

comment on table vidanim_private.video_provider_breakers is
  'One circuit breaker per provider, shared by every worker: open means do not submit until open_until, then probe one job.';

alter table vidanim_private.video_provider_breakers enable row level security;
revoke all on table vidanim_private.video_provider_breakers from public, anon, authenticated, service_role;

-- Service role: every breaker's state.
create or replace function public.get_video_provider_breakers()
returns setof vidanim_private.video_provider_breakers
language sql
stable
security definer
set search_path = ''
as $$
  select * from vidanim_private.video_provider_breakers order by provider
$$;

comment on function public.get_video_provider_breakers() is
  'Service role only: the circuit breaker of every provider that ever tripped.';

-- Service role: a worker met an operator's fault at p_provider; open (or keep open) its breaker.
create or replace function public.open_video_provider_breaker(
  p_provider text,
  p_kind text,
  p_reason text,
  p_open_seconds double precision
)
returns table (previous_state text, state text, open_until timestamptz)
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_before text;
  v_row vidanim_private.video_provider_breakers;
begin
  if p_provider is null or p_provider !~ '^[a-z_]{1,32}$' then
    raise exception 'provider must be 1-32 characters of a-z and "_"' using errcode = '22023';
  end if;
  if p_kind is null or p_kind !~ '^[a-z_]{1,32}$' then
    raise exception 'kind must be 1-32 characters of a-z and "_"' using errcode = '22023';
  end if;
  if p_open_seconds is null or p_open_seconds < 0 or p_open_seconds > 86400 then
    raise exception 'open time must be between 0 and 86400 seconds' using errcode = '22023';
  end if;
  insert into vidanim_private.video_provider_breakers as b (provider)
  values (p_provider)
  on conflict (provider) do nothing;
  select b.state into v_before from vidanim_private.video_provider_breakers b where b.provider = p_provider for update;
  update vidanim_private.video_provider_breakers b
     set state = 'open',
         kind = p_kind,
         reason = left(p_reason, 500),
         opened_at = case when v_before = 'open' then b.opened_at else now() end,
         open_until = greatest(coalesce(b.open_until, now()), now() + make_interval(secs => p_open_seconds)),
         probe_job_id = null,
         probe_until = null,
         trips = b.trips + case when v_before = 'open' then 0 else 1 end,
         updated_at = now()
   where b.provider = p_provider
  returning b.* into v_row;
  return query select coalesce(v_before, 'closed'), v_row.state, v_row.open_until;
end
$$;

comment on function public.open_video_provider_breaker(text, text, text, double precision) is
  'Service role only: opens a provider''s breaker for p_open_seconds (or keeps it open); previous_state says what it was.';

-- Service role: may this job probe a provider whose breaker is open and due? One job at a time.
create or replace function public.begin_video_provider_probe(
  p_provider text,
  p_job_id uuid,
  p_probe_seconds double precision
)
returns boolean
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_taken integer;
begin
  if p_probe_seconds is null or p_probe_seconds <= 0 or p_probe_seconds > 86400 then
    raise exception 'probe time must be between 0 and 86400 seconds' using errcode = '22023';
  end if;
  update vidanim_private.video_provider_breakers b
     set state = 'half_open',
         probe_job_id = p_job_id,
         probe_until = now() + make_interval(secs => p_probe_seconds),
         updated_at = now()
   where b.provider = p_provider
     and ((b.state = 'open' and b.open_until <= now())
          -- a probe whose worker died or gave up frees the slot when its time is up
          or (b.state = 'half_open' and (b.probe_until <= now() or b.probe_job_id = p_job_id)));
  get diagnostics v_taken = row_count;
  return v_taken = 1;
end
$$;

comment on function public.begin_video_provider_probe(text, uuid, double precision) is
  'Service role only: true when this job may probe a provider whose breaker is open and due (one probe at a time).';

-- Service role: the provider works again; close its breaker and wake the jobs that waited for it.
create or replace function public.close_video_provider_breaker(p_provider text)
returns boolean
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_closed integer;
begin
  update vidanim_private.video_provider_breakers b
     set state = 'closed', kind = null, reason = null, open_until = null,
         probe_job_id = null, probe_until = null, updated_at = now()
   where b.provider = p_provider and b.state <> 'closed';
  get diagnostics v_closed = row_count;
  if v_closed = 1 then
    update public.video_jobs j
       set next_attempt_at = now()
     where j.status = 'queued' and j.waiting_reason = 'providers_unavailable' and j.next_attempt_at > now();
  end if;
  return v_closed = 1;
end
$$;

comment on function public.close_video_provider_breaker(text) is
  'Service role only: closes a provider''s breaker (true when it was not closed) and makes jobs waiting for providers due now.';

-- Service role: a worker that starts may have new credentials: breakers opened for
-- credentials, credits or a model become due for a probe at once.
create or replace function public.recheck_video_provider_breakers()
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_count integer;
begin
  update vidanim_private.video_provider_breakers b
     set open_until = now(), updated_at = now()
   where b.state = 'open' and b.kind in ('credentials', 'credits', 'model') and b.open_until > now();
  get diagnostics v_count = row_count;
  if v_count > 0 then
    update public.video_jobs j
       set next_attempt_at = now()
     where j.status = 'queued' and j.waiting_reason = 'providers_unavailable' and j.next_attempt_at > now();
  end if;
  return v_count;
end
$$;

comment on function public.recheck_video_provider_breakers() is
  'Service role only: at worker start, breakers opened for credentials, credits or a model are probed again at once.';

do $$
declare
  f text;
begin
  foreach f in array array[
    'public.get_video_provider_breakers()',
    'public.open_video_provider_breaker(text, text, text, double precision)',
    'public.begin_video_provider_probe(text, uuid, double precision)',
    'public.close_video_provider_breaker(text)',
    'public.recheck_video_provider_breakers()'
  ] loop
    execute format('revoke execute on function %s from public, anon, authenticated, service_role', f);
    execute format('grant execute on function %s to service_role', f);
  end loop;
end
$$;
