-- One user cannot read another user's jobs, timeline or files, and no user can
-- change a job's status: not by a direct write, not through a service function,
-- not with a forged claim. Tried as an attacker would, as PostgREST would run it.
begin;
create extension if not exists pgtap with schema extensions;
set local search_path = public, extensions;

select plan(14);

-- Act as a signed-in user exactly as PostgREST does: role and claims, local to the transaction.
create function pg_temp.act_as(p_user uuid, p_claimed_role text default 'authenticated') returns void
language plpgsql as $$
begin
  perform set_config('role', 'authenticated', true);
  perform set_config('request.jwt.claims',
    json_build_object('sub', p_user, 'role', p_claimed_role, 'aud', 'authenticated')::text, true);
end
$$;

insert into auth.users (id, aud, role, email) values
  ('a0000000-0000-4000-8000-00000000000a', 'authenticated', 'authenticated', 'alice@example.test'),
  ('b0000000-0000-4000-8000-00000000000b', 'authenticated', 'authenticated', 'bob@example.test');
insert into storage.objects (bucket_id, name, owner_id, metadata) values
  ('video-inputs', 'a0000000-0000-4000-8000-00000000000a/cat.png', 'a0000000-0000-4000-8000-00000000000a',
   '{"mimetype": "image/png", "size": 100}');

select pg_temp.act_as('a0000000-0000-4000-8000-00000000000a');
select lives_ok(
  $$select public.request_video_animation('a0000000-0000-4000-8000-00000000000a/cat.png', 'the cat waves', '{}', 'req-1')$$,
  'alice requests a video of her own image'
);
reset role;
select set_config('vidanim_test.job', (select id::text from public.video_jobs
  where user_id = 'a0000000-0000-4000-8000-00000000000a'), true);

-- Bob, another signed-in user.
select pg_temp.act_as('b0000000-0000-4000-8000-00000000000b');
select is_empty($$select id from public.video_jobs$$, 'bob sees none of alice''s jobs');
select is_empty($$select job_id from public.video_job_events$$, 'bob sees none of alice''s timeline');
select is_empty($$select name from storage.objects$$, 'bob sees none of alice''s files');
select throws_ok(
  format('select public.cancel_video_job(%L::uuid)', current_setting('vidanim_test.job')),
  'PT404', null, 'bob cannot cancel alice''s job, nor learn that it exists'
);
select throws_ok(
  $$select public.request_video_animation('a0000000-0000-4000-8000-00000000000a/cat.png', null, '{}', null)$$,
  '22023', null, 'bob cannot animate an image in alice''s folder'
);
reset role;

-- Alice tries to complete her own job without paying.
select pg_temp.act_as('a0000000-0000-4000-8000-00000000000a');
select throws_ok(
  format('update public.video_jobs set status = %L where id = %L', 'completed', current_setting('vidanim_test.job')),
  '42501', null, 'a user cannot update a job directly'
);
select throws_ok(
  format('delete from public.video_jobs where id = %L', current_setting('vidanim_test.job')),
  '42501', null, 'a user cannot delete a job'
);
select throws_ok(
  $$insert into public.video_quota_usage (user_id, day, used) values ('a0000000-0000-4000-8000-00000000000a', current_date, 0)$$,
  '42501', null, 'a user cannot write its own quota usage'
);
select throws_ok(
  format('select public.service_update_video_job_status(%L::uuid, %L)', current_setting('vidanim_test.job'), 'completed'),
  '42501', null, 'a user cannot call the service status function'
);
reset role;
select pg_temp.act_as('a0000000-0000-4000-8000-00000000000a', 'service_role');
select throws_ok(
  $$select public.claim_video_jobs('forged', 1, 60)$$,
  '42501', null, 'a forged service_role claim does not make a user the service role'
);
reset role;
set local role anon;
select throws_ok(
  $$select public.request_video_animation('a0000000-0000-4000-8000-00000000000a/cat.png', null, '{}', null)$$,
  '42501', null, 'anon cannot request a video'
);
select throws_ok($$select id from public.video_jobs$$, '42501', null, 'anon cannot read jobs at all');
reset role;

select is(
  (select status from public.video_jobs where id = current_setting('vidanim_test.job')::uuid),
  'queued', 'after every attempt the job is still queued'
);

select * from finish();
rollback;
