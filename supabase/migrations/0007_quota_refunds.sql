-- Quota refunds, given once, by trigger.
--
-- Why: a user pays one unit of quota when a job is created. When the job ends
-- `failed`, or `canceled` before it was ever sent to a provider, the unit goes back
-- to the day it was charged. Doing this in a trigger on the status change makes the
-- refund happen whoever ends the job, and exactly once: an ended job cannot change
-- again (0006), and `quota_refunded_at` records that the refund happened.
-- BEFORE triggers fire in name order, so this runs after the state machine check.
create or replace function vidanim_private.refund_video_job_quota()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if new.quota_refunded_at is null
     and old.status in ('queued', 'processing')
     and (new.status = 'failed'
          or (new.status = 'canceled' and old.status = 'queued' and old.started_at is null)) then
    update public.video_quota_usage
       set used = used - 1
     where user_id = old.user_id
       and day = old.quota_day
       and used > 0;
    new.quota_refunded_at := now();
  end if;
  return new;
end
$$;

comment on function vidanim_private.refund_video_job_quota() is
  'Trigger: gives a job''s quota unit back to the day it was charged, once, when it fails or is canceled unsent.';

revoke execute on function vidanim_private.refund_video_job_quota() from public;

drop trigger if exists video_jobs_refund_quota on public.video_jobs;
create trigger video_jobs_refund_quota
  before update of status on public.video_jobs
  for each row
  when (new.status is distinct from old.status)
  execute function vidanim_private.refund_video_job_quota();
