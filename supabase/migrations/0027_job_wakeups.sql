-- Instant wake-ups: a job that becomes claimable tells the idle workers at once.
--
-- Why: an idle worker looked for new jobs once a second, so every job waited up to a
-- second before anyone took it. Now a new job, a lease handed back, or a wait that
-- ends sends a NOTIFY on channel `vidanim_jobs` when its transaction commits; idle
-- workers LISTEN on one connection of their own and claim at once. The payload is
-- the time the job is due (epoch seconds, to the millisecond), so a job due later (a
-- retry after a backoff, a job waiting for a breaker) is met by a timer in the
-- worker instead of a poll.
-- The periodic claim stays as a safety net: a notification is lost when no worker
-- listens, and a transaction-mode pooler cannot LISTEN at all.
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
    -- to the millisecond, rounded up: a timer set from it never fires before the job is due
    -- (identical payloads in one transaction are delivered once)
    perform pg_notify(
      'vidanim_jobs', (ceil(extract(epoch from new.next_attempt_at) * 1000) / 1000)::numeric(16, 3)::text);
  end if;
  return null;
end
$$;

comment on function vidanim_private.notify_video_job_due() is
  'Trigger: NOTIFY vidanim_jobs with the epoch second a job becomes due, when it becomes claimable.';

revoke execute on function vidanim_private.notify_video_job_due() from public;

drop trigger if exists video_jobs_notify_due on public.video_jobs;
create trigger video_jobs_notify_due
  after insert or update of status, locked_by, next_attempt_at on public.video_jobs
  for each row
  execute function vidanim_private.notify_video_job_due();
