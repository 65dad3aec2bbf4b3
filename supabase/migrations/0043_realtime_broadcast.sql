-- Realtime by Broadcast from Database: each job change goes to its owner's private topic.
--
-- Why: with `postgres_changes` (0028) Realtime checks every change against every
-- subscriber, on one thread per table, and Supabase advises against it at scale. A
-- trigger now sends each change of a job a user can see to the private topic
-- `user:<user_id>:jobs` through `realtime.broadcast_changes` (the payload is Postgres
-- Changes' shape: record, old_record, operation, table, schema), and an RLS policy on
-- `realtime.messages` lets only that user join the topic. The publication of 0028 stays
-- for small projects; the README shows both subscriptions.
--
-- Only the columns a user watches make an update worth a message: a lease renewal or a
-- worker's bookkeeping sends nothing. A new job sends nothing either: the request's own
-- answer carries its row, and a message per request halved the request path's rate
-- (0.57x a bare INSERT at 32 clients without it, 0.29x with it; docs/performance.md). Where the database has no `realtime` schema (a
-- plain PostgreSQL without the compat layer), nothing is created.
create or replace function vidanim_private.broadcast_video_job_change()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  -- not a definer: every write to video_jobs runs in a service function owned by the migrator
  perform realtime.broadcast_changes(
    'user:' || coalesce(new.user_id, old.user_id)::text || ':jobs',
    tg_op, tg_op, tg_table_name, tg_table_schema, new, old);
  return null;
end
$$;

comment on function vidanim_private.broadcast_video_job_change() is
  'Trigger: sends a job''s change to its owner''s private Realtime topic user:<user_id>:jobs.';

revoke execute on function vidanim_private.broadcast_video_job_change() from public;

do $$
begin
  if to_regprocedure('realtime.broadcast_changes(text, text, text, text, text, record, record, text)') is null
     or to_regclass('realtime.messages') is null then
    return;
  end if;
  drop trigger if exists video_jobs_broadcast_update on public.video_jobs;
  create trigger video_jobs_broadcast_update
    after update on public.video_jobs
    for each row
    when (old.status is distinct from new.status
          or old.provider is distinct from new.provider
          or old.provider_status is distinct from new.provider_status
          or old.progress is distinct from new.progress
          or old.queue_position is distinct from new.queue_position
          or old.waiting_reason is distinct from new.waiting_reason
          or old.output_video_path is distinct from new.output_video_path
          or old.error_code is distinct from new.error_code)
    execute function vidanim_private.broadcast_video_job_change();
  drop policy if exists "Users can receive the broadcasts of their own jobs" on realtime.messages;
  create policy "Users can receive the broadcasts of their own jobs"
    on realtime.messages for select
    to authenticated
    using (
      realtime.messages.extension = 'broadcast'
      and (select realtime.topic()) = 'user:' || (select auth.uid())::text || ':jobs'
    );
end
$$;
