-- The operators' audit trail: who did what, when, to how many jobs.
--
-- Why: the dashboard (docs/dashboard.md) and the CLI let an operator cancel and retry
-- jobs one at a time or by filter, pause submissions, open or close a breaker and set
-- the daily cap. Each of those changes other people's jobs or our spending, so each is
-- a service function that writes one row here in the same transaction as the change:
-- an action that happened is always recorded, and a recorded action always happened.
-- Dry runs are not actions and are not recorded.
create table if not exists vidanim_private.video_operator_actions (
  id bigint generated always as identity primary key,
  -- 'dashboard:alice@example.com', 'cli:root': the caller names itself, the role it signed in with decides
  actor text not null check (char_length(actor) between 1 and 200),
  action text not null check (action ~ '^[a-z_]{1,64}$'),
  -- the job, filter, provider or amount the action was given
  detail jsonb not null default '{}'::jsonb check (jsonb_typeof(detail) = 'object'),
  jobs integer not null default 0 check (jobs >= 0),
  created_at timestamptz not null default now()
);

comment on table vidanim_private.video_operator_actions is
  'One row per operator action (dashboard or CLI), written by the action''s own service function.';

create index if not exists video_operator_actions_created_idx
  on vidanim_private.video_operator_actions (created_at desc);

alter table vidanim_private.video_operator_actions enable row level security;
revoke all on table vidanim_private.video_operator_actions from public, anon, authenticated, service_role;
revoke all on sequence vidanim_private.video_operator_actions_id_seq from public, anon, authenticated, service_role;

-- Every action function calls this first: a named actor, or nothing happens.
create or replace function vidanim_private.check_operator_actor(p_actor text)
returns void
language plpgsql
immutable
set search_path = ''
as $$
begin
  if p_actor is null or char_length(p_actor) not between 1 and 200 or p_actor ~ '[[:cntrl:]]' then
    raise exception 'actor must be 1-200 printable characters (who acts)' using errcode = '22023';
  end if;
end
$$;

create or replace function vidanim_private.record_operator_action(
  p_actor text,
  p_action text,
  p_detail jsonb,
  p_jobs integer
)
returns void
language sql
set search_path = ''
as $$
  insert into vidanim_private.video_operator_actions (actor, action, detail, jobs)
  values (p_actor, p_action, coalesce(p_detail, '{}'::jsonb), coalesce(p_jobs, 0))
$$;

revoke execute on function vidanim_private.check_operator_actor(text) from public;
revoke execute on function vidanim_private.record_operator_action(text, text, jsonb, integer) from public;

-- Service role (operators): the latest actions, newest first.
create or replace function public.get_video_operator_actions(p_limit integer default 50)
returns setof vidanim_private.video_operator_actions
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
  if p_limit is null or p_limit < 1 or p_limit > 1000 then
    raise exception 'limit must be between 1 and 1000' using errcode = '22023';
  end if;
  return query
    select * from vidanim_private.video_operator_actions a order by a.created_at desc, a.id desc limit p_limit;
end
$$;

comment on function public.get_video_operator_actions(integer) is
  'Service role only: the operators'' latest actions (who, what, when, how many jobs).';

revoke execute on function public.get_video_operator_actions(integer) from public, anon, authenticated, service_role;
grant execute on function public.get_video_operator_actions(integer) to service_role;
