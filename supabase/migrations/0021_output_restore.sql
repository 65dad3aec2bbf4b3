-- Output restore: a job whose video could not be deleted says so again.
--
-- Why: storage cleanup marks a job expired before deleting its video (0018), so no
-- job ever points at a missing object. But a deletion can fail, and the Storage
-- server even answers `200 []` when it deleted nothing (a key whose RLS hides the
-- object). Then the job would claim its video is gone while the video is still
-- stored and readable. `restore_video_output` gives such a job its output back;
-- cleanup calls it for every object it could not show to be gone. The state machine
-- allows exactly this reverse step: a completed, expired job may take back its own
-- `{user_id}/{job_id}.mp4`, and nothing else changes.

-- The state machine (0006, 0018), with the restore step.
create or replace function vidanim_private.enforce_video_job_transition()
returns trigger
language plpgsql
set search_path = ''
as $$
declare
  mutable_live constant text[] := array[
    'status', 'provider', 'provider_task_id', 'provider_status', 'output_video_path',
    'error_code', 'error_message', 'attempts', 'next_attempt_at', 'locked_by',
    'locked_until', 'updated_at', 'started_at', 'completed_at'];
  mutable_ended constant text[] := array['locked_by', 'locked_until', 'updated_at'];
  expiring constant text[] := array['locked_by', 'locked_until', 'updated_at', 'output_video_path', 'output_expired_at'];
begin
  if old.status in ('completed', 'failed', 'canceled') then
    if old.status = 'completed' and old.output_expired_at is null and new.output_expired_at is not null
       and new.output_video_path is null
       and (to_jsonb(new) - expiring) is not distinct from (to_jsonb(old) - expiring) then
      return new;
    end if;
    -- ... and take it back, when its deletion did not happen (restore_video_output).
    if old.status = 'completed' and old.output_expired_at is not null and new.output_expired_at is null
       and new.output_video_path = old.user_id::text || '/' || old.id::text || '.mp4'
       and (to_jsonb(new) - expiring) is not distinct from (to_jsonb(old) - expiring) then
      return new;
    end if;
    if (to_jsonb(new) - mutable_ended) is distinct from (to_jsonb(old) - mutable_ended) then
      raise exception 'video job % has already ended (%)', old.id, old.status
        using errcode = 'PT409',
              hint = 'A completed, failed or canceled job cannot change; create a new job instead.';
    end if;
    return new;
  end if;

  if (to_jsonb(new) - mutable_live) is distinct from (to_jsonb(old) - mutable_live) then
    raise exception 'video job %: the request (owner, image, prompt, options, quota day) cannot change', old.id
      using errcode = 'PT409';
  end if;

  if new.status is distinct from old.status and not (
       (old.status = 'queued' and new.status in ('processing', 'failed', 'canceled'))
    or (old.status = 'processing' and new.status in ('queued', 'completed', 'failed', 'canceled'))
  ) then
    raise exception 'video job %: illegal status change % -> %', old.id, old.status, new.status
      using errcode = 'PT409';
  end if;

  if old.status = 'processing' and new.status = 'processing'
     and (new.provider_task_id is distinct from old.provider_task_id
          or new.provider is distinct from old.provider) then
    raise exception 'video job % already runs as % task %', old.id, old.provider, old.provider_task_id
      using errcode = 'PT409',
            hint = 'Cancel the new provider task; the job keeps the one it was given.';
  end if;

  return new;
end
$$;

-- Service role: give an expired job its output path back (its video was not deleted).
create or replace function public.restore_video_output(p_job_id uuid)
returns public.video_jobs
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_job public.video_jobs;
begin
  if p_job_id is null then
    raise exception 'p_job_id is required' using errcode = '22023';
  end if;
  update public.video_jobs j
     set output_video_path = j.user_id::text || '/' || j.id::text || '.mp4',
         output_expired_at = null
   where j.id = p_job_id and j.status = 'completed' and j.output_expired_at is not null
  returning j.* into v_job;
  if v_job.id is null then
    raise exception 'video job % is not a completed job whose output expired', p_job_id using errcode = 'PT404';
  end if;
  return v_job;
end
$$;

comment on function public.restore_video_output(uuid) is
  'Service role only: an expired job whose video was not deleted gets its output path back.';

revoke execute on function public.restore_video_output(uuid) from public, anon, authenticated, service_role;
grant execute on function public.restore_video_output(uuid) to service_role;
