-- Video animation hardening (the background and its ten limitations: docs/hardening.md).
--
-- Why: the summary's migration added duplicate prevention by client_request_id and
-- checked the updated_at trigger, but it listed known limitations. This migration
-- carries that SQL and fixes limitation 9 instead of listing it: clients can no
-- longer change a job at all (no UPDATE policy, no write grants), and the only way a
-- status changes is service_update_video_job_status(), executable by service_role
-- alone and checked again by the state machine trigger (0006).

-- Duplicate prevention: a client-chosen id, unique per user.
alter table public.video_jobs
  add column if not exists client_request_id text;

do $$
begin
  if not exists (
    select 1 from pg_constraint
     where conname = 'video_jobs_client_request_id_format'
       and conrelid = 'public.video_jobs'::regclass
  ) then
    alter table public.video_jobs
      add constraint video_jobs_client_request_id_format
      check (client_request_id ~ '^[A-Za-z0-9._:-]{1,255}$');
  end if;
end
$$;

create unique index if not exists idx_video_jobs_client_request_id
  on public.video_jobs (user_id, client_request_id)
  where client_request_id is not null;

-- The updated_at trigger must exist. The summary looked the trigger name up in all
-- of pg_trigger; a trigger of that name on another table would have fooled it, so
-- look on video_jobs itself.
do $$
begin
  if not exists (
    select 1 from pg_trigger
     where tgname = 'update_video_jobs_updated_at'
       and tgrelid = 'public.video_jobs'::regclass
       and not tgisinternal
  ) then
    create trigger update_video_jobs_updated_at
      before update on public.video_jobs
      for each row execute function public.update_updated_at_column();
  end if;
end
$$;

-- Limitation 9: the old "Users can update their own video jobs" policy let a client
-- rewrite its own job's status. Drop it and any client write policy a project may
-- carry, and take back write grants from the API roles (legacy projects gave them).
drop policy if exists "Users can update their own video jobs" on public.video_jobs;
drop policy if exists "Users can insert their own video jobs" on public.video_jobs;
drop policy if exists "Users can delete their own video jobs" on public.video_jobs;
revoke insert, update, delete, truncate, references, trigger
  on table public.video_jobs from public, anon, authenticated, service_role;

-- The only way a job's status changes.
create or replace function public.service_update_video_job_status(
  p_job_id uuid,
  p_status text,
  p_provider text default null,
  p_provider_task_id text default null,
  p_provider_status text default null,
  p_output_video_path text default null,
  p_error_code text default null,
  p_error_message text default null,
  p_worker_id text default null
)
returns public.video_jobs
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_job public.video_jobs;
  v_output text;
begin
  if p_job_id is null then
    raise exception 'p_job_id is required' using errcode = '22023';
  end if;
  if p_status is null or p_status not in ('queued', 'processing', 'completed', 'failed', 'canceled') then
    raise exception 'unknown job status %', coalesce(quote_literal(p_status), 'null')
      using errcode = '22023',
            hint = 'One of queued, processing, completed, failed, canceled.';
  end if;
  if p_provider is not null and p_provider not in ('fal', 'runway') then
    raise exception 'unknown provider %', quote_literal(p_provider) using errcode = '22023';
  end if;
  if char_length(p_provider_task_id) > 255 or p_provider_task_id = '' then
    raise exception 'p_provider_task_id must be 1-255 characters' using errcode = '22023';
  end if;
  if char_length(p_provider_status) > 255 then
    raise exception 'p_provider_status is longer than 255 characters' using errcode = '22023';
  end if;
  if char_length(p_error_code) > 255 then
    raise exception 'p_error_code is longer than 255 characters' using errcode = '22023';
  end if;

  select * into v_job from public.video_jobs where id = p_job_id for update;
  if not found then
    raise exception 'video job % not found', p_job_id using errcode = 'PT404';
  end if;

  -- Repeating the final status (a worker retrying after a lost reply) is a no-op.
  if v_job.status = p_status and p_status in ('completed', 'failed', 'canceled') then
    return v_job;
  end if;

  if p_worker_id is not null
     and (v_job.locked_by is distinct from p_worker_id
          or v_job.locked_until is null
          or v_job.locked_until <= now()) then
    raise exception 'worker % does not hold the lease on video job %', p_worker_id, p_job_id
      using errcode = 'PT409',
            hint = 'Another worker owns the job now; cancel any provider task this worker started for it.';
  end if;

  if p_status = 'processing' and coalesce(p_provider_task_id, v_job.provider_task_id) is null then
    raise exception 'status processing requires a provider task id' using errcode = '22023';
  end if;
  if p_status = 'processing' and coalesce(p_provider, v_job.provider) is null then
    raise exception 'status processing requires a provider' using errcode = '22023';
  end if;

  if p_status = 'completed' then
    v_output := v_job.user_id::text || '/' || v_job.id::text || '.mp4';
    if coalesce(p_output_video_path, v_job.output_video_path) is distinct from v_output then
      raise exception 'output_video_path must be %', quote_literal(v_output) using errcode = '22023';
    end if;
    if not exists (
      select 1 from storage.objects o
       where o.bucket_id = 'video-outputs' and o.name = v_output
    ) then
      raise exception 'output object video-outputs/% does not exist', v_output
        using errcode = 'PT404',
              hint = 'Upload the video before marking the job completed.';
    end if;
  elsif p_output_video_path is not null then
    raise exception 'output_video_path is only recorded with status completed' using errcode = '22023';
  end if;

  update public.video_jobs j
     set status = p_status,
         provider = coalesce(p_provider, j.provider),
         provider_task_id = coalesce(p_provider_task_id, j.provider_task_id),
         provider_status = coalesce(p_provider_status, j.provider_status),
         output_video_path = case when p_status = 'completed' then v_output else j.output_video_path end,
         error_code = case when p_status = 'completed' then null else coalesce(p_error_code, j.error_code) end,
         error_message = case when p_status = 'completed' then null
                              else coalesce(left(p_error_message, 2000), j.error_message) end,
         started_at = case when p_status = 'processing' then coalesce(j.started_at, now()) else j.started_at end,
         completed_at = case when p_status in ('completed', 'failed', 'canceled') then now() else j.completed_at end,
         next_attempt_at = case when p_status = 'queued' and j.status <> 'queued' then now() else j.next_attempt_at end,
         locked_by = case when p_status in ('completed', 'failed', 'canceled') then null else j.locked_by end,
         locked_until = case when p_status in ('completed', 'failed', 'canceled') then null else j.locked_until end
   where j.id = p_job_id
  returning j.* into v_job;

  return v_job;
end
$$;

comment on function public.service_update_video_job_status(uuid, text, text, text, text, text, text, text, text) is
  'Service role only: the one way a video job''s status changes. With p_worker_id, only while that worker holds the lease (else PT409).';

revoke execute on function public.service_update_video_job_status(uuid, text, text, text, text, text, text, text, text)
  from public, anon, authenticated, service_role;
grant execute on function public.service_update_video_job_status(uuid, text, text, text, text, text, text, text, text)
  to service_role;
