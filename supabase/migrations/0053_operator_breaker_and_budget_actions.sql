-- Operators open or close a provider's breaker and set the daily cap, audited.
--
-- Why: the breakers (0023) and the cap (0024) had service functions for the worker
-- and the CLI, with no record of who changed them. The dashboard's buttons call these
-- wrappers, which do the same and write the audit row (0050) in the same transaction.
-- An operator's open is an ordinary open of kind 'operator' for p_open_seconds: when
-- it is due a probe may close it, as after any fault; to keep a provider off for good,
-- pause its submissions (0051) instead.
create or replace function public.operator_set_video_provider_breaker(
  p_provider text,
  p_state text,
  p_actor text,
  p_reason text default null,
  p_open_seconds double precision default 3600
)
returns boolean
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_changed boolean;
  v_before text;
begin
  perform vidanim_private.check_operator_actor(p_actor);
  perform vidanim_private.check_provider(p_provider);
  if p_state is null or p_state not in ('open', 'closed') then
    raise exception 'state must be open or closed' using errcode = '22023';
  end if;
  if p_state = 'open' then
    select o.previous_state into v_before
      from public.open_video_provider_breaker(
        p_provider, 'operator', coalesce(nullif(p_reason, ''), 'opened by ' || p_actor), p_open_seconds) o;
    v_changed := v_before is distinct from 'open';
  else
    v_changed := public.close_video_provider_breaker(p_provider);
  end if;
  perform vidanim_private.record_operator_action(
    p_actor, p_state || '_breaker', jsonb_build_object('provider', p_provider, 'reason', p_reason), 0);
  return v_changed;
end
$$;

comment on function public.operator_set_video_provider_breaker(text, text, text, text, double precision) is
  'Service role only: an operator opens (for p_open_seconds) or closes a provider''s breaker; audited.';

create or replace function public.operator_set_video_daily_budget(p_daily_cap_usd numeric, p_actor text)
returns void
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform vidanim_private.check_operator_actor(p_actor);
  perform public.set_video_daily_budget(p_daily_cap_usd);
  perform vidanim_private.record_operator_action(
    p_actor, 'set_daily_budget', jsonb_build_object('daily_cap_usd', p_daily_cap_usd), 0);
end
$$;

comment on function public.operator_set_video_daily_budget(numeric, text) is
  'Service role only: set_video_daily_budget with an audit row (null: no cap).';

do $$
declare
  f text;
begin
  foreach f in array array[
    'public.operator_set_video_provider_breaker(text, text, text, text, double precision)',
    'public.operator_set_video_daily_budget(numeric, text)'
  ] loop
    execute format('revoke execute on function %s from public, anon, authenticated, service_role', f);
    execute format('grant execute on function %s to service_role', f);
  end loop;
end
$$;
