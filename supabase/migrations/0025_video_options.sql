-- The options a request may carry: only those the providers document, each checked.
--
-- Why: `options` was any JSON object up to 16 KiB, passed on to the providers. An
-- option no provider knows is silently dropped (the user pays for a video that
-- ignores it) and a bad value is refused by the provider after the job was charged.
-- A job may run on fal or Runway, so each option below is checked against what the
-- providers document, and anything else is refused with 22023 naming the field:
--   duration         5 or 10 (seconds)       fal Kling 2.1 ("5" | "10"); Runway gen4_turbo
--   ratio            Runway's gen4_turbo ratios (fal takes the image's own ratio)
--   seed             0-4294967295            Runway
--   negative_prompt  text, <= 2500 chars      fal
--   cfg_scale        0-1                      fal
-- The check runs as a trigger on every new job, after the request's own checks (0011).
create or replace function vidanim_private.check_video_options(p_options jsonb)
returns void
language plpgsql
immutable
set search_path = ''
as $$
declare
  v_key text;
  v_value jsonb;
  v_ratios constant text[] := array['1280:720', '720:1280', '1104:832', '832:1104', '960:960', '1584:672'];
begin
  for v_key, v_value in select * from jsonb_each(coalesce(p_options, '{}'::jsonb)) loop
    case v_key
      when 'duration' then
        if jsonb_typeof(v_value) not in ('number', 'string') or (v_value #>> '{}') not in ('5', '10') then
          raise exception 'options.duration must be 5 or 10 (seconds)' using errcode = '22023';
        end if;
      when 'ratio' then
        if jsonb_typeof(v_value) <> 'string' or not (v_value #>> '{}') = any (v_ratios) then
          raise exception 'options.ratio must be one of %', array_to_string(v_ratios, ', ') using errcode = '22023';
        end if;
      when 'seed' then
        -- each test alone: SQL does not promise to evaluate an OR from left to right
        if jsonb_typeof(v_value) <> 'number' then
          raise exception 'options.seed must be a whole number from 0 to 4294967295' using errcode = '22023';
        end if;
        if (v_value #>> '{}') !~ '^[0-9]+$' or (v_value #>> '{}')::numeric > 4294967295 then
          raise exception 'options.seed must be a whole number from 0 to 4294967295' using errcode = '22023';
        end if;
      when 'negative_prompt' then
        if jsonb_typeof(v_value) <> 'string' or char_length(v_value #>> '{}') > 2500 then
          raise exception 'options.negative_prompt must be text of at most 2500 characters' using errcode = '22023';
        end if;
      when 'cfg_scale' then
        if jsonb_typeof(v_value) <> 'number' then
          raise exception 'options.cfg_scale must be a number from 0 to 1' using errcode = '22023';
        end if;
        if (v_value #>> '{}')::numeric not between 0 and 1 then
          raise exception 'options.cfg_scale must be a number from 0 to 1' using errcode = '22023';
        end if;
      else
        raise exception 'options.% is not an option vidanim accepts (duration, ratio, seed, negative_prompt, cfg_scale)',
          v_key using errcode = '22023';
    end case;
  end loop;
end
$$;

comment on function vidanim_private.check_video_options(jsonb) is
  'Raises 22023 naming the field when a job''s options hold anything the providers do not document.';

revoke execute on function vidanim_private.check_video_options(jsonb) from public;

create or replace function vidanim_private.check_new_video_job_options()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  perform vidanim_private.check_video_options(new.options);
  return new;
end
$$;

comment on function vidanim_private.check_new_video_job_options() is 'Trigger: a new job''s options are checked.';

revoke execute on function vidanim_private.check_new_video_job_options() from public;

drop trigger if exists video_jobs_check_options on public.video_jobs;
create trigger video_jobs_check_options
  before insert on public.video_jobs
  for each row
  execute function vidanim_private.check_new_video_job_options();
