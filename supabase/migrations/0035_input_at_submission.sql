-- The input image is looked at again when the worker submits, not only when the job was requested.
--
-- Why: the request checks the image's recorded size against the bucket's limit
-- (0020), but the user may replace their own object afterwards (the storage policies
-- let a user overwrite what is in their folder), with 5 GB or with another type. The
-- worker then signed and submitted whatever was there, and a provider would refuse
-- it, or worse, fetch it, after payment. `check_video_job_input` answers, from
-- `storage.objects` (what Storage holds, whatever key Storage is called with), whether
-- the job's input is there and still within the bucket's size limit and types; the
-- worker asks it right before signing, and fails a job whose input changed beyond the
-- limits (once: the failure refunds its unit) with a message that says why.
create or replace function public.check_video_job_input(p_job_id uuid)
returns table (present boolean, size_bytes bigint, mimetype text, problem text)
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_path text;
  v_size bigint;
  v_type text;
  v_found boolean;
  v_limit bigint;
  v_types text[];
begin
  select j.input_image_path into v_path from public.video_jobs j where j.id = p_job_id;
  if not found then
    raise exception 'video job % not found', p_job_id using errcode = 'PT404';
  end if;
  select b.file_size_limit, b.allowed_mime_types into v_limit, v_types
    from storage.buckets b where b.id = 'video-inputs';
  select true, (o.metadata ->> 'size')::bigint, o.metadata ->> 'mimetype'
    into v_found, v_size, v_type
    from storage.objects o
   where o.bucket_id = 'video-inputs' and o.name = v_path;
  if v_found is null then
    return query select false, null::bigint, null::text, null::text;
    return;
  end if;
  if v_size is not null and v_limit is not null and v_size > v_limit then
    return query select true, v_size, v_type,
      format('The input image was replaced after the request with one of %s bytes; at most %s bytes are accepted. '
             'Upload a smaller image and make a new request.', v_size, v_limit);
    return;
  end if;
  if v_types is not null and cardinality(v_types) > 0 and (v_type is null or not (lower(v_type) = any (v_types))) then
    return query select true, v_size, v_type,
      format('The input image was replaced after the request with a file of type %s, which is not an accepted image '
             'type (%s). Upload a PNG, JPEG or WebP image and make a new request.',
             coalesce(v_type, 'unknown'), array_to_string(v_types, ', '));
    return;
  end if;
  return query select true, v_size, v_type, null::text;
end
$$;

comment on function public.check_video_job_input(uuid) is
  'Service role only: whether a job''s input image is stored, its size and type, and why it may not be submitted (null: it may).';

revoke execute on function public.check_video_job_input(uuid) from public, anon, authenticated, service_role;
grant execute on function public.check_video_job_input(uuid) to service_role;
