-- Which webhook deliveries are trusted: per-submission URL tokens, and adoption only
-- of a submission whose answer was lost at that provider.
--
-- Why: a security review found that a delivery fal signed for ANOTHER fal account was
-- adopted by a queued job (fal signs every account's deliveries with one key), and
-- that the URL's token, an HMAC of the job id, was the same for every submission of a
-- job, never expired, and sat in request records that proxies and fal keep. So:
--
--   * each submission gets a random token of its own, issued by the worker that holds
--     the queued job right before it submits; only its SHA-256 is stored here, with an
--     expiry (the worker passes the job's deadline plus a margin, a setting). The
--     webhook route accepts a delivery only when the URL's token is an unexpired one
--     issued for that job (one primary-key lookup, before the body is read), and the
--     first verified delivery binds the token to its request: a leaked URL is worth
--     one task at most, and nothing after its expiry;
--   * a delivery is adopted only by a queued job without a task whose submission's
--     answer was lost AT THAT PROVIDER (0030: provider = it, provider_status =
--     'submission_uncertain'); an OK delivery for a job that never lost an answer is
--     an orphan (canceled at the provider, nothing adopted).
--
-- docs/worker.md ("Webhook trust") and docs/security.md ("fal's webhooks") give the policy.
create table if not exists vidanim_private.video_webhook_tokens (
  token_hash bytea primary key check (octet_length(token_hash) = 32),
  job_id uuid not null references public.video_jobs (id) on delete cascade,
  provider text not null check (provider in ('fal', 'runway')),
  -- the request of the first verified delivery that used the token; no other may use it
  request_id text check (char_length(request_id) between 1 and 255),
  issued_at timestamptz not null default now(),
  expires_at timestamptz not null
);

comment on table vidanim_private.video_webhook_tokens is
  'SHA-256 of each webhook URL token issued for a submission, its job, expiry and the one request it may report.';

create index if not exists video_webhook_tokens_job_idx on vidanim_private.video_webhook_tokens (job_id);

alter table vidanim_private.video_webhook_tokens enable row level security;
revoke all on table vidanim_private.video_webhook_tokens from public, anon, authenticated, service_role;

-- Service role: the worker holding the queued job issues the token of the submission it
-- is about to send (it keeps the token; only its hash is stored). Returns the expiry.
create or replace function public.issue_video_webhook_token(
  p_job_id uuid,
  p_worker_id text,
  p_provider text,
  p_token_hash bytea,
  p_ttl_seconds double precision
)
returns timestamptz
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_job public.video_jobs;
  v_expires timestamptz;
begin
  perform vidanim_private.check_worker_args(p_worker_id, 1);
  perform vidanim_private.check_provider(p_provider);
  if p_token_hash is null or octet_length(p_token_hash) <> 32 then
    raise exception 'the token hash must be 32 bytes (SHA-256)' using errcode = '22023';
  end if;
  if p_ttl_seconds is null or p_ttl_seconds <= 0 or p_ttl_seconds > 30 * 86400 then
    raise exception 'a token lives more than 0 and at most 2592000 seconds' using errcode = '22023';
  end if;
  select * into v_job from public.video_jobs where id = p_job_id for update;
  if not found then
    raise exception 'video job % not found', p_job_id using errcode = 'PT404';
  end if;
  if not vidanim_private.holds_queued_job(v_job, p_worker_id) then
    raise exception 'worker % does not hold queued job %', p_worker_id, p_job_id using errcode = 'PT409';
  end if;
  delete from vidanim_private.video_webhook_tokens t where t.job_id = p_job_id and t.expires_at <= now();
  v_expires := now() + make_interval(secs => p_ttl_seconds);
  insert into vidanim_private.video_webhook_tokens (token_hash, job_id, provider, expires_at)
  values (p_token_hash, p_job_id, p_provider, v_expires);
  return v_expires;
end
$$;

comment on function public.issue_video_webhook_token(uuid, text, text, bytea, double precision) is
  'Service role only: record the SHA-256 of a submission''s webhook URL token for the queued job the worker holds.';

revoke execute on function public.issue_video_webhook_token(uuid, text, text, bytea, double precision)
  from public, anon, authenticated, service_role;
grant execute on function public.issue_video_webhook_token(uuid, text, text, bytea, double precision)
  to service_role;

-- Service role: whether a URL's token is an unexpired one issued for the job (the
-- webhook route asks before it reads the body).
create or replace function public.video_webhook_token_valid(p_job_id uuid, p_token_hash bytea)
returns boolean
language sql
stable
security definer
set search_path = ''
as $$
  select exists (
    select 1
      from vidanim_private.video_webhook_tokens t
     where t.token_hash = p_token_hash and t.job_id = p_job_id and t.expires_at > now())
$$;

comment on function public.video_webhook_token_valid(uuid, bytea) is
  'Service role only: whether a webhook URL token (its SHA-256) was issued for the job and has not expired.';

revoke execute on function public.video_webhook_token_valid(uuid, bytea) from public, anon, authenticated, service_role;
grant execute on function public.video_webhook_token_valid(uuid, bytea) to service_role;

-- Service role: the delivery's outcome (0031), with adoption only after an answer lost
-- at this very provider.
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
        and v_job.provider = p_provider and v_job.provider_status = 'submission_uncertain' then
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

-- Service role: what the webhook route calls. The URL's token must be an unexpired one
-- issued for the job at this provider, and not yet bound to another request: the first
-- delivery binds it (a concurrent second one with another request waits on the token's
-- row and then finds it bound). 'refused_token' otherwise, nothing recorded.
create or replace function public.record_video_provider_delivery(
  p_job_id uuid,
  p_provider text,
  p_request_id text,
  p_status text,
  p_body jsonb,
  p_token_hash bytea
)
returns text
language plpgsql
security definer
set search_path = ''
as $$
begin
  if p_token_hash is null then
    raise exception 'p_token_hash is required' using errcode = '22023';
  end if;
  if p_request_id is null or char_length(p_request_id) not between 1 and 255 then
    raise exception 'the request id must be 1-255 characters' using errcode = '22023';
  end if;
  update vidanim_private.video_webhook_tokens t
     set request_id = p_request_id
   where t.token_hash = p_token_hash
     and t.job_id = p_job_id
     and t.provider = p_provider
     and t.expires_at > now()
     and (t.request_id is null or t.request_id = p_request_id);
  if not found then
    return 'refused_token';
  end if;
  return public.record_video_provider_delivery(p_job_id, p_provider, p_request_id, p_status, p_body);
end
$$;

comment on function public.record_video_provider_delivery(uuid, text, text, text, jsonb, bytea) is
  'Service role only: record a verified delivery that came with a URL token; refused_token unless the token is the job''s, unexpired and unused by another request.';

revoke execute on function public.record_video_provider_delivery(uuid, text, text, text, jsonb, bytea)
  from public, anon, authenticated, service_role;
grant execute on function public.record_video_provider_delivery(uuid, text, text, text, jsonb, bytea)
  to service_role;
