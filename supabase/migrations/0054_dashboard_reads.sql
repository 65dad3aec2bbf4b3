-- What the operators' dashboard reads, and the indexes that keep it fast on a year of jobs.
--
-- Why: the dashboard (docs/dashboard.md) lists jobs newest first with filters, searches
-- by provider task id, shows the last failures and a day of completions, and opens one
-- job with its deliveries and the submission it has in flight. On 1,000,000 ended jobs
-- each of those must read a few index pages, not the table (scripts/bench_dashboard.py).
-- The private tables it needs are read through service functions, one job at a time.

-- The list, newest first, with or without a status; keyset pagination on (created_at, id).
create index if not exists video_jobs_created_idx on public.video_jobs (created_at desc, id desc);
create index if not exists video_jobs_status_created_idx on public.video_jobs (status, created_at desc, id desc);
-- Filters by a rare value, and the search by provider task id.
create index if not exists video_jobs_error_code_created_idx
  on public.video_jobs (error_code, created_at desc, id desc) where error_code is not null;
create index if not exists video_jobs_provider_task_idx
  on public.video_jobs (provider_task_id) where provider_task_id is not null;
-- Completions per minute and the latest failures.
create index if not exists video_jobs_completed_idx
  on public.video_jobs (completed_at desc) where completed_at is not null;

-- Service role (operators): the webhook deliveries received for one job.
create or replace function public.get_video_job_deliveries(p_job_id uuid)
returns table (
  provider text,
  request_id text,
  status text,
  outcome text,
  deliveries integer,
  first_received_at timestamptz,
  last_received_at timestamptz
)
language sql
stable
security definer
set search_path = ''
as $$
  select d.provider, d.request_id, d.status, d.outcome, d.deliveries, d.first_received_at, d.last_received_at
    from vidanim_private.video_provider_deliveries d
   where d.job_id = p_job_id
   order by d.first_received_at
$$;

comment on function public.get_video_job_deliveries(uuid) is
  'Service role only: the verified webhook deliveries recorded for one job (no bodies).';

-- Service role (operators): the submission one job has in flight (its reserved cost), if any.
create or replace function public.get_video_job_submission_in_flight(p_job_id uuid)
returns table (worker_id text, provider text, day date, cost_usd numeric, reserved_at timestamptz)
language sql
stable
security definer
set search_path = ''
as $$
  select f.worker_id, f.provider, f.day, f.cost_usd, f.reserved_at
    from vidanim_private.video_submissions_in_flight f
   where f.job_id = p_job_id
$$;

comment on function public.get_video_job_submission_in_flight(uuid) is
  'Service role only: the reservation of a submission whose outcome is not settled yet, for one job.';

do $$
declare
  f text;
begin
  foreach f in array array[
    'public.get_video_job_deliveries(uuid)',
    'public.get_video_job_submission_in_flight(uuid)'
  ] loop
    execute format('revoke execute on function %s from public, anon, authenticated, service_role', f);
    execute format('grant execute on function %s to service_role', f);
  end loop;
end
$$;
