-- video_job_events: the job's timeline, one row per status or provider status change.
--
-- Why: users and operators need to see how a job got where it is. Rows are written
-- only by a trigger on video_jobs (0008), never by application code, so the timeline
-- cannot drift from the real transitions. The owner's id is copied onto each row so
-- the RLS check needs no join.
create table if not exists public.video_job_events (
  id bigint generated always as identity primary key,
  job_id uuid not null references public.video_jobs (id) on delete cascade,
  -- a copy of the job's owner for RLS; consistent through the job's own foreign key
  user_id uuid not null,
  status text not null,
  provider text,
  provider_status text,
  error_code text,
  created_at timestamptz not null default clock_timestamp()
);

comment on table public.video_job_events is
  'Timeline of each video job, written by trigger only; readable by the job''s owner.';

create index if not exists video_job_events_job_idx on public.video_job_events (job_id, id);

alter table public.video_job_events enable row level security;

revoke all on table public.video_job_events from public, anon, authenticated, service_role;
revoke all on sequence public.video_job_events_id_seq from public, anon, authenticated, service_role;
grant select on table public.video_job_events to authenticated, service_role;

create policy "Users can read the timeline of their own video jobs"
  on public.video_job_events for select
  to authenticated
  using (user_id = (select auth.uid()));
