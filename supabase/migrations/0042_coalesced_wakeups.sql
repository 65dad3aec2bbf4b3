-- Wake-ups only for workers that wait for one, once per wake-up.
--
-- Why: 0027 sent a NOTIFY from every request's transaction. PostgreSQL serialises the
-- commits of notifying transactions on one lock, and measured at 32 clients that cost
-- the request path a sixth of its rate (0.49x a bare INSERT with the NOTIFY, 0.59x
-- without; docs/performance.md). A worker now arms itself when it is about to claim
-- with free slots and listens (`arm_video_job_wakeups`, a row in
-- `video_job_wakeup_listeners` valid for a minute, renewed while idle). A job that
-- becomes claimable now disarms every armed worker and sends one NOTIFY; the jobs after
-- it, until a worker claims and arms again, send none: that worker's next claim takes
-- them. When no worker is armed (every worker busy, or none listens) a request pays
-- one read of a table of a few rows, and no NOTIFY.
--
-- A job due later (a retry's backoff, a wait for a breaker) still announces its due time
-- to every listener, armed or not, so a worker sets a timer for it; those changes come
-- from workers, not from requests.
--
-- What is given up: a job whose trigger ran while the workers were disarmed by another
-- job, and which commits only after the woken worker's next claim has begun, waits for
-- the periodic claim (`VIDANIM_WORKER_IDLE_POLL_SECONDS`, default 1 s).
create table if not exists vidanim_private.video_job_wakeup_listeners (
  worker_id text primary key check (char_length(worker_id) between 1 and 255),
  armed boolean not null default true,
  armed_until timestamptz not null
);

comment on table vidanim_private.video_job_wakeup_listeners is
  'Workers that LISTEN on vidanim_jobs and wait for the next claimable job (armed), until armed_until.';

alter table vidanim_private.video_job_wakeup_listeners enable row level security;
revoke all on table vidanim_private.video_job_wakeup_listeners from public, anon, authenticated, service_role;

create or replace function vidanim_private.notify_video_job_due()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if new.status in ('queued', 'processing') and new.locked_by is null
     and (tg_op = 'INSERT'
          or old.locked_by is not null
          or old.status is distinct from new.status
          or old.next_attempt_at is distinct from new.next_attempt_at) then
    if new.next_attempt_at > now() then
      -- due later: every listener sets a timer (to the millisecond, rounded up: it never fires early)
      perform pg_notify(
        'vidanim_jobs', (ceil(extract(epoch from new.next_attempt_at) * 1000) / 1000)::numeric(16, 3)::text);
      return null;
    end if;
    -- due now: wake the armed workers, once. A listener another transaction is disarming
    -- right now is skipped, not waited for: that transaction's NOTIFY wakes it.
    update vidanim_private.video_job_wakeup_listeners l
       set armed = false
     where l.worker_id in (select x.worker_id from vidanim_private.video_job_wakeup_listeners x
                            where x.armed and x.armed_until > now()
                              for update skip locked);
    if found then
      perform pg_notify(
        'vidanim_jobs', (ceil(extract(epoch from new.next_attempt_at) * 1000) / 1000)::numeric(16, 3)::text);
    end if;
  end if;
  return null;
end
$$;

comment on function vidanim_private.notify_video_job_due() is
  'Trigger: NOTIFY vidanim_jobs when a job becomes claimable: at once for armed workers (disarming them), or its due time.';

revoke execute on function vidanim_private.notify_video_job_due() from public;

-- Service role: this worker listens and will claim on the next NOTIFY (for p_seconds at most).
create or replace function public.arm_video_job_wakeups(p_worker_id text, p_seconds integer default 60)
returns void
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform vidanim_private.check_worker_args(p_worker_id, p_seconds);
  insert into vidanim_private.video_job_wakeup_listeners as l (worker_id, armed, armed_until)
  values (p_worker_id, true, now() + make_interval(secs => p_seconds))
  on conflict (worker_id) do update set armed = true, armed_until = excluded.armed_until;
end
$$;

comment on function public.arm_video_job_wakeups(text, integer) is
  'Service role only: the worker listens on vidanim_jobs and waits to be woken by the next claimable job.';

-- Service role: this worker no longer listens (it stops).
create or replace function public.disarm_video_job_wakeups(p_worker_id text)
returns void
language plpgsql
security definer
set search_path = ''
as $$
begin
  delete from vidanim_private.video_job_wakeup_listeners l where l.worker_id = p_worker_id;
end
$$;

comment on function public.disarm_video_job_wakeups(text) is
  'Service role only: the worker stopped listening on vidanim_jobs.';

do $$
declare
  f text;
begin
  foreach f in array array[
    'public.arm_video_job_wakeups(text, integer)',
    'public.disarm_video_job_wakeups(text)'
  ] loop
    execute format('revoke execute on function %s from public, anon, authenticated, service_role', f);
    execute format('grant execute on function %s to service_role', f);
  end loop;
end
$$;
