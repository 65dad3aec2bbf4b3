-- Quota administration for the service role: reset, per-user limits, defaults.
--
-- Why: the hardening summary's limitation 6 (no manual quota reset) and the need
-- to change limits without a migration. Service role only; operators reach these
-- through `vidanim quota ...`.
create or replace function public.reset_video_quota(p_user_id uuid, p_day date default null)
returns void
language plpgsql
security definer
set search_path = ''
as $$
begin
  if p_user_id is null then
    raise exception 'p_user_id is required' using errcode = '22023';
  end if;
  if not exists (select 1 from auth.users where id = p_user_id) then
    raise exception 'user % not found', p_user_id using errcode = 'PT404';
  end if;
  update public.video_quota_usage
     set used = 0
   where user_id = p_user_id
     and day = coalesce(p_day, vidanim_private.video_quota_day());
end
$$;

comment on function public.reset_video_quota(uuid, date) is
  'Service role only: sets a user''s usage for a UTC day (today when p_day is null) back to zero.';

create or replace function public.set_video_quota_limits(
  p_user_id uuid,
  p_daily_limit integer,
  p_max_active_jobs integer
)
returns void
language plpgsql
security definer
set search_path = ''
as $$
begin
  if p_user_id is null then
    raise exception 'p_user_id is required' using errcode = '22023';
  end if;
  if p_daily_limit not between 0 and 1000000 then
    raise exception 'daily limit must be between 0 and 1000000 (or null for the default)' using errcode = '22023';
  end if;
  if p_max_active_jobs not between 0 and 100000 then
    raise exception 'max active jobs must be between 0 and 100000 (or null for the default)' using errcode = '22023';
  end if;
  if not exists (select 1 from auth.users where id = p_user_id) then
    raise exception 'user % not found', p_user_id using errcode = 'PT404';
  end if;
  insert into public.video_user_quotas (user_id, daily_limit, max_active_jobs)
  values (p_user_id, p_daily_limit, p_max_active_jobs)
  on conflict (user_id) do update
    set daily_limit = excluded.daily_limit,
        max_active_jobs = excluded.max_active_jobs;
end
$$;

comment on function public.set_video_quota_limits(uuid, integer, integer) is
  'Service role only: per-user quota override; a null limit falls back to the default.';

create or replace function public.set_video_quota_defaults(p_daily_limit integer, p_max_active_jobs integer)
returns void
language plpgsql
security definer
set search_path = ''
as $$
begin
  if p_daily_limit is null or p_daily_limit not between 0 and 1000000 then
    raise exception 'default daily limit must be between 0 and 1000000' using errcode = '22023';
  end if;
  if p_max_active_jobs is null or p_max_active_jobs not between 0 and 100000 then
    raise exception 'default max active jobs must be between 0 and 100000' using errcode = '22023';
  end if;
  update public.video_quota_defaults
     set daily_limit = p_daily_limit,
         max_active_jobs = p_max_active_jobs
   where id;
end
$$;

comment on function public.set_video_quota_defaults(integer, integer) is
  'Service role only: the default daily limit and maximum of active jobs for users without an override.';

revoke execute on function public.reset_video_quota(uuid, date) from public, anon, authenticated, service_role;
revoke execute on function public.set_video_quota_limits(uuid, integer, integer) from public, anon, authenticated, service_role;
revoke execute on function public.set_video_quota_defaults(integer, integer) from public, anon, authenticated, service_role;
grant execute on function public.reset_video_quota(uuid, date) to service_role;
grant execute on function public.set_video_quota_limits(uuid, integer, integer) to service_role;
grant execute on function public.set_video_quota_defaults(integer, integer) to service_role;
