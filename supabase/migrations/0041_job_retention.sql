-- Retention: ended jobs are pruned in small batches, and each UTC day keeps its totals.
--
-- Why: nothing ever removed job history, so `video_jobs` and `video_job_events` only
-- grew. `prune_video_jobs` deletes one batch of ended jobs whose end is older than a
-- cutoff (their events, deliveries and internals go with them by foreign key) and adds
-- what it deleted to `video_job_daily_totals`: per creation day (UTC), status, provider
-- and error code, the number of jobs, their spend estimate, and for completed jobs the
-- durations from start to stored video (a histogram of whole seconds, so percentiles
-- over any set of days stay computable). `jobs stats` reads those totals for the days it
-- no longer finds in `video_jobs`.
--
-- Never pruned: a job that is not ended, and a completed job whose video is still
-- stored (`output_expired_at` is null: its output path names a live object; the
-- storage cleanup expires it first). One call is one batch and one transaction: the
-- batch's rows are taken `for update skip locked`, so a prune never waits for a job
-- someone else holds, and claims (which only touch active jobs) never wait for a prune
-- longer than nothing. The caller (CLI, worker, pg_cron) loops, each batch committed.
create table if not exists vidanim_private.video_job_daily_totals (
  day date not null,
  status text not null check (status in ('completed', 'failed', 'canceled')),
  provider text not null default '',
  error_code text not null default '',
  jobs bigint not null default 0 check (jobs >= 0),
  -- completed jobs with a start: {"<whole seconds from start to stored video>": count}
  durations jsonb not null default '{}'::jsonb check (jsonb_typeof(durations) = 'object'),
  duration_seconds numeric not null default 0,
  spend_usd numeric not null default 0,
  updated_at timestamptz not null default now(),
  primary key (day, status, provider, error_code)
);

comment on table vidanim_private.video_job_daily_totals is
  'What prune_video_jobs deleted, per creation day (UTC), status, provider and error code.';

alter table vidanim_private.video_job_daily_totals enable row level security;
revoke all on table vidanim_private.video_job_daily_totals from public, anon, authenticated, service_role;

-- Two histograms of whole seconds, added key by key.
create or replace function vidanim_private.add_duration_counts(a jsonb, b jsonb)
returns jsonb
language sql
immutable
set search_path = ''
as $$
  select coalesce(jsonb_object_agg(k, n), '{}'::jsonb)
    from (select e.key as k, sum(e.value::bigint) as n
            from (select * from jsonb_each_text(a) union all select * from jsonb_each_text(b)) e
           group by e.key) s
$$;

revoke execute on function vidanim_private.add_duration_counts(jsonb, jsonb) from public;

