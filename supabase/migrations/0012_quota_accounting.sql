-- Quota accounting helpers: a user's effective limits and today's figures.
--
-- Why: the request function, get_video_quota() and the operator tools must agree
-- on what a user's limits are (override, else default) and on the UTC day, so they
-- read them from one place.
create or replace function vidanim_private.video_quota_day()
returns date
language plpgsql
stable
set search_path = ''
as $$
begin
  return (now() at time zone 'utc')::date;
end
$$;

comment on function vidanim_private.video_quota_day() is
  'The UTC day that quota is charged to now.';

create or replace function vidanim_private.video_quota_status(p_user_id uuid)
returns table (
  daily_limit integer,
  used integer,
  remaining integer,
  max_active_jobs integer,
  active_jobs integer,
  resets_at timestamptz
)
language sql
stable
set search_path = ''
as $$
  with limits as (
    select coalesce(q.daily_limit, d.daily_limit) as daily_limit,
           coalesce(q.max_active_jobs, d.max_active_jobs) as max_active_jobs
      from public.video_quota_defaults d
      left join public.video_user_quotas q on q.user_id = p_user_id
  ),
  usage as (
    select coalesce(
      (select u.used from public.video_quota_usage u
        where u.user_id = p_user_id and u.day = vidanim_private.video_quota_day()), 0) as used
  ),
  active as (
    select count(*)::integer as active_jobs
      from public.video_jobs j
     where j.user_id = p_user_id and j.status in ('queued', 'processing')
  )
  select l.daily_limit,
         u.used,
         greatest(l.daily_limit - u.used, 0),
         l.max_active_jobs,
         a.active_jobs,
         ((vidanim_private.video_quota_day() + 1)::timestamp at time zone 'utc')
    from limits l, usage u, active a
$$;

comment on function vidanim_private.video_quota_status(uuid) is
  'A user''s effective quota limits, today''s usage and active jobs; reads tables, so callers must be privileged.';

revoke execute on function vidanim_private.video_quota_day() from public;
revoke execute on function vidanim_private.video_quota_status(uuid) from public;
