-- video_jobs: one row per animation request, owned by one user.
--
-- Why: the job row is the single source of truth for a request, from creation to
-- the stored video. Users may read their own rows (RLS) and nothing else; every
-- write goes through the functions of later migrations, and the state machine is
-- enforced by triggers (0006) for every writer.
create table if not exists public.video_jobs (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references auth.users (id) on delete cascade,
  status text not null default 'queued',
  -- object name in bucket `video-inputs`: '{user_id}/.../name.png'
  input_image_path text not null,
  prompt text,
  options jsonb not null default '{}'::jsonb,
  provider text,
  provider_task_id text,
  -- the provider's raw status string, recorded as it changes
  provider_status text,
  -- object name in bucket `video-outputs`: '{user_id}/{job_id}.mp4'
  output_video_path text,
  error_code text,
  error_message text,
  -- how many times a worker has taken the job up for a (re)submission
  attempts integer not null default 0,
  -- worker lease
  next_attempt_at timestamptz not null default now(),
  locked_by text,
  locked_until timestamptz,
  -- the UTC day whose quota paid for this job; a refund goes back to that day
  quota_day date not null default (now() at time zone 'utc')::date,
  quota_refunded_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  started_at timestamptz,
  completed_at timestamptz,
  constraint video_jobs_status_known
    check (status in ('queued', 'processing', 'completed', 'failed', 'canceled')),
  constraint video_jobs_provider_known
    check (provider is null or provider in ('fal', 'runway')),
  constraint video_jobs_processing_has_task
    check (status <> 'processing' or provider_task_id is not null),
  constraint video_jobs_completed_has_output
    check (status <> 'completed' or output_video_path is not null),
  constraint video_jobs_options_object
    check (jsonb_typeof(options) = 'object'),
  constraint video_jobs_attempts_non_negative
    check (attempts >= 0)
);

comment on table public.video_jobs is
  'One row per image-to-video request. Users read their own rows; only service functions change them.';

-- A user's history, newest first (also covers the foreign key on user_id).
create index if not exists video_jobs_user_created_idx
  on public.video_jobs (user_id, created_at desc);
-- Counting a user's active jobs for the concurrency limit.
create index if not exists video_jobs_user_active_idx
  on public.video_jobs (user_id) where status in ('queued', 'processing');
-- What workers claim: due queued jobs and processing jobs whose lease ran out.
create index if not exists video_jobs_claimable_idx
  on public.video_jobs (next_attempt_at) where status in ('queued', 'processing');

alter table public.video_jobs enable row level security;

-- Legacy projects grant everything on new tables to the API roles: take it back,
-- then grant by name. Users read through RLS; the service role reads for operators.
revoke all on table public.video_jobs from public, anon, authenticated, service_role;
grant select on table public.video_jobs to authenticated, service_role;

create policy "Users can read their own video jobs"
  on public.video_jobs for select
  to authenticated
  using (user_id = (select auth.uid()));
