-- The job state machine, enforced by a trigger for every writer.
--
-- Why: a status check inside one function protects only that function. A trigger
-- refuses an illegal change whoever runs the UPDATE: a service function with a bug,
-- an operator in the SQL editor, a future migration.
--
--   queued ──► processing ──► completed
--     │  ▲          │
--     │  └─(retry)──┤
--     ├─────────────┴──► failed
--     └─────────────┴──► canceled
--
-- Rules:
-- * completed, failed and canceled are terminal: afterwards only the worker lease
--   columns may still change (a worker letting go of the row).
-- * a job may stay queued or processing while other columns move on (a raw provider
--   status change is recorded, not refused);
-- * while processing, the provider task is fixed: a second task can never replace
--   the first (a worker that lost its lease must not make us pay twice);
-- * the request itself (owner, image, prompt, options, charged day, ...) never
--   changes: every column not listed as mutable below is immutable.
-- Violations raise SQLSTATE PT409 (HTTP 409 through PostgREST).
create or replace function vidanim_private.enforce_video_job_transition()
returns trigger
language plpgsql
set search_path = ''
as $$
declare
  -- Columns a live job may change; every other column is fixed at creation.
  mutable_live constant text[] := array[
    'status', 'provider', 'provider_task_id', 'provider_status', 'output_video_path',
    'error_code', 'error_message', 'attempts', 'next_attempt_at', 'locked_by',
    'locked_until', 'updated_at', 'started_at', 'completed_at'];
  -- Columns an ended job may still change.
  mutable_ended constant text[] := array['locked_by', 'locked_until', 'updated_at'];
begin
  if old.status in ('completed', 'failed', 'canceled') then
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

comment on function vidanim_private.enforce_video_job_transition() is
  'Trigger: refuses illegal video job status changes and changes to the request, for every writer.';

revoke execute on function vidanim_private.enforce_video_job_transition() from public;

drop trigger if exists video_jobs_enforce_transition on public.video_jobs;
create trigger video_jobs_enforce_transition
  before update on public.video_jobs
  for each row execute function vidanim_private.enforce_video_job_transition();
