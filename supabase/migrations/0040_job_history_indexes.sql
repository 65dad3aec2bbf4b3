-- Indexes for reads that must not grow with the job history.
--
-- Why: with a year of ended jobs (a million rows and five million events) the worker's
-- metrics scrape read every job "active or updated in the last day" (no index serves
-- an OR of the two), `jobs stats` read every job to find those created in its window,
-- and `expire_video_outputs` walked every completed job ever to find the stored ones.
-- Each index below is partial on ended jobs, so a row enters it when its job ends (a
-- worker's update), never when a user requests one: the request path does not pay.
--
--   video_jobs_ended_idx        ended jobs by completed_at: "ended in the last day" (metrics)
--   video_jobs_ended_created_idx ended jobs by created_at: "created in the window" (jobs stats;
--                               active jobs come from video_jobs_claimable_idx)
--   video_jobs_stored_output_idx completed jobs whose video is still stored, by completed_at
--                               (expire_video_outputs; the rows prune must never touch)
--   video_jobs_prunable_idx     ended jobs prune may delete (no stored video), by completed_at
--
-- On a table that already holds history each build takes a SHARE lock for a few seconds
-- per million rows (migrations run in a transaction: CONCURRENTLY is not available).
create index if not exists video_jobs_ended_idx
  on public.video_jobs (completed_at) where status in ('completed', 'failed', 'canceled');

create index if not exists video_jobs_ended_created_idx
  on public.video_jobs (created_at) where status in ('completed', 'failed', 'canceled');

create index if not exists video_jobs_stored_output_idx
  on public.video_jobs (completed_at) where status = 'completed' and output_expired_at is null;

create index if not exists video_jobs_prunable_idx
  on public.video_jobs (completed_at)
  where status in ('failed', 'canceled') or (status = 'completed' and output_expired_at is not null);
