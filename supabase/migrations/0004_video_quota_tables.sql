-- Quota tables: defaults, per-user overrides, and daily usage per UTC day.
--
-- Why: every job costs money at a provider. A user gets a daily number of jobs and a
-- maximum number of jobs in flight; both have defaults the service role can change
-- without a migration, and per-user overrides. The per-user row also serves as the
-- lock that serializes one user's requests, which is what makes the quota atomic.
create table if not exists public.video_quota_defaults (
  id boolean primary key default true,
  daily_limit integer not null,
  max_active_jobs integer not null,
  updated_at timestamptz not null default now(),
  constraint video_quota_defaults_singleton check (id),
  constraint video_quota_defaults_daily_limit_range check (daily_limit between 0 and 1000000),
  constraint video_quota_defaults_max_active_range check (max_active_jobs between 0 and 100000)
);

comment on table public.video_quota_defaults is
  'The single row of default quota limits; change with set_video_quota_defaults().';

insert into public.video_quota_defaults (id, daily_limit, max_active_jobs)
values (true, 20, 5)
on conflict (id) do nothing;

create table if not exists public.video_user_quotas (
  user_id uuid primary key references auth.users (id) on delete cascade,
  -- null: fall back to the default
  daily_limit integer,
  max_active_jobs integer,
  updated_at timestamptz not null default now(),
  constraint video_user_quotas_daily_limit_range check (daily_limit between 0 and 1000000),
  constraint video_user_quotas_max_active_range check (max_active_jobs between 0 and 100000)
);

comment on table public.video_user_quotas is
  'Per-user quota overrides; the row is also the lock that serializes a user''s job requests.';

create table if not exists public.video_quota_usage (
  user_id uuid not null references auth.users (id) on delete cascade,
  day date not null,
  used integer not null default 0,
  primary key (user_id, day),
  constraint video_quota_usage_used_non_negative check (used >= 0)
);

comment on table public.video_quota_usage is
  'Jobs charged per user and UTC day; refunds go back to the day that was charged.';

alter table public.video_quota_defaults enable row level security;
alter table public.video_user_quotas enable row level security;
alter table public.video_quota_usage enable row level security;

-- No client reads or writes these tables directly: get_video_quota() reports a
-- user's own figures. The service role may read them for operators.
revoke all on table public.video_quota_defaults, public.video_user_quotas, public.video_quota_usage
  from public, anon, authenticated, service_role;
grant select on table public.video_quota_defaults, public.video_user_quotas, public.video_quota_usage
  to service_role;
