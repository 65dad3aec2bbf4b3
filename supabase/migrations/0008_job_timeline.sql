-- The job timeline, written by trigger.
--
-- Why: every creation, status change and raw provider status change lands in
-- video_job_events in commit order, whoever made it, so the timeline a user sees is
-- the job's real history. Application code never writes events.
create or replace function vidanim_private.record_video_job_event()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  insert into public.video_job_events (job_id, user_id, status, provider, provider_status, error_code)
  values (new.id, new.user_id, new.status, new.provider, new.provider_status, new.error_code);
  return null;
end
$$;

comment on function vidanim_private.record_video_job_event() is
  'Trigger: appends a row to video_job_events when a job is created or its status or provider status changes.';

revoke execute on function vidanim_private.record_video_job_event() from public;

drop trigger if exists video_jobs_record_created on public.video_jobs;
create trigger video_jobs_record_created
  after insert on public.video_jobs
  for each row execute function vidanim_private.record_video_job_event();

drop trigger if exists video_jobs_record_changed on public.video_jobs;
create trigger video_jobs_record_changed
  after update on public.video_jobs
  for each row
  when (new.status is distinct from old.status
        or new.provider_status is distinct from old.provider_status)
  execute function vidanim_private.record_video_job_event();
