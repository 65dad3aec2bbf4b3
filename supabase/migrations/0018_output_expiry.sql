-- Output expiry: storage cleanup never leaves a job pointing at a missing video.
--
-- Why: old output videos cost storage (the hardening summary's limitation 3).
-- `vidanim storage cleanup` removes them, but a completed job must stay readable and
-- must never name an object that is gone. The job is first marked expired here (its
-- output path cleared, `output_expired_at` set), then the object is deleted; the
-- object name is always `{user_id}/{job_id}.mp4`, so a deletion that fails can be
-- redone later. An expired job stays `completed`: the video was delivered.
alter table public.video_jobs
  add column if not exists output_expired_at timestamptz;

-- The rule is replaced, not dropped: the new check allows strictly more (an expired output).
-- squawk-ignore ban-drop-constraint
alter table public.video_jobs drop constraint if exists video_jobs_completed_has_output;
-- NOT VALID would gain nothing: the ADD COLUMN above holds the table's lock until commit.
alter table public.video_jobs
  -- squawk-ignore constraint-missing-not-valid
  add constraint video_jobs_completed_has_output
  check (status <> 'completed' or output_video_path is not null or output_expired_at is not null);

-- The state machine (0006) lets an ended job change its lease only; a completed job
-- may also give up its output, once, and only that.
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

-- Service role: mark completed jobs older than a cutoff as expired and return them,
-- so the caller deletes each `{user_id}/{job_id}.mp4` afterwards.
create or replace function public.expire_video_outputs(p_older_than interval, p_limit integer default 1000)
returns setof public.video_jobs
language plpgsql
security definer
set search_path = ''
as $$
begin
  if p_older_than is null or p_older_than < interval '0' then
    raise exception 'p_older_than must be a non-negative interval' using errcode = '22023';
  end if;
  if p_limit is null or p_limit not between 1 and 100000 then
    raise exception 'p_limit must be between 1 and 100000' using errcode = '22023';
  end if;
  return query
  with old as (
    select j.id from public.video_jobs j
     where j.status = 'completed' and j.output_expired_at is null
       and j.completed_at < now() - p_older_than
     order by j.completed_at
     limit p_limit
     for update skip locked
  )
  update public.video_jobs j
     set output_video_path = null, output_expired_at = now()
    from old
   where j.id = old.id
  returning j.*;
end
$$;

comment on function public.expire_video_outputs(interval, integer) is
  'Service role only: marks completed jobs older than p_older_than as expired (output path cleared) and returns them for deletion of their videos.';

revoke execute on function public.expire_video_outputs(interval, integer) from public, anon, authenticated, service_role;
grant execute on function public.expire_video_outputs(interval, integer) to service_role;
