-- The two private storage buckets.
--
-- Why: input images and output videos belong to one user each and are served only
-- through signed URLs with an expiry. Both buckets are private (`public = false`)
-- and typed; a re-run of this migration puts them back to private if someone made
-- them public by hand. `supabase/config.toml` declares the same buckets for the
-- local Supabase stack.
insert into storage.buckets (id, name, public, file_size_limit, allowed_mime_types)
values
  ('video-inputs', 'video-inputs', false, 10 * 1024 * 1024,
   array['image/png', 'image/jpeg', 'image/webp']),
  ('video-outputs', 'video-outputs', false, 2::bigint * 1024 * 1024 * 1024,
   array['video/mp4'])
on conflict (id) do update
  set public = false,
      file_size_limit = excluded.file_size_limit,
      allowed_mime_types = excluded.allowed_mime_types;
