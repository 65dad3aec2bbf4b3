-- The user API: request_video_animation, cancel_video_job, get_video_quota.
--
-- Why: these are what a signed-in user calls through PostgREST. Each is a SECURITY
-- INVOKER function in `public` over a SECURITY DEFINER function in vidanim_private
-- (Supabase's advice, splinter lints 0028/0029): the API schema holds nothing that
-- runs with more rights than its caller, and the privileged part sits where
-- PostgREST cannot route to it. The privileged part re-checks who is calling.
-- Only `authenticated` may execute them; `anon` gets 42501 (HTTP 401).

-- Who is calling: a signed-in, non-anonymous user, or 42501.
create or replace function vidanim_private.require_user()
returns uuid
language plpgsql
stable
set search_path = ''
as $$
declare
  v_uid uuid := auth.uid();
begin
  if v_uid is null then
    raise exception 'not signed in' using errcode = '42501';
  end if;
  if coalesce((auth.jwt() ->> 'is_anonymous')::boolean, false) then
    raise exception 'anonymous users cannot request videos; sign in with an account first'
      using errcode = '42501';
  end if;
  return v_uid;
end
$$;

revoke execute on function vidanim_private.require_user() from public;

-- request_video_animation ------------------------------------------------------
create or replace function vidanim_private.request_video_animation(
  p_input_image_path text,
  p_prompt text,
  p_options jsonb,
  p_client_request_id text
)
returns public.video_jobs
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_uid uuid := vidanim_private.require_user();
  v_options jsonb := coalesce(p_options, '{}'::jsonb);
  v_job public.video_jobs;
  -- the UTC day being charged (vidanim_private.video_quota_day(), inlined: hot path)
  v_day date := (now() at time zone 'utc')::date;
  v_daily_limit integer;
  v_max_active integer;
  v_active integer;
  v_used integer;
  v_resets_at timestamptz;
begin
  perform vidanim_private.check_video_request(
    v_uid, p_input_image_path, p_prompt, v_options, p_client_request_id);

  -- Serialize this user's requests on its quota row, reading the effective
  -- limits in the same statement: the active-job count, the daily usage and the
  -- client_request_id lookup below are then exact, whatever the number of
  -- parallel requests. Other users are not blocked.
  select coalesce(q.daily_limit, d.daily_limit), coalesce(q.max_active_jobs, d.max_active_jobs)
    into v_daily_limit, v_max_active
    from public.video_user_quotas q cross join public.video_quota_defaults d
   where q.user_id = v_uid
     for update of q;
  if not found then
    insert into public.video_user_quotas (user_id) values (v_uid) on conflict (user_id) do nothing;
    select coalesce(q.daily_limit, d.daily_limit), coalesce(q.max_active_jobs, d.max_active_jobs)
      into v_daily_limit, v_max_active
      from public.video_user_quotas q cross join public.video_quota_defaults d
     where q.user_id = v_uid
       for update of q;
  end if;

  -- Idempotency: the same client_request_id returns the same job, charged once.
  if p_client_request_id is not null then
    select * into v_job
      from public.video_jobs
     where user_id = v_uid and client_request_id = p_client_request_id;
    if found then
      if v_job.input_image_path is distinct from p_input_image_path
         or v_job.prompt is distinct from p_prompt
         or v_job.options is distinct from v_options then
        raise exception 'client_request_id % was already used with different parameters', p_client_request_id
          using errcode = 'PT422',
                detail = json_build_object('job_id', v_job.id)::text,
                hint = 'Use a new client_request_id for a different request.';
      end if;
      return v_job;
    end if;
  end if;

  if not exists (
    select 1 from storage.objects o
     where o.bucket_id = 'video-inputs' and o.name = p_input_image_path
  ) then
    raise exception 'input image % not found in bucket video-inputs', p_input_image_path
      using errcode = 'PT404',
            hint = 'Upload the image to your own folder of video-inputs first.';
  end if;

  select count(*) into v_active
    from public.video_jobs j
   where j.user_id = v_uid and j.status in ('queued', 'processing');
  if v_active >= v_max_active then
    raise exception 'too many active video jobs: % of % allowed are queued or processing',
        v_active, v_max_active
      using errcode = 'PT429',
            detail = json_build_object('reason', 'active_jobs', 'limit', v_max_active,
                                       'active', v_active)::text,
            hint = 'Wait for a job to finish or cancel one.';
  end if;

  -- Charge one unit unless the day is used up (exact: we hold the user's lock).
  v_used := null;
  if v_daily_limit > 0 then
    insert into public.video_quota_usage as u (user_id, day, used)
    values (v_uid, v_day, 1)
    on conflict (user_id, day) do update set used = u.used + 1 where u.used < v_daily_limit
    returning u.used into v_used;
  end if;
  if v_used is null then
    v_resets_at := (v_day + 1)::timestamp at time zone 'utc';
    select u.used into v_used from public.video_quota_usage u where u.user_id = v_uid and u.day = v_day;
    raise exception 'daily video quota of % reached; it resets at %', v_daily_limit,
        to_char(v_resets_at at time zone 'utc', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
      using errcode = 'PT429',
            detail = json_build_object('reason', 'daily_quota', 'limit', v_daily_limit,
                                       'used', coalesce(v_used, 0), 'resets_at', v_resets_at)::text,
            hint = 'Try again after the reset.';
  end if;

  insert into public.video_jobs (user_id, input_image_path, prompt, options, client_request_id, quota_day)
  values (v_uid, p_input_image_path, p_prompt, v_options, p_client_request_id, v_day)
  returning * into v_job;

  return v_job;
end
$$;

comment on function vidanim_private.request_video_animation(text, text, jsonb, text) is
  'Privileged part of public.request_video_animation(); checks the caller itself.';

revoke execute on function vidanim_private.request_video_animation(text, text, jsonb, text) from public;
grant execute on function vidanim_private.request_video_animation(text, text, jsonb, text) to authenticated;

create or replace function public.request_video_animation(
  p_input_image_path text,
  p_prompt text default null,
  p_options jsonb default '{}'::jsonb,
  p_client_request_id text default null
)
returns public.video_jobs
language plpgsql
security invoker
set search_path = ''
as $$
declare
  v_job public.video_jobs;
begin
  v_job := vidanim_private.request_video_animation(
    p_input_image_path, p_prompt, p_options, p_client_request_id);
  return v_job;
end
$$;

comment on function public.request_video_animation(text, text, jsonb, text) is
  'Validates, deduplicates by client_request_id, charges the quota and creates a video job, atomically.';

revoke execute on function public.request_video_animation(text, text, jsonb, text)
  from public, anon, authenticated, service_role;
grant execute on function public.request_video_animation(text, text, jsonb, text) to authenticated;

-- cancel_video_job -----------------------------------------------------------------
create or replace function vidanim_private.cancel_video_job(p_job_id uuid)
returns public.video_jobs
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_uid uuid := vidanim_private.require_user();
  v_job public.video_jobs;
begin
  if p_job_id is null then
    raise exception 'p_job_id is required' using errcode = '22023';
  end if;
  select * into v_job
    from public.video_jobs
   where id = p_job_id and user_id = v_uid
   for update;
  if not found then
    raise exception 'video job % not found', p_job_id using errcode = 'PT404';
  end if;
  if v_job.status not in ('queued', 'processing') then
    raise exception 'video job % has already ended (%)', p_job_id, v_job.status
      using errcode = 'PT409';
  end if;
  -- The lease is kept: the worker learns of the cancel when it renews and then
  -- cancels the provider task.
  update public.video_jobs
     set status = 'canceled',
         error_code = 'canceled_by_user',
         error_message = 'Canceled by the user.',
         completed_at = now()
   where id = p_job_id
  returning * into v_job;
  return v_job;
end
$$;

comment on function vidanim_private.cancel_video_job(uuid) is
  'Privileged part of public.cancel_video_job(); checks the caller itself.';

revoke execute on function vidanim_private.cancel_video_job(uuid) from public;
grant execute on function vidanim_private.cancel_video_job(uuid) to authenticated;

create or replace function public.cancel_video_job(p_job_id uuid)
returns public.video_jobs
language plpgsql
security invoker
set search_path = ''
as $$
declare
  v_job public.video_jobs;
begin
  v_job := vidanim_private.cancel_video_job(p_job_id);
  return v_job;
end
$$;

comment on function public.cancel_video_job(uuid) is
  'The caller cancels its own queued or processing job (PT404 if not its own, PT409 if already ended).';

revoke execute on function public.cancel_video_job(uuid) from public, anon, authenticated, service_role;
grant execute on function public.cancel_video_job(uuid) to authenticated;

-- get_video_quota ------------------------------------------------------------------
create or replace function vidanim_private.get_video_quota()
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
security definer
set search_path = ''
as $$
  select * from vidanim_private.video_quota_status(vidanim_private.require_user())
$$;

comment on function vidanim_private.get_video_quota() is
  'Privileged part of public.get_video_quota(): the caller''s own figures only.';

revoke execute on function vidanim_private.get_video_quota() from public;
grant execute on function vidanim_private.get_video_quota() to authenticated;

create or replace function public.get_video_quota()
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
security invoker
set search_path = ''
as $$
  select * from vidanim_private.get_video_quota()
$$;

comment on function public.get_video_quota() is
  'The caller''s own daily limit, usage, remaining jobs, active-job limit and count, and next reset.';

revoke execute on function public.get_video_quota() from public, anon, authenticated, service_role;
grant execute on function public.get_video_quota() to authenticated;
