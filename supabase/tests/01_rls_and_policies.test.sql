-- Row-level security and policies: what an operator who changes the schema re-checks first.
--
-- Every vidanim table has RLS on; users read their own jobs and timeline through
-- the two named policies and nothing else; no API role can write any vidanim table;
-- the storage policies that keep each user in its own folder are in place.
-- Runs with `supabase test db`, or `make test-sql` (pg_prove) on a plain PostgreSQL.
begin;
create extension if not exists pgtap with schema extensions;
set local search_path = public, extensions;

select plan(25);

select ok(relrowsecurity, format('RLS is enabled on %s', oid::regclass))
  from pg_class
 where oid in ('public.video_jobs'::regclass, 'public.video_job_events'::regclass,
               'public.video_quota_defaults'::regclass, 'public.video_user_quotas'::regclass,
               'public.video_quota_usage'::regclass, 'storage.objects'::regclass)
 order by oid::regclass::text;

select policies_are('public', 'video_jobs', array['Users can read their own video jobs']);
select policies_are('public', 'video_job_events', array['Users can read the timeline of their own video jobs']);
select policies_are('public', 'video_quota_defaults', array[]::name[], 'video_quota_defaults has no policy: no API role reads it');
select policies_are('public', 'video_user_quotas', array[]::name[], 'video_user_quotas has no policy: no API role reads it');
select policies_are('public', 'video_quota_usage', array[]::name[], 'video_quota_usage has no policy: no API role reads it');

select policy_cmd_is('public', 'video_jobs', 'Users can read their own video jobs', 'select',
  'video_jobs: "Users can read their own video jobs" is a select policy');
select policy_roles_are('public', 'video_jobs', 'Users can read their own video jobs', array['authenticated']);
select policy_roles_are('public', 'video_job_events', 'Users can read the timeline of their own video jobs', array['authenticated']);

select policy_cmd_is('storage', 'objects', 'Users can upload images to their own folder of video-inputs', 'insert',
  'objects: "Users can upload images to their own folder of video-inputs" is a insert policy');
select policy_cmd_is('storage', 'objects', 'Users can replace images in their own folder of video-inputs', 'update',
  'objects: "Users can replace images in their own folder of video-inputs" is a update policy');
select policy_cmd_is('storage', 'objects', 'Users can read their own files in the video buckets', 'select',
  'objects: "Users can read their own files in the video buckets" is a select policy');
select policy_cmd_is('storage', 'objects', 'Users can delete images in their own folder of video-inputs', 'delete',
  'objects: "Users can delete images in their own folder of video-inputs" is a delete policy');

select table_privs_are('public', 'video_jobs', 'authenticated', array['SELECT'], 'authenticated may only read video_jobs');
select table_privs_are('public', 'video_job_events', 'authenticated', array['SELECT'], 'authenticated may only read video_job_events');
select table_privs_are('public', 'video_jobs', 'anon', array[]::text[], 'anon has no privilege on video_jobs');
select table_privs_are('public', 'video_quota_usage', 'authenticated', array[]::text[], 'authenticated has no privilege on video_quota_usage');
select table_privs_are('public', 'video_user_quotas', 'authenticated', array[]::text[], 'authenticated has no privilege on video_user_quotas');
select table_privs_are('public', 'video_quota_defaults', 'authenticated', array[]::text[], 'authenticated has no privilege on video_quota_defaults');

select is(
  (select array_agg(id::text || ':' || public::text order by id) from storage.buckets where id in ('video-inputs', 'video-outputs')),
  array['video-inputs:false', 'video-outputs:false'],
  'both vidanim buckets exist and are private'
);

select * from finish();
rollback;
