-- The quota and idempotent requests: one unit per new job, none for a repeated
-- client_request_id, a clear refusal at the limit or on a reused id with other
-- parameters, and the unit back when a queued job is canceled.
begin;
create extension if not exists pgtap with schema extensions;
set local search_path = public, extensions;

select plan(11);

create function pg_temp.act_as(p_user uuid) returns void
language plpgsql as $$
begin
  perform set_config('role', 'authenticated', true);
  perform set_config('request.jwt.claims',
    json_build_object('sub', p_user, 'role', 'authenticated', 'aud', 'authenticated')::text, true);
end
$$;

insert into auth.users (id, aud, role, email) values
  ('c0000000-0000-4000-8000-00000000000c', 'authenticated', 'authenticated', 'carol@example.test');
insert into storage.objects (bucket_id, name, owner_id, metadata) values
  ('video-inputs', 'c0000000-0000-4000-8000-00000000000c/cat.png', 'c0000000-0000-4000-8000-00000000000c',
   '{"mimetype": "image/png", "size": 100}');

set local role service_role;
select lives_ok(
  $$select public.set_video_quota_limits('c0000000-0000-4000-8000-00000000000c', 2, 5)$$,
  'the service role sets carol''s daily limit to 2'
);
reset role;

select pg_temp.act_as('c0000000-0000-4000-8000-00000000000c');
select set_config('vidanim_test.first', (select id::text from public.request_video_animation(
  'c0000000-0000-4000-8000-00000000000c/cat.png', 'wave', '{}', 'req-1')), true);
select is(
  (select id::text from public.request_video_animation('c0000000-0000-4000-8000-00000000000c/cat.png', 'wave', '{}', 'req-1')),
  current_setting('vidanim_test.first'),
  'the same client_request_id returns the same job'
);
select is((select used from public.get_video_quota()), 1, 'a repeated request charges nothing');
select throws_ok(
  $$select public.request_video_animation('c0000000-0000-4000-8000-00000000000c/cat.png', 'jump', '{}', 'req-1')$$,
  'PT422', null, 'a client_request_id reused with another prompt is refused'
);
select lives_ok(
  $$select public.request_video_animation('c0000000-0000-4000-8000-00000000000c/cat.png', 'wave', '{}', 'req-2')$$,
  'a second request within the limit is accepted'
);
select throws_ok(
  $$select public.request_video_animation('c0000000-0000-4000-8000-00000000000c/cat.png', 'wave', '{}', 'req-3')$$,
  'PT429', null, 'a third request passes the daily limit of 2 and is refused'
);
select results_eq(
  $$select used, remaining from public.get_video_quota()$$,
  $$values (2, 0)$$,
  'the refused request charged nothing'
);
select is(
  (select count(*)::integer from public.video_jobs),
  2, 'carol has exactly two jobs'
);
select is(
  (select status from public.cancel_video_job(current_setting('vidanim_test.first')::uuid)),
  'canceled', 'carol cancels her queued job'
);
select is((select used from public.get_video_quota()), 1, 'canceling a job never sent to a provider gives the unit back');
select lives_ok(
  $$select public.request_video_animation('c0000000-0000-4000-8000-00000000000c/cat.png', 'wave', '{}', 'req-3')$$,
  'with the unit back, the next request is accepted'
);
reset role;

select * from finish();
rollback;
