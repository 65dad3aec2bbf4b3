-- Storage's breaker wakes the jobs it held.
--
-- Why: a Storage key that is refused (revoked, rotated, of another project) is the
-- operator's fault and the same for every job, so the worker keeps it as a breaker of its
-- own among the providers' (provider = 'storage', kind 'credentials'): one alert, one
-- probe, and the other jobs wait with `storage_unavailable` without asking Storage. When
-- the probe finds the key fixed and closes the breaker, those jobs (queued ones before
-- their submission, processing ones with a finished video to store) become due at once,
-- as jobs waiting for providers do when a provider's breaker closes.

create or replace function public.close_video_provider_breaker(p_provider text)
returns boolean
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_closed integer;
begin
  update vidanim_private.video_provider_breakers b
     set state = 'closed', kind = null, reason = null, open_until = null,
         probe_job_id = null, probe_until = null, updated_at = now()
   where b.provider = p_provider and b.state <> 'closed';
  get diagnostics v_closed = row_count;
  if v_closed = 1 and p_provider = 'storage' then
    update public.video_jobs j
       set next_attempt_at = now()
     where j.status in ('queued', 'processing') and j.waiting_reason = 'storage_unavailable'
       and j.next_attempt_at > now();
  elsif v_closed = 1 then
    update public.video_jobs j
       set next_attempt_at = now()
     where j.status = 'queued' and j.waiting_reason = 'providers_unavailable' and j.next_attempt_at > now();
  end if;
  return v_closed = 1;
end
$$;

comment on function public.close_video_provider_breaker(text) is
  'Service role only: closes a provider''s breaker, or Storage''s (''storage''), (true when it was not closed) and makes the jobs waiting for it due now.';

revoke execute on function public.close_video_provider_breaker(text) from public, anon, authenticated, service_role;
grant execute on function public.close_video_provider_breaker(text) to service_role;
