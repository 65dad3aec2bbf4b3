-- A job's progress and queue place belong to the provider status they were read with.
--
-- Why: the worker records a new provider status and the progress read with it in two
-- calls, and between them a watcher (the client, `animate --wait`, Supabase Realtime)
-- saw the old status without its place, or the new status with the old place. Now a
-- change of provider status that does not set progress or queue position itself
-- clears them: the worker records the status first and the progress second, so a
-- watcher sees only pairs that belong together.
create or replace function vidanim_private.clear_stale_video_job_progress()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if new.provider_status is distinct from old.provider_status
     and new.progress is not distinct from old.progress
     and new.queue_position is not distinct from old.queue_position then
    new.progress := null;
    new.queue_position := null;
  end if;
  return new;
end
$$;

comment on function vidanim_private.clear_stale_video_job_progress() is
  'Trigger: a provider-status change that does not set progress or queue position clears them.';

revoke execute on function vidanim_private.clear_stale_video_job_progress() from public;

drop trigger if exists video_jobs_clear_stale_progress on public.video_jobs;
create trigger video_jobs_clear_stale_progress
  before update of provider_status on public.video_jobs
  for each row
  execute function vidanim_private.clear_stale_video_job_progress();
