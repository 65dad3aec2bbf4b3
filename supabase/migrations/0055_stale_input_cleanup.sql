-- Input images that no job will read again.
--
-- Why: an image is uploaded before its request. When the request is refused (quota,
-- options, a bad image) or its job ends, the image stayed in `video-inputs` for good:
-- storage grew with every refusal and nothing removed it. `vidanim storage cleanup`
-- now removes inputs on the same schedule as outputs: an image older than the TTL
-- that no queued or processing job names. This function only lists them (the service
-- role's view of storage.objects, whatever Storage's own key can see); Storage deletes
-- them, and the CLI checks storage.objects again for what remains.
--
-- An image is listed only once it is older than the TTL, so a fresh upload waiting for
-- its request is never taken; a job requested on a listed image in the moment before its
-- deletion fails `input_missing` at submission, as for any image deleted by its user.

-- The bounds every cleanup takes (as expire_video_outputs checks its own).
create or replace function vidanim_private.check_video_cleanup_window(p_older_than interval, p_limit integer)
returns void
language plpgsql
immutable
set search_path = ''
as $$
begin
  if p_older_than is null or p_older_than < interval '0' or p_limit is null or p_limit not between 1 and 100000 then
    raise exception 'the age must be a non-negative interval and the limit between 1 and 100000'
      using errcode = '22023';
  end if;
end
$$;

revoke execute on function vidanim_private.check_video_cleanup_window(interval, integer) from public;

create or replace function public.list_stale_video_inputs(p_older_than interval, p_limit integer default 1000)
returns table (name text, created_at timestamptz)
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
  perform vidanim_private.check_video_cleanup_window(p_older_than, p_limit);
  return query
  select o.name, o.created_at
    from storage.objects o
   where o.bucket_id = 'video-inputs'
     and o.created_at < now() - p_older_than
     and not exists (
       select 1 from public.video_jobs j
        where j.input_image_path = o.name and j.status in ('queued', 'processing')
     )
   order by o.created_at
   limit p_limit;
end
$$;

comment on function public.list_stale_video_inputs(interval, integer) is
  'Service role only: input images older than p_older_than that no queued or processing job names, oldest first.';

revoke execute on function public.list_stale_video_inputs(interval, integer) from public, anon, authenticated, service_role;
grant execute on function public.list_stale_video_inputs(interval, integer) to service_role;