-- Service role: delete one batch of ended jobs older than p_older_than; add them to the totals.
create or replace function public.prune_video_jobs(p_older_than interval, p_batch_size integer default 1000)
returns table (jobs bigint, events bigint)
language plpgsql
security definer
set search_path = ''
as $$
begin
  if p_older_than is null or p_older_than < interval '1 day' then
    raise exception 'p_older_than must be at least 1 day' using errcode = '22023';
  end if;
  if p_batch_size is null or p_batch_size not between 1 and 10000 then
    raise exception 'p_batch_size must be between 1 and 10000' using errcode = '22023';
  end if;
  -- One statement: every part reads the same snapshot, so the internals and events of the
  -- batch are counted before the foreign keys delete them with their jobs.
  return query
  with batch as (
    -- video_jobs_prunable_idx's predicate: a completed job whose video is stored never matches
    select j.id from public.video_jobs j
     where (j.status in ('failed', 'canceled') or (j.status = 'completed' and j.output_expired_at is not null))
       and j.completed_at < now() - p_older_than
     order by j.completed_at
     limit p_batch_size
       for update skip locked
  ), gone as (
    delete from public.video_jobs j using batch b where j.id = b.id
    returning j.id, j.status, j.provider, j.error_code, j.created_at, j.started_at, j.completed_at
  ), per_job as (
    select (g.created_at at time zone 'utc')::date as day, g.status,
           coalesce(g.provider, '') as provider, coalesce(g.error_code, '') as error_code,
           case when g.status = 'completed' and g.started_at is not null
                then extract(epoch from g.completed_at - g.started_at) end as seconds,
           coalesce((select i.estimated_cost_usd from vidanim_private.video_job_internals i
                      where i.job_id = g.id), 0) as spend
      from gone g
  ), by_second as (
    select p.day, p.status, p.provider, p.error_code, round(p.seconds)::bigint::text as secs, count(*) as n
      from per_job p where p.seconds is not null
     group by 1, 2, 3, 4, 5
  ), histograms as (
    select s.day, s.status, s.provider, s.error_code, jsonb_object_agg(s.secs, s.n) as durations
      from by_second s group by 1, 2, 3, 4
  ), added as (
    insert into vidanim_private.video_job_daily_totals as t
           (day, status, provider, error_code, jobs, durations, duration_seconds, spend_usd)
    select p.day, p.status, p.provider, p.error_code, count(*), coalesce(h.durations, '{}'::jsonb),
           coalesce(sum(p.seconds), 0), sum(p.spend)
      from per_job p
      left join histograms h
        on h.day = p.day and h.status = p.status and h.provider = p.provider and h.error_code = p.error_code
     group by p.day, p.status, p.provider, p.error_code, h.durations
    on conflict (day, status, provider, error_code) do update
      set jobs = t.jobs + excluded.jobs,
          durations = vidanim_private.add_duration_counts(t.durations, excluded.durations),
          duration_seconds = t.duration_seconds + excluded.duration_seconds,
          spend_usd = t.spend_usd + excluded.spend_usd,
          updated_at = now()
    returning 1
  )
  select (select count(*) from gone),
         (select count(*) from public.video_job_events e join batch b on b.id = e.job_id);
end
$$;

comment on function public.prune_video_jobs(interval, integer) is
  'Service role only: deletes one batch of ended jobs older than p_older_than (never one whose video is stored) and adds them to the daily totals.';

-- Service role: what a prune would delete (jobs, the oldest end among them).
create or replace function public.count_prunable_video_jobs(p_older_than interval)
returns table (jobs bigint, oldest timestamptz)
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
  if p_older_than is null or p_older_than < interval '1 day' then
    raise exception 'p_older_than must be at least 1 day' using errcode = '22023';
  end if;
  return query
  select count(*), min(j.completed_at) from public.video_jobs j
   where (j.status in ('failed', 'canceled') or (j.status = 'completed' and j.output_expired_at is not null))
     and j.completed_at < now() - p_older_than;
end
$$;

comment on function public.count_prunable_video_jobs(interval) is
  'Service role only: how many ended jobs prune_video_jobs would delete at this cutoff, and the oldest end.';

-- Service role (operators, dashboards): the totals of pruned jobs created on or after p_since (UTC day).
create or replace function public.get_video_job_daily_totals(p_since date)
returns table (
  day date, status text, provider text, error_code text, jobs bigint,
  durations jsonb, duration_seconds numeric, spend_usd numeric)
language sql
stable
security definer
set search_path = ''
as $$
  select t.day, t.status, nullif(t.provider, ''), nullif(t.error_code, ''), t.jobs,
         t.durations, t.duration_seconds, t.spend_usd
    from vidanim_private.video_job_daily_totals t
   where t.day >= p_since
   order by t.day, t.status, t.provider, t.error_code
$$;

comment on function public.get_video_job_daily_totals(date) is
  'Service role only: per-day totals of pruned jobs (counts, duration histogram, spend) from p_since on.';

do $$
declare
  f text;
begin
  foreach f in array array[
    'public.prune_video_jobs(interval, integer)',
    'public.count_prunable_video_jobs(interval)',
    'public.get_video_job_daily_totals(date)'
  ] loop
    execute format('revoke execute on function %s from public, anon, authenticated, service_role', f);
    execute format('grant execute on function %s to service_role', f);
  end loop;
end
$$;
