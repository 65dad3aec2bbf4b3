-- Storage policies: each user reaches only its own folder of the vidanim buckets.
--
-- Why: object names are '{user_id}/...'. A user may upload, replace, read and delete
-- its own input images, and read (so sign URLs for) its own output videos. Nobody
-- but the service role (which bypasses RLS) writes outputs. Names with empty, '.'
-- or '..' segments are refused on write, whatever the Storage server does with them.
-- `(select auth.uid())` is evaluated once per statement (splinter lint 0003).
drop policy if exists "Users can upload images to their own folder of video-inputs" on storage.objects;
create policy "Users can upload images to their own folder of video-inputs"
  on storage.objects for insert
  to authenticated
  with check (
    bucket_id = 'video-inputs'
    and (storage.foldername(name))[1] = ((select auth.uid())::text)
    and lower(storage.extension(name)) in ('png', 'jpg', 'jpeg', 'webp')
    and name !~ '(^|/)(\.{1,2})?(/|$)'
    and position(E'\\' in name) = 0
  );

drop policy if exists "Users can replace images in their own folder of video-inputs" on storage.objects;
create policy "Users can replace images in their own folder of video-inputs"
  on storage.objects for update
  to authenticated
  using (
    bucket_id = 'video-inputs'
    and (storage.foldername(name))[1] = ((select auth.uid())::text)
  )
  with check (
    bucket_id = 'video-inputs'
    and (storage.foldername(name))[1] = ((select auth.uid())::text)
    and lower(storage.extension(name)) in ('png', 'jpg', 'jpeg', 'webp')
    and name !~ '(^|/)(\.{1,2})?(/|$)'
    and position(E'\\' in name) = 0
  );

drop policy if exists "Users can read their own files in the video buckets" on storage.objects;
create policy "Users can read their own files in the video buckets"
  on storage.objects for select
  to authenticated
  using (
    bucket_id in ('video-inputs', 'video-outputs')
    and (storage.foldername(name))[1] = ((select auth.uid())::text)
  );

drop policy if exists "Users can delete images in their own folder of video-inputs" on storage.objects;
create policy "Users can delete images in their own folder of video-inputs"
  on storage.objects for delete
  to authenticated
  using (
    bucket_id = 'video-inputs'
    and (storage.foldername(name))[1] = ((select auth.uid())::text)
  );
