-- Input names and sizes as Storage has them: what Storage refuses, the SQL API refuses.
--
-- Why: the Storage server accepts object names only in [A-Za-z0-9_/!.*'() &$=@;:+,?-]
-- (else InvalidKey), and enforces a bucket's file_size_limit only when an upload
-- announces a Content-Length: a chunked upload of any size is stored. A request for
-- an image Storage could never have accepted, or one over the bucket's limit, is
-- refused here with 22023 before any quota is charged, instead of by a provider
-- after payment. The rest of check_video_request is as in 0011; it becomes `stable`
-- because it now reads the image's recorded size.
create or replace function vidanim_private.check_video_request(
  p_user_id uuid,
  p_input_image_path text,
  p_prompt text,
  p_options jsonb,
  p_client_request_id text
)
returns void
language plpgsql
stable
set search_path = ''
as $$
declare
  v_segments text[];
  v_size bigint;
  v_limit bigint;
begin
  if p_input_image_path is null or p_input_image_path = '' then
    raise exception 'input_image_path is required' using errcode = '22023';
  end if;
  if char_length(p_input_image_path) > 1024 then
    raise exception 'input_image_path is longer than 1024 characters' using errcode = '22023';
  end if;
  if p_input_image_path ~ '[[:cntrl:]]' then
    raise exception 'input_image_path contains a control character' using errcode = '22023';
  end if;
  if position(E'\\' in p_input_image_path) > 0 then
    raise exception 'input_image_path contains a backslash' using errcode = '22023';
  end if;
  if left(p_input_image_path, 1) = '/' then
    raise exception 'input_image_path must be relative to the bucket (no leading slash)' using errcode = '22023';
  end if;
  v_segments := string_to_array(p_input_image_path, '/');
  if array_position(v_segments, '') is not null
     or array_position(v_segments, '.') is not null
     or array_position(v_segments, '..') is not null then
    raise exception 'input_image_path has an empty, "." or ".." segment' using errcode = '22023';
  end if;
  if cardinality(v_segments) < 2 or v_segments[1] <> p_user_id::text then
    raise exception 'input_image_path must be inside your own folder "%/"', p_user_id
      using errcode = '22023';
  end if;
  if v_segments[cardinality(v_segments)] !~* '^.+\.(png|jpg|jpeg|webp)$' then
    raise exception 'input_image_path must name a .png, .jpg, .jpeg or .webp image' using errcode = '22023';
  end if;
  -- The Storage server's own rule for object names (else it answers InvalidKey).
  if p_input_image_path !~ '^[A-Za-z0-9_/!.*''() &$=@;:+,?-]+$' then
    raise exception 'input_image_path may hold only letters, digits, spaces and _/!.*''()&$=@;:+,?-'
      using errcode = '22023';
  end if;
  -- An image Storage holds although it is over the bucket's limit (a chunked upload
  -- skips the server's size check) would only be refused by a provider, after payment.
  select (o.metadata ->> 'size')::bigint, b.file_size_limit
    into v_size, v_limit
    from storage.objects o
    join storage.buckets b on b.id = o.bucket_id
   where o.bucket_id = 'video-inputs' and o.name = p_input_image_path;
  if v_size is not null and v_limit is not null and v_size > v_limit then
    raise exception 'the input image is % bytes; the video-inputs bucket accepts at most % bytes', v_size, v_limit
      using errcode = '22023';
  end if;

  if p_prompt is not null and char_length(p_prompt) > 2000 then
    raise exception 'prompt is longer than 2000 characters' using errcode = '22023';
  end if;

  if p_options is null or jsonb_typeof(p_options) <> 'object' then
    raise exception 'options must be a JSON object' using errcode = '22023';
  end if;
  if octet_length(p_options::text) > 16384 then
    raise exception 'options is larger than 16 KiB' using errcode = '22023';
  end if;

  if p_client_request_id is not null and p_client_request_id !~ '^[A-Za-z0-9._:-]{1,255}$' then
    raise exception 'client_request_id must be 1-255 characters of A-Z, a-z, 0-9, ".", "_", ":" or "-"'
      using errcode = '22023';
  end if;
end
$$;

comment on function vidanim_private.check_video_request(uuid, text, text, jsonb, text) is
  'Raises 22023 with a message naming the field when a job request is malformed.';

revoke execute on function vidanim_private.check_video_request(uuid, text, text, jsonb, text) from public;
