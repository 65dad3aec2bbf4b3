-- The input bucket's limits, readable by the users who upload into it.
--
-- Why: a client should refuse an image that Storage or a provider would refuse
-- *before* it uploads it or charges a quota unit, and tell the user why. The size
-- limit and the allowed types live in storage.buckets, which users cannot read
-- (RLS, no policy, on Supabase as here). This function hands them exactly those two
-- values of the one bucket they upload into, and nothing else. Invoker wrapper in
-- `public` over a definer function in vidanim_private, as for the rest of the user API.
create or replace function vidanim_private.get_video_input_limits()
returns table (file_size_limit bigint, allowed_mime_types text[])
language sql
stable
security definer
set search_path = ''
as $$
  select b.file_size_limit, b.allowed_mime_types
    from storage.buckets b
   where b.id = 'video-inputs'
     and vidanim_private.require_user() is not null
$$;

comment on function vidanim_private.get_video_input_limits() is
  'Privileged part of public.get_video_input_limits(): the video-inputs bucket''s size limit and types.';

revoke execute on function vidanim_private.get_video_input_limits() from public;
grant execute on function vidanim_private.get_video_input_limits() to authenticated;

create or replace function public.get_video_input_limits()
returns table (file_size_limit bigint, allowed_mime_types text[])
language sql
stable
security invoker
set search_path = ''
as $$
  select * from vidanim_private.get_video_input_limits()
$$;

comment on function public.get_video_input_limits() is
  'The largest input image (bytes) and the image types the video-inputs bucket accepts.';

revoke execute on function public.get_video_input_limits() from public, anon, authenticated, service_role;
grant execute on function public.get_video_input_limits() to authenticated;
