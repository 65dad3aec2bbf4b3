-- Progress a user can watch: how far along the provider is, or the place in its queue.
--
-- Why: a video takes minutes; "processing" says nothing of how long is left. Runway
-- reports `progress` (0-1) while a task runs and fal a `queue_position` while it
-- waits. The worker writes them here as `progress` (0-100, null when unknown) and
-- `queue_position`, only when they change and at most once a second per job, so the
-- client, `vidanim jobs show` and Supabase Realtime subscribers see them move. They
-- are not status changes: the timeline does not grow with them.
alter table public.video_jobs
  add column if not exists progress integer check (progress between 0 and 100),
  add column if not exists queue_position integer check (queue_position >= 0);

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
    'estimated_cost_usd', 'submitting_to', 'progress', 'queue_position']
$$;

-- Service role: the worker that holds the job records what the provider says of it.
create or replace function public.service_update_video_job_progress(
  p_job_id uuid,
  p_worker_id text,
  p_progress integer,
  p_queue_position integer
)
returns boolean
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_changed integer;
begin
  perform vidanim_private.check_worker_args(p_worker_id, 1);
  if p_progress is not null and p_progress not between 0 and 100 then
    raise exception 'progress must be between 0 and 100' using errcode = '22023';
  end if;
  if p_queue_position is not null and p_queue_position < 0 then
    raise exception 'queue position must not be negative' using errcode = '22023';
  end if;
  update public.video_jobs j
     set progress = p_progress, queue_position = p_queue_position
   where j.id = p_job_id and j.locked_by = p_worker_id and j.locked_until > now()
     and j.status = 'processing'
     and (j.progress is distinct from p_progress or j.queue_position is distinct from p_queue_position);
  get diagnostics v_changed = row_count;
  return v_changed = 1;
end
$$;

comment on function public.service_update_video_job_progress(uuid, text, integer, integer) is
  'Service role only: a processing job''s progress (0-100) and queue position, written only when they change.';

revoke execute on function public.service_update_video_job_progress(uuid, text, integer, integer)
  from public, anon, authenticated, service_role;
grant execute on function public.service_update_video_job_progress(uuid, text, integer, integer) to service_role;
