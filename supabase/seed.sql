-- Local development data (`supabase db reset` loads it after the migrations).
--
-- Two users with fixed ids, so examples and manual tests can name them, and
-- generous quota defaults for local work. Passwords are not set: sign in with a
-- magic link in Supabase Studio, or mint tokens with the local JWT secret.
insert into auth.users (id, aud, role, email, raw_app_meta_data, raw_user_meta_data, created_at, updated_at)
values
  ('00000000-0000-4000-8000-00000000a11c', 'authenticated', 'authenticated', 'alice@example.test',
   '{"provider": "email"}', '{}', now(), now()),
  ('00000000-0000-4000-8000-000000000b0b', 'authenticated', 'authenticated', 'bob@example.test',
   '{"provider": "email"}', '{}', now(), now())
on conflict (id) do nothing;

update public.video_quota_defaults set daily_limit = 100, max_active_jobs = 10;
