-- Submissions can be paused, for every provider or one, without stopping a worker.
--
-- Why: an operator who sees a provider misbehave, a bill rising or a migration coming
-- needs new submissions to stop now, and nothing else to change: jobs already running
-- keep being polled and stored, queued jobs stay queued. A paused job waits (its
-- `waiting_reason` is `submissions_paused`, no attempt spent), never fails. The worker
-- reads the pauses before it submits (pipeline `_submit`); acquiring a provider slot,
-- the last step before a paid call, refuses a paused provider too, so a worker that
-- has not looked yet cannot submit either. Resuming wakes the jobs that waited.
-- A row with scope 'all' pauses every provider; a row per provider pauses that one.
create table if not exists vidanim_private.video_submission_pauses (
  scope text primary key check (scope in ('all', 'fal', 'runway')),
  paused_by text not null check (char_length(paused_by) between 1 and 200),
  reason text check (char_length(reason) <= 500),
  paused_at timestamptz not null default now()
);

comment on table vidanim_private.video_submission_pauses is
  'Paused submissions: scope all (every provider) or one provider; queued jobs wait while paused.';

alter table vidanim_private.video_submission_pauses enable row level security;
revoke all on table vidanim_private.video_submission_pauses from public, anon, authenticated, service_role;

create or replace function vidanim_private.video_submissions_paused(p_provider text)
returns boolean
language sql
stable
set search_path = ''
as $$
  select exists (
    select 1 from vidanim_private.video_submission_pauses p where p.scope in ('all', p_provider))
$$;

revoke execute on function vidanim_private.video_submissions_paused(text) from public;

-- Service role: what is paused now.
create or replace function public.get_video_submission_pauses()
returns setof vidanim_private.video_submission_pauses
language sql
stable
security definer
set search_path = ''
as $$
  select * from vidanim_private.video_submission_pauses order by scope
$$;

comment on function public.get_video_submission_pauses() is
  'Service role only: the paused scopes (all, or a provider), who paused them and when.';

-- Service role (operators): pause submissions to p_provider, or to every provider when null.
create or replace function public.pause_video_submissions(p_provider text, p_actor text, p_reason text default null)
returns boolean
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_scope text := coalesce(p_provider, 'all');
  v_added integer;
begin
  perform vidanim_private.check_operator_actor(p_actor);
  if p_provider is not null then
    perform vidanim_private.check_provider(p_provider);
  end if;
  insert into vidanim_private.video_submission_pauses (scope, paused_by, reason)
  values (v_scope, p_actor, left(p_reason, 500))
  on conflict (scope) do nothing;
  get diagnostics v_added = row_count;
  perform vidanim_private.record_operator_action(
    p_actor, 'pause_submissions', jsonb_build_object('scope', v_scope, 'reason', p_reason), 0);
  return v_added = 1;
end
$$;

comment on function public.pause_video_submissions(text, text, text) is
  'Service role only: no new submission to p_provider (null: any provider) until resumed; true when newly paused.';

-- Service role (operators): resume; the jobs that waited for this pause are due at once.
create or replace function public.resume_video_submissions(p_provider text, p_actor text)
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_scope text := coalesce(p_provider, 'all');
  v_woken integer := 0;
begin
  perform vidanim_private.check_operator_actor(p_actor);
  if p_provider is not null then
    perform vidanim_private.check_provider(p_provider);
  end if;
  delete from vidanim_private.video_submission_pauses p where p.scope = v_scope;
  if found then
    update public.video_jobs j
       set next_attempt_at = now()
     where j.status = 'queued' and j.waiting_reason = 'submissions_paused' and j.next_attempt_at > now();
    get diagnostics v_woken = row_count;
  end if;
  perform vidanim_private.record_operator_action(
    p_actor, 'resume_submissions', jsonb_build_object('scope', v_scope), v_woken);
  return v_woken;
end
$$;

comment on function public.resume_video_submissions(text, text) is
  'Service role only: lifts a pause (null: the all-providers one); returns how many waiting jobs were woken.';

-- The slot (0026, 0036), now also refused while the provider's submissions are paused.
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
  if vidanim_private.video_submissions_paused(p_provider) then
    return false;
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

do $$
declare
  f text;
begin
  foreach f in array array[
    'public.get_video_submission_pauses()',
    'public.pause_video_submissions(text, text, text)',
    'public.resume_video_submissions(text, text)',
    'public.acquire_video_provider_slot(uuid, text, text)'
  ] loop
    execute format('revoke execute on function %s from public, anon, authenticated, service_role', f);
    execute format('grant execute on function %s to service_role', f);
  end loop;
end
$$;
