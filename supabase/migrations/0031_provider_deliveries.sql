-- fal's webhook deliveries: recorded once, handed to the job's worker, or adopted.
--
-- Why: fal POSTs a signed result to the URL a submission names (ours carries the job
-- id) when the request finishes. The endpoint verifies the signature, then records
-- the delivery here in one call, and answers 2xx only after that commit: a delivery
-- is never acknowledged and lost. Deliveries arrive at least once and in any order,
-- so the call decides what each one means, under the job's row lock:
--
--   recorded     the job holds this request and is still running: NOTIFY
--                vidanim_deliveries with the job id wakes the worker that holds it,
--                which completes the job from the recorded result (its lease, its
--                exactly-once upload); a worker resuming the job reads it here too
--   duplicate    this request was delivered before: counted, nothing else
--   ended        the job holds this request but already ended (completed, failed,
--                canceled): nothing to do
--   adopted      the job is queued and holds no task, and either waits after a
--                submission whose answer was lost (0030) or the delivery carries a
--                finished video (it can only come from a submission for this job:
--                the URL names it, and the answer may still be on its way): the
--                request is its task now, and the job is due
--   orphan       the job holds another task (or none, and is not waiting for one):
--                the worker cancels this request at the provider
--   unknown_job  no such job (deleted): nothing recorded
--
-- Fetching, storing and completing stay in the worker.
create table if not exists vidanim_private.video_provider_deliveries (
  provider text not null check (provider in ('fal', 'runway')),
  request_id text not null check (char_length(request_id) between 1 and 255),
  job_id uuid not null references public.video_jobs (id) on delete cascade,
  status text not null check (status in ('OK', 'ERROR')),
  body jsonb not null,
  outcome text not null check (outcome in ('recorded', 'ended', 'adopted', 'orphan')),
  deliveries integer not null default 1,
  first_received_at timestamptz not null default now(),
  last_received_at timestamptz not null default now(),
  primary key (provider, request_id)
);

comment on table vidanim_private.video_provider_deliveries is
  'Verified webhook deliveries, one row per provider request; written by record_video_provider_delivery only.';

create index if not exists video_provider_deliveries_job_idx
  on vidanim_private.video_provider_deliveries (job_id);

alter table vidanim_private.video_provider_deliveries enable row level security;
revoke all on table vidanim_private.video_provider_deliveries from public, anon, authenticated, service_role;

-- Service role: the webhook endpoint records a verified delivery; returns its outcome.
create or replace function public.record_video_provider_delivery(
  p_job_id uuid,
  p_provider text,
  p_request_id text,
  p_status text,
  p_body jsonb
)
returns text
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_job public.video_jobs;
  v_outcome text;
begin
  if p_job_id is null then
    raise exception 'p_job_id is required' using errcode = '22023';
  end if;
  perform vidanim_private.check_provider(p_provider);
  if p_request_id is null or char_length(p_request_id) not between 1 and 255 then
    raise exception 'the request id must be 1-255 characters' using errcode = '22023';
  end if;
  if p_status is null or p_status not in ('OK', 'ERROR') then
    raise exception 'a delivery''s status is OK or ERROR' using errcode = '22023';
  end if;
  if p_body is null or jsonb_typeof(p_body) <> 'object' then
    raise exception 'a delivery''s body is a JSON object' using errcode = '22023';
  end if;
  -- the job's lock orders every delivery for it against its worker's own changes
  select * into v_job from public.video_jobs where id = p_job_id for update;
  if not found then
    return 'unknown_job';
  end if;
  if v_job.provider = p_provider and v_job.provider_task_id = p_request_id then
    v_outcome := case when v_job.status in ('completed', 'failed', 'canceled') then 'ended' else 'recorded' end;
  elsif v_job.status = 'queued' and v_job.provider_task_id is null
        and ((v_job.provider = p_provider and v_job.provider_status = 'submission_uncertain') or p_status = 'OK') then
    v_outcome := 'adopted';
  else
    v_outcome := 'orphan';
  end if;
  insert into vidanim_private.video_provider_deliveries (provider, request_id, job_id, status, body, outcome)
  values (p_provider, p_request_id, p_job_id, p_status, p_body, v_outcome)
  on conflict (provider, request_id) do nothing;
  if not found then
    update vidanim_private.video_provider_deliveries d
       set deliveries = d.deliveries + 1, last_received_at = now()
     where d.provider = p_provider and d.request_id = p_request_id;
    return 'duplicate';
  end if;
  if v_outcome = 'recorded' then
    perform pg_notify('vidanim_deliveries', p_job_id::text);
  elsif v_outcome = 'adopted' then
    -- A worker submitting again meanwhile loses its lease here, and cancels its own task.
    update public.video_jobs j
       set status = 'processing',
           provider = p_provider,
           provider_task_id = p_request_id,
           provider_status = 'ADOPTED',
           started_at = coalesce(j.started_at, now()),
           next_attempt_at = now(),
           locked_by = null,
           locked_until = null
     where j.id = p_job_id;
  end if;
  return v_outcome;
end
$$;

comment on function public.record_video_provider_delivery(uuid, text, text, text, jsonb) is
  'Service role only: record a verified webhook delivery for a job; returns recorded, duplicate, ended, adopted, orphan or unknown_job.';

revoke execute on function public.record_video_provider_delivery(uuid, text, text, text, jsonb)
  from public, anon, authenticated, service_role;
grant execute on function public.record_video_provider_delivery(uuid, text, text, text, jsonb) to service_role;

-- Service role: the delivery of the task a job holds now, if one arrived.
create or replace function public.get_video_provider_delivery(p_job_id uuid)
returns table (provider text, request_id text, status text, body jsonb, received_at timestamptz)
language sql
stable
security definer
set search_path = ''
as $$
  select d.provider, d.request_id, d.status, d.body, d.first_received_at
    from public.video_jobs j
    join vidanim_private.video_provider_deliveries d
      on d.provider = j.provider and d.request_id = j.provider_task_id
   where j.id = p_job_id
$$;

comment on function public.get_video_provider_delivery(uuid) is
  'Service role only: the recorded webhook delivery for the provider task a job holds, if any.';

revoke execute on function public.get_video_provider_delivery(uuid) from public, anon, authenticated, service_role;
grant execute on function public.get_video_provider_delivery(uuid) to service_role;
