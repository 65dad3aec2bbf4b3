"""Plant known bugs one at a time and check that the test meant to catch each one fails.

    python scripts/plant_bugs.py            # every planted bug
    python scripts/plant_bugs.py 2 7        # only these rows

A test that passes with its bug in place proves nothing. Each row below is one
plausible one-line bug, the file it goes into, and the test that must catch it.
The script edits the file, runs that test, restores the file (always), and prints
one line per row: `caught` when the test failed, `MISSED` when it passed. Exit
code 1 if any bug was missed. A row whose line is not exactly once in its file, or
that plants into an SQL function a later migration replaces (a bug nobody runs),
stops the script with its number: move it to the live definition. docs/testing.md
explains the habit; add a row here when you add a test for a bug that once slipped
through.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Plant:
    bug: str
    path: str
    original: str
    planted: str
    test: str


PLANTS = [
    Plant(
        "the storage UPDATE policy loses its folder check in `with check`",
        "supabase/migrations/0010_storage_policies.sql",
        "  )\n  with check (\n    bucket_id = 'video-inputs'\n"
        "    and (storage.foldername(name))[1] = ((select auth.uid())::text)\n"
        "    and lower(storage.extension(name))",
        "  )\n  with check (\n    bucket_id = 'video-inputs'\n    and lower(storage.extension(name))",
        "tests/db/test_storage_policies.py::"
        "test_a_user_cannot_rename_its_objects_into_another_folder_with_an_unfiltered_update",
    ),
    Plant(
        "claiming uses `for update` without `skip locked`",
        "supabase/migrations/0016_worker_api.sql",
        "     for update skip locked\n",
        "     for update\n",
        "tests/db/test_worker_api.py::test_a_job_locked_by_a_slow_transaction_does_not_stall_claims_of_the_others",
    ),
    Plant(
        "the refund's once-guard (`quota_refunded_at is null`) removed",
        "supabase/migrations/0033_submissions_in_flight.sql",
        "  if new.quota_refunded_at is null\n     and old.status",
        "  if old.status",
        "tests/db/test_quota.py::test_a_refund_reached_twice_by_a_path_around_the_state_machine_is_given_once",
    ),
    Plant(
        "the refund's `used > 0` guard removed",
        "supabase/migrations/0033_submissions_in_flight.sql",
        "   where u.user_id = p_user_id and u.day = p_day and u.used > 0",
        "   where u.user_id = p_user_id and u.day = p_day",
        "tests/db/test_quota.py::test_a_job_failing_after_its_users_quota_was_reset_still_ends_failed",
    ),
    Plant(
        "Runway's `x-should-retry: true` no longer makes a 4xx transient",
        "src/vidanim/providers/runway.py",
        'if should_retry == "true" or (should_retry != "false"',
        'if (should_retry != "false"',
        "tests/providers/test_runway.py::test_a_4xx_that_runway_marks_retryable_is_transient",
    ),
    Plant(
        "backoff without jitter (the delay is just the step)",
        "src/vidanim/worker/backoff.py",
        "delay: float = step * (1 - (rng or random).uniform(0, jitter))",
        "delay: float = step",
        "tests/worker/test_backoff.py::test_two_seeds_draw_different_delays_within_the_jitter_bounds",
    ),
    Plant(
        "a lost lease found at renewal no longer stops the job",
        "src/vidanim/worker/runner.py",
        "            elif not state.held:\n                control.lost.set()\n",
        "",
        "tests/worker/test_crashes.py::test_a_lease_taken_over_during_a_long_poll_makes_the_worker_leave_the_job",
    ),
    Plant(
        "a token without `exp` is accepted",
        "src/vidanim/client/postgres.py",
        '"require": ["exp", "sub"]',
        '"require": ["sub"]',
        "tests/client/test_client.py::test_the_postgres_transport_refuses_a_token_that_never_expires",
    ),
    Plant(
        "the CLI's operator commands run as the connecting login, not `service_role`",
        "src/vidanim/commands/common.py",
        "        cur.execute(SET_SERVICE_ROLE)\n        yield cur",
        "        yield cur",
        "tests/test_cli_ops.py::test_operator_commands_act_as_service_role_not_as_the_connecting_login",
    ),
    Plant(
        "an image a provider refused is sent to the next provider whatever its limits",
        "src/vidanim/worker/submit.py",
        "                    skip.update(set(later) - set(accepting))\n",
        "",
        "tests/worker/test_flows.py::test_an_image_refused_by_fal_that_runway_would_not_take_fails_once_and_refunds",
    ),
    Plant(
        "the client's local storage reads the bucket limits as the user, whom RLS shows none",
        "src/vidanim/client/postgres.py",
        '"select file_size_limit, allowed_mime_types from public.get_video_input_limits()"',
        "\"select file_size_limit, allowed_mime_types from storage.buckets where id = 'video-inputs'\"",
        "tests/client/test_client.py::test_local_storage_refuses_what_the_storage_server_refuses_with_its_codes",
    ),
    Plant(
        "uploads share keep-alive connections, which a refused upload leaves unread",
        "src/vidanim/storage/supabase.py",
        '            "Connection": "close",\n',
        "",
        "tests/storage/test_supabase.py::"
        "test_a_duplicate_large_upload_is_known_as_stored_and_does_not_poison_the_next_call",
    ),
    Plant(
        "info uses the route that answers a wrong key as anon",
        "src/vidanim/storage/supabase.py",
        'f"/object/info/authenticated/{self._key(bucket, path)}"',
        'f"/object/info/{self._key(bucket, path)}"',
        "tests/storage/test_supabase.py::test_a_wrong_key_is_an_error_never_a_missing_object",
    ),
    Plant(
        "a Storage refusal of the worker's key fails the user's job",
        "src/vidanim/worker/control.py",
        '        await self._defer(job, "storage_unavailable", delay)',
        '        await self._fail(job, "storage_unavailable", reason)',
        "tests/worker/test_deliver_storage_faults.py::"
        "test_a_wrong_service_key_fails_no_job_and_the_right_one_completes_each_with_one_payment",
    ),
    Plant(
        "the output bucket's size limit is not checked before streaming",
        "src/vidanim/worker/deliver.py",
        "max_bytes = min(self.settings.output_max_bytes, limit) if limit else self.settings.output_max_bytes",
        "max_bytes = self.settings.output_max_bytes",
        "tests/worker/test_deliver_storage_faults.py::test_a_video_over_the_output_buckets_limit_fails_its_job_once_within_seconds",
    ),
    Plant(
        "storage cleanup trusts a DELETE's 200 and ignores the list of what it deleted",
        "src/vidanim/commands/storage.py",
        "            unconfirmed = [name for name in batch if name not in deleted]\n",
        "            unconfirmed = []\n",
        "tests/test_cli_ops.py::test_storage_cleanup_names_what_storage_did_not_delete_and_those_jobs_keep_their_video",
    ),
    Plant(
        "an operator's fault at every provider fails or retries the job instead of making it wait",
        "src/vidanim/worker/gate.py",
        "        if errors and all(isinstance(e, OperatorFault | TransientProviderError) for e in errors):",
        "        if False:",
        "tests/worker/test_gate_breakers.py::"
        "test_an_account_fault_on_both_providers_fails_no_job_and_a_restart_after_the_fix_runs_each_once",
    ),
    Plant(
        "the operator is alerted once per job instead of once per breaker state change",
        "src/vidanim/worker/gate.py",
        '        if previous == "closed":',
        "        if True:",
        "tests/worker/test_gate_breakers.py::"
        "test_an_account_fault_on_both_providers_fails_no_job_and_a_restart_after_the_fix_runs_each_once",
    ),
    Plant(
        "the budget check lets the reservation that crosses the cap through",
        "supabase/migrations/0036_job_internals_private.sql",
        "  if v_cap is not null and v_committed + p_cost_usd > v_cap then",
        "  if v_cap is not null and v_committed > v_cap then",
        "tests/worker/test_gate_budget.py::test_four_worker_processes_and_500_jobs_never_commit_more_than_the_cap",
    ),
    Plant(
        "a provider's concurrency cap is not enforced",
        "supabase/migrations/0051_submission_pauses.sql",
        "    if v_in_flight >= v_max then",
        "    if v_in_flight > v_max + 100 then",
        "tests/worker/test_gate_breakers.py::"
        "test_a_provider_cap_holds_across_every_worker_and_every_job_still_completes",
    ),
    Plant(
        "a notification does not wake the idle worker",
        "src/vidanim/worker/runner.py",
        "                        self._due_at(notify.payload)",
        "                        pass",
        "tests/worker/test_wakeups.py::test_an_idle_worker_claims_a_new_job_at_once",
    ),
    Plant(
        "progress is written on every poll, not at most once a second",
        "src/vidanim/worker/follow.py",
        "        if value == state.written or now - state.at < PROGRESS_INTERVAL_SECONDS:",
        "        if value == state.written:",
        "tests/worker/test_follow_progress.py::"
        "test_the_providers_progress_reaches_the_job_as_it_moves_and_no_faster_than_once_a_second",
    ),
    Plant(
        "an option no provider documents is accepted",
        "supabase/migrations/0025_video_options.sql",
        "        raise exception 'options.% is not an option vidanim accepts",
        "        raise notice 'options.% is not an option vidanim accepts",
        "tests/db/test_request_video_animation.py::"
        "test_undocumented_options_and_bad_values_are_refused_naming_the_field",
    ),
    Plant(
        "a worker with no healthy provider reports itself ready",
        "src/vidanim/worker/http.py",
        "        if not usable:",
        "        if False:",
        "tests/worker/test_metrics.py::test_waiting_jobs_and_open_breakers_show_and_readiness_follows_the_providers",
    ),
    Plant(
        "the client lets an image of any aspect ratio through",
        "src/vidanim/images.py",
        "    if not rules.min_aspect <= aspect <= rules.max_aspect:",
        "    if False:",
        "tests/test_images.py::test_each_bad_image_is_refused_naming_the_rule_and_the_value",
    ),
    Plant(
        "a webhook delivery signed long ago is accepted (no ±300 s window)",
        "src/vidanim/webhooks/fal.py",
        "        if abs(self.clock() - sent) > self.tolerance:",
        "        if False:",
        "tests/webhooks/test_fal.py::test_a_timestamp_more_than_300_s_away_is_stale",
    ),
    Plant(
        "every unknown signature refetches fal's keys (no rate limit)",
        "src/vidanim/webhooks/fal.py",
        "            if not force and self.fetched_at is not None"
        " and self.clock() - self.fetched_at < self.refresh_interval:",
        "            if False:",
        "tests/webhooks/test_fal.py::test_unknown_signatures_refresh_the_keys_at_most_once_a_minute",
    ),
    Plant(
        "a duplicate delivery is handled as a new one",
        "supabase/migrations/0034_delivery_trust.sql",
        "  on conflict (provider, request_id) do nothing;\n  if not found then",
        "  on conflict (provider, request_id) do nothing;\n  if false then",
        "tests/db/test_provider_deliveries.py::test_a_duplicate_delivery_is_counted_and_changes_nothing",
    ),
    Plant(
        "a recorded delivery wakes nobody in other workers (no NOTIFY)",
        "supabase/migrations/0034_delivery_trust.sql",
        "    perform pg_notify('vidanim_deliveries', p_job_id::text);",
        "    null;",
        "tests/worker/test_webhooks.py::test_a_delivery_received_by_another_worker_wakes_the_worker_holding_the_job",
    ),
    Plant(
        "a submission's lost answer is retried at once like any timeout",
        "src/vidanim/providers/base.py",
        "    if submit and isinstance(exc, ANSWER_LOST):",
        "    if False:",
        "tests/worker/test_webhooks.py::test_a_lost_answer_waits_and_the_orphans_webhook_is_adopted",
    ),
    Plant(
        "a job may submit a third time after two lost answers",
        "src/vidanim/worker/gate.py",
        "MAX_UNCERTAIN_SUBMISSIONS = 2",
        "MAX_UNCERTAIN_SUBMISSIONS = 3",
        "tests/worker/test_webhooks.py::"
        "test_without_webhooks_a_second_lost_answer_ends_the_job_unpaid_and_never_submits_a_third",
    ),
    Plant(
        "the worker's HTTP server leaves Nagle on (every answer waits for a delayed ACK)",
        "src/vidanim/worker/http.py",
        "socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)",
        "socket.socket(socket.AF_INET, socket.SOCK_STREAM)",
        "tests/worker/test_http.py::test_accepted_connections_send_without_waiting_for_the_clients_ack",
    ),
    Plant(
        "the webhook endpoint reads and verifies a delivery before it checks the URL's token",
        "src/vidanim/worker/http.py",
        '            if not known:\n                raise WebhookRefused(401, BAD_TOKEN, "bad_token")',
        '            if False:\n                raise WebhookRefused(401, BAD_TOKEN, "bad_token")',
        "tests/worker/test_webhooks.py::test_a_url_without_its_token_is_refused_before_its_body_or_signature_is_read",
    ),
    Plant(
        "a submission whose answer was lost gives its budget reservation back",
        "src/vidanim/worker/gate.py",
        "        if not isinstance(exc, SubmissionUncertain):",
        "        if True:",
        "tests/worker/test_gate_budget.py::test_a_submission_whose_answer_was_lost_keeps_its_reservation",
    ),
    Plant(
        "an OK delivery alone adopts a queued job that never lost an answer (0034: anyone's fal account can sign one)",
        "supabase/migrations/0034_delivery_trust.sql",
        "        and v_job.provider = p_provider and v_job.provider_status = 'submission_uncertain' then",
        "        and v_job.provider = p_provider then",
        "tests/db/test_provider_deliveries.py::"
        "test_an_ok_delivery_for_a_job_requeued_after_its_task_at_fal_failed_is_an_orphan",
    ),
    Plant(
        "the answer naming the task the job already adopted is refused (and its task canceled)",
        "supabase/migrations/0033_submissions_in_flight.sql",
        "    return 'held';",
        "    null;",
        "tests/db/test_provider_deliveries.py::test_an_answer_naming_the_task_the_job_already_holds_is_held_not_refused",
    ),
    Plant(
        "a lost answer is not counted as uncertain",
        "supabase/migrations/0033_submissions_in_flight.sql",
        "         uncertain_submissions = j.uncertain_submissions + 1",
        "         uncertain_submissions = j.uncertain_submissions",
        "tests/db/test_provider_deliveries.py::test_a_job_waiting_after_a_lost_answer_adopts_the_request_its_delivery_names",
    ),
    Plant(
        "a new provider status keeps the old queue place",
        "supabase/migrations/0032_progress_follows_status.sql",
        "    new.progress := null;\n    new.queue_position := null;",
        "    null;",
        "tests/worker/test_follow_progress.py::test_a_new_provider_status_clears_the_progress_read_with_the_old_one",
    ),
    Plant(
        "an orphan delivery's request is left running at fal",
        "src/vidanim/worker/http.py",
        '        elif outcome == "orphan":',
        "        elif False:",
        "tests/worker/test_webhooks.py::test_late_deliveries_for_a_completed_job_are_duplicates_or_canceled_orphans",
    ),
    Plant(
        "fal's keys are cached far longer than 24 h",
        "src/vidanim/webhooks/fal.py",
        "self.clock() - self.fetched_at >= self.max_age:",
        "self.clock() - self.fetched_at >= 10 * self.max_age:",
        "tests/webhooks/test_fal.py::test_keys_are_fetched_again_after_24_hours",
    ),
    Plant(
        "the webhook endpoint reads bodies of any size",
        "src/vidanim/worker/http.py",
        "            body = await read_body(request, MAX_BODY_BYTES)",
        "            body = await read_body(request, 100 * MAX_BODY_BYTES)",
        "tests/worker/test_webhooks.py::test_the_endpoint_refuses_what_fal_did_not_send_and_records_none_of_it",
    ),
    Plant(
        "the worker never reads a recorded delivery (it waits for the fallback poll)",
        "src/vidanim/worker/follow.py",
        "        delivery = await self.db.delivery(job.id)",
        "        delivery = None",
        "tests/worker/test_webhooks.py::test_a_fal_job_completes_through_its_webhook_without_a_single_poll",
    ),
    Plant(
        "the lease rule lets a lease without an end through (a NULL comparison read as held)",
        "supabase/migrations/0030_job_submissions.sql",
        "  select coalesce(p_job.status = 'queued' and p_job.locked_by = p_worker_id"
        " and p_job.locked_until > now(), false)",
        "  select not (p_job.status <> 'queued' or p_job.locked_by is distinct from p_worker_id"
        " or p_job.locked_until <= now())",
        "tests/db/test_provider_deliveries.py::test_a_lease_without_an_end_is_nobodys_so_neither_record_takes_the_job",
    ),
    Plant(
        "a submission's lost answer is treated as an ordinary transient error",
        "src/vidanim/providers/base.py",
        "    if submit and isinstance(exc, ANSWER_LOST):",
        "    if False:",
        "tests/providers/test_base.py::test_a_submission_whose_connection_closes_after_the_task_started_is_uncertain",
    ),
    Plant(
        "fal answering 200 without a request id is retried as if nothing started",
        "src/vidanim/providers/fal.py",
        '            raise SubmissionUncertain("fal accepted',
        '            raise TransientProviderError("fal accepted',
        "tests/providers/test_base.py::test_an_accepted_submission_without_a_task_id_is_uncertain",
    ),
    Plant(
        "a connection never made counts as a lost answer (its budget reservation kept, its retry bounded)",
        "src/vidanim/providers/base.py",
        "ANSWER_LOST = (httpx.ReadTimeout,",
        "ANSWER_LOST = (httpx.ConnectError, httpx.ReadTimeout,",
        "tests/providers/test_base.py::test_a_submission_that_never_connected_is_only_transient",
    ),
    Plant(
        "every request, status polls too, is treated as a submission",
        "src/vidanim/providers/base.py",
        "*, submit: bool = False, **kwargs: Any) -> httpx.Response:",
        "*, submit: bool = True, **kwargs: Any) -> httpx.Response:",
        "tests/providers/test_base.py::test_a_status_poll_that_timed_out_is_only_transient",
    ),
    Plant(
        "a webhook timestamp that is not a number is read as 0 (refused as stale, for the wrong reason)",
        "src/vidanim/webhooks/fal.py",
        '            raise WebhookRefused(401, "the timestamp is not a number of seconds", "bad_timestamp") from None',
        "            sent = 0",
        "tests/webhooks/test_fal.py::test_a_timestamp_that_is_not_whole_seconds_is_refused_even_when_signed",
    ),
    Plant(
        "a worker given a public webhook URL but no HTTP server starts anyway (fal's deliveries go nowhere)",
        "src/vidanim/worker/assemble.py",
        "    if settings.webhook_public_url and settings.http_port is None:",
        "    if False:",
        "tests/test_doctor.py::test_a_worker_given_a_public_url_but_no_http_server_refuses_to_start_in_one_line",
    ),
    Plant(
        "a worker whose job moved on while it submitted leaves the new task running (and paid)",
        "src/vidanim/worker/submit.py",
        '**self._fields(job, provider=provider.name, task_id=submission.task_id, reason="the job moved on"),\n'
        "            )\n            await self._cancel_task(job, provider, submission.task_id)",
        '**self._fields(job, provider=provider.name, task_id=submission.task_id, reason="the job moved on"),\n'
        "            )",
        "tests/worker/test_crashes.py::test_a_worker_that_lost_its_lease_cancels_the_task_it_created",
    ),
    Plant(
        "a partly stored video after an upload error is taken for the finished one (any size accepted)",
        "src/vidanim/worker/deliver.py",
        "        if expected_size is None or info.size == expected_size:",
        "        if True:",
        "tests/worker/test_deliver_storage_faults.py::"
        "test_a_partly_stored_video_after_an_upload_error_is_removed_and_uploaded_again_whole",
    ),
    Plant(
        "one delivery attempt more than DELIVERY_ATTEMPTS",
        "src/vidanim/worker/deliver.py",
        "if refusal.status in OPERATOR_STORAGE_FAULTS or attempt >= DELIVERY_ATTEMPTS:",
        "if refusal.status in OPERATOR_STORAGE_FAULTS or attempt > DELIVERY_ATTEMPTS:",
        "tests/worker/test_deliver_storage_faults.py::"
        "test_an_upload_that_keeps_failing_is_tried_exactly_delivery_attempts_times_then_waits",
    ),
    Plant(
        "a release at one provider gives back every provider's spend (the provider forgotten)",
        "supabase/migrations/0036_job_internals_private.sql",
        "   where s.day = v_flight.day and s.provider = v_flight.provider;",
        "   where s.day = v_flight.day;",
        "tests/db/test_budget.py::test_a_release_at_one_provider_leaves_the_others_committed_spend",
    ),
    Plant(
        "a reservation is taken by a worker whose lease ran out",
        "supabase/migrations/0036_job_internals_private.sql",
        "or we see the cancel\n  select * into v_job from public.video_jobs j where j.id = p_job_id for update;\n"
        "  if not vidanim_private.holds_queued_job(v_job, p_worker_id) then",
        "or we see the cancel\n  select * into v_job from public.video_jobs j where j.id = p_job_id for update;\n"
        "  if v_job.locked_by is distinct from p_worker_id then",
        "tests/db/test_budget.py::test_a_reservation_by_the_holder_of_an_expired_lease_is_refused",
    ),
    Plant(
        "a job whose worker died mid-submission keeps its provider slot",
        "supabase/migrations/0051_submission_pauses.sql",
        "               and j.status = 'queued' and j.locked_until > now())",
        "               and j.status = 'queued')",
        "tests/db/test_provider_breakers.py::"
        "test_a_slot_held_by_a_job_whose_lease_expired_mid_submission_is_free_again",
    ),
    Plant(
        "adoption ignores which provider had the uncertain submission",
        "supabase/migrations/0034_delivery_trust.sql",
        "        and v_job.provider = p_provider and v_job.provider_status = 'submission_uncertain' then",
        "        and v_job.provider_status = 'submission_uncertain' then",
        "tests/db/test_provider_deliveries.py::"
        "test_a_failed_request_at_fal_is_not_adopted_by_a_job_whose_lost_answer_was_runways",
    ),
    Plant(
        "progress is written by a worker whose lease ran out",
        "supabase/migrations/0029_job_progress.sql",
        "   where j.id = p_job_id and j.locked_by = p_worker_id and j.locked_until > now()\n     and j.status",
        "   where j.id = p_job_id and j.locked_by = p_worker_id\n     and j.status",
        "tests/worker/test_follow_progress.py::test_progress_from_a_worker_whose_lease_expired_is_not_written",
    ),
    Plant(
        "progress lands on a queued job",
        "supabase/migrations/0029_job_progress.sql",
        "     and j.status = 'processing'\n",
        "",
        "tests/worker/test_follow_progress.py::test_progress_does_not_land_on_a_queued_job_even_from_its_lease_holder",
    ),
    Plant(
        "a job bound for a healthy provider takes another provider's only probe",
        "src/vidanim/worker/gate.py",
        "            elif not plan and await self.db.begin_probe(name, job.id, self._probe_seconds()):",
        "            elif await self.db.begin_probe(name, job.id, self._probe_seconds()):",
        "tests/worker/test_gate_breakers.py::"
        "test_a_job_bound_for_a_healthy_provider_leaves_another_providers_probe_alone",
    ),
    Plant(
        "/readyz calls a half-open breaker (a probe in flight) down",
        "src/vidanim/worker/http.py",
        'breakers[p].state != "open"]',
        'breakers[p].state == "closed"]',
        "tests/worker/test_metrics.py::test_a_half_open_breaker_leaves_its_provider_ready",
    ),
    Plant(
        "the runner claims a whole batch while almost full (worker_concurrency never enforced)",
        "src/vidanim/worker/runner.py",
        "self.worker_id, min(free, self.settings.worker_claim_batch), self.settings.worker_lease_seconds",
        "self.worker_id, self.settings.worker_claim_batch, self.settings.worker_lease_seconds",
        "tests/worker/test_runner.py::test_a_worker_runs_at_most_worker_concurrency_jobs_at_once_and_reaches_that_many",
    ),
    Plant(
        "of two announced due times the later sets the wake timer",
        "src/vidanim/worker/runner.py",
        "loop.time() < timer.when() <= due:",
        "loop.time() < timer.when() >= due:",
        "tests/worker/test_wakeups.py::test_of_two_announced_due_times_the_earlier_sets_the_wake_timer",
    ),
    Plant(
        "a failed key-set refresh wipes the cached keys (every genuine delivery then 401)",
        "src/vidanim/webhooks/fal.py",
        "            if keys:\n                self.keys = keys\n",
        "            self.keys = keys\n",
        "tests/webhooks/test_fal.py::test_a_failed_refresh_keeps_the_cached_keys_so_genuine_deliveries_still_verify",
    ),
    Plant(
        "concurrent cold-start deliveries each fetch the key set",
        "src/vidanim/webhooks/fal.py",
        "            if self.fetched_at != stamp:\n"
        "                return True  # another caller refreshed while this one waited\n",
        "",
        "tests/webhooks/test_fal.py::test_concurrent_first_deliveries_fetch_the_key_set_once",
    ),
    Plant(
        "with LISTEN off, a delivery this worker records does not wake its job",
        "src/vidanim/worker/http.py",
        '        if outcome == "recorded":\n            hooks.on_recorded(job_id)\n',
        '        if outcome == "recorded":\n            pass\n',
        "tests/worker/test_webhooks.py::test_without_listen_a_delivery_this_worker_records_still_wakes_its_job",
    ),
    Plant(
        "the attempt bound is off by one (a job is tried job_max_attempts + 1 times)",
        "src/vidanim/worker/control.py",
        "        if transient and job.attempts < self.settings.job_max_attempts:",
        "        if transient and job.attempts <= self.settings.job_max_attempts:",
        "tests/worker/test_flows.py::test_a_job_whose_task_keeps_vanishing_is_submitted_exactly_job_max_attempts_times",
    ),
    Plant(
        "`animate --wait` stops showing Runway's progress (a change of progress alone is not a change)",
        "src/vidanim/client/client.py",
        "                view.job.progress,\n",
        "",
        "tests/client/test_client.py::test_wait_reports_each_new_progress_under_the_same_provider_status",
    ),
    Plant(
        "a signed token with role `anon` is accepted as a user",
        "src/vidanim/client/postgres.py",
        '    if claims.get("role") not in (None, "authenticated"):',
        '    if claims.get("role") == "service_role":',
        "tests/client/test_client.py::test_the_postgres_transport_refuses_a_signed_anon_token_as_a_user",
    ),
    Plant(
        "the client refuses an image exactly at the bucket's size limit",
        "src/vidanim/images.py",
        "    if len(data) > limit:",
        "    if len(data) >= limit:",
        "tests/test_images.py::test_an_image_exactly_at_the_buckets_size_limit_is_accepted_and_one_byte_over_refused",
    ),
    Plant(
        "a request for an image exactly at the bucket's size limit is refused",
        "supabase/migrations/0020_input_names_and_sizes.sql",
        "v_size > v_limit then",
        "v_size >= v_limit then",
        "tests/db/test_request_video_animation.py::test_an_image_exactly_at_the_buckets_size_limit_is_accepted",
    ),
    Plant(
        "the largest documented seed is refused",
        "supabase/migrations/0025_video_options.sql",
        "(v_value #>> '{}')::numeric > 4294967295 then",
        "(v_value #>> '{}')::numeric >= 4294967295 then",
        "tests/db/test_request_video_animation.py::test_the_largest_documented_seed_is_accepted_and_one_more_refused",
    ),
    Plant(
        "`budget show --days 7` shows 8 days",
        "supabase/migrations/0024_daily_budget.sql",
        "   where s.day > (now() at time zone 'utc')::date - p_days",
        "   where s.day >= (now() at time zone 'utc')::date - p_days",
        "tests/test_cli_ops.py::test_budget_show_days_7_lists_exactly_the_last_7_utc_days",
    ),
    Plant(
        "doctor passes a Storage that reports an object it does not hold",
        "src/vidanim/doctor.py",
        "    if info is not None:\n",
        "    if False:\n",
        "tests/test_doctor.py::test_a_storage_that_reports_an_object_it_does_not_hold_fails",
    ),
    Plant(
        "doctor passes a public bucket",
        "src/vidanim/doctor.py",
        "            not missing and not public,\n",
        "            not missing,\n",
        "tests/test_doctor.py::test_a_public_bucket_fails_the_bucket_check_itself_not_only_the_checklist",
    ),
    Plant(
        "a missing bucket is read as a missing object",
        "src/vidanim/storage/supabase.py",
        'if status == 404 and _code(response) in (None, "NoSuchKey", "not_found"):\n'
        "            await self._missing_or_hidden(bucket, path)\n            return None",
        "if status == 404:\n            await self._missing_or_hidden(bucket, path)\n            return None",
        "tests/storage/test_supabase.py::test_a_missing_bucket_is_an_error_not_a_missing_object",
    ),
    Plant(
        "`storage cleanup --dry-run` lists videos already expired",
        "src/vidanim/commands/storage.py",
        "     where status = 'completed' and output_expired_at is null and completed_at < now() - %s",
        "     where status = 'completed' and completed_at < now() - %s",
        "tests/test_cli_ops.py::test_storage_cleanup_dry_run_lists_exactly_the_videos_a_run_would_expire",
    ),
    Plant(
        "`storage cleanup --dry-run` lists videos younger than the age",
        "src/vidanim/commands/storage.py",
        "     where status = 'completed' and output_expired_at is null and completed_at < now() - %s",
        "     where status = 'completed' and output_expired_at is null and completed_at < now() - %s / 2",
        "tests/test_cli_ops.py::test_storage_cleanup_dry_run_lists_exactly_the_videos_a_run_would_expire",
    ),
    Plant(
        "`jobs retry` refuses a canceled job",
        "src/vidanim/commands/jobs.py",
        '    if old["status"] not in ("failed", "canceled"):',
        '    if old["status"] not in ("failed",):',
        "tests/test_cli_ops.py::test_jobs_retry_of_a_canceled_job_makes_a_new_job_and_of_a_completed_one_is_refused",
    ),
    Plant(
        "a connection that never finishes its request headers is held forever (the slow-loris)",
        "src/vidanim/worker/listener.py",
        "    def _too_slow(self, reason: str) -> None:\n",
        '    def _too_slow(self, reason: str) -> None:\n        if reason == "header_timeouts":\n            return\n',
        "tests/worker/test_listener.py::test_a_connection_that_never_finishes_its_headers_is_closed_after_the_header_timeout",
    ),
    Plant(
        "the public listener holds every connection it accepts (no cap)",
        "src/vidanim/worker/listener.py",
        "if len(self.connections) >= self.limits.max_connections:",
        "if False:",
        "tests/worker/test_listener.py::test_connections_beyond_the_cap_are_answered_503_at_once_unread_and_the_held_ones_kept",
    ),
    Plant(
        "the public listener serves /metrics and the health checks too",
        "src/vidanim/worker/http.py",
        "    return Starlette(routes=[webhook_route(db, metrics, hooks)] if hooks is not None else [])",
        "    return Starlette(routes=[*build_operator_app(db, metrics).routes,"
        " *([webhook_route(db, metrics, hooks)] if hooks is not None else [])])",
        "tests/worker/test_http.py::test_the_operator_endpoints_are_not_on_the_public_listener_but_on_the_operator_listener",
    ),
    Plant(
        "a worker out of descriptors (or its DNS) opens the breaker every worker shares",
        "src/vidanim/worker/submit.py",
        "                    elif isinstance(exc, LocalFault):",
        "                    elif False:",
        "tests/worker/test_submit_local_faults.py",
    ),
    # Rows 83 and later: a second mutant for each behaviour of rows 51-78 (a different line
    # or a different way to break the same rule), and the bugs their tests then found.
    Plant(
        "an upload error forgets the size being sent, so any stored size counts as the whole video",
        "src/vidanim/worker/transfer.py",
        "                raise UploadFailed(exc, size) from exc",
        "                raise UploadFailed(exc, None) from exc",
        "tests/worker/test_deliver_storage_faults.py::"
        "test_a_partly_stored_video_after_an_upload_error_is_removed_and_uploaded_again_whole",
    ),
    Plant(
        "after an upload error, a stored object smaller than the video counts as the finished one",
        "src/vidanim/worker/deliver.py",
        "        if expected_size is None or info.size == expected_size:",
        "        if expected_size is None or info.size <= expected_size:",
        "tests/worker/test_deliver_storage_faults.py::"
        "test_a_partly_stored_video_after_an_upload_error_is_removed_and_uploaded_again_whole",
    ),
    Plant(
        "a release names a provider but takes the job's reservation at any provider",
        "supabase/migrations/0036_job_internals_private.sql",
        "   where f.job_id = p_job_id and f.provider = p_provider\n",
        "   where f.job_id = p_job_id\n",
        "tests/db/test_budget.py::test_a_release_gives_back_to_the_provider_it_was_reserved_at",
    ),
    Plant(
        "a slot counts any lease, run out or not (0051)",
        "supabase/migrations/0051_submission_pauses.sql",
        "               and j.status = 'queued' and j.locked_until > now())",
        "               and j.status = 'queued' and j.locked_until is not null)",
        "tests/db/test_provider_breakers.py::"
        "test_a_slot_held_by_a_job_whose_lease_expired_mid_submission_is_free_again",
    ),
    Plant(
        "a job processing at another provider takes a slot of this provider's cap (0051)",
        "supabase/migrations/0051_submission_pauses.sql",
        "where j.id <> p_job_id and j.status = 'processing' and j.provider = p_provider)",
        "where j.id <> p_job_id and j.status = 'processing')",
        "tests/db/test_provider_breakers.py::test_jobs_at_another_provider_take_no_slot_of_this_providers_cap",
    ),
    Plant(
        "a job submitting to another provider takes a slot of this provider's cap (0051)",
        "supabase/migrations/0051_submission_pauses.sql",
        "             where i.submitting_to = p_provider and i.job_id <> p_job_id\n",
        "             where i.job_id <> p_job_id\n",
        "tests/db/test_provider_breakers.py::test_jobs_at_another_provider_take_no_slot_of_this_providers_cap",
    ),
    Plant(
        "the lease rule forgets the lease's end (holds_queued_job, 0030): reservations by an expired lease",
        "supabase/migrations/0030_job_submissions.sql",
        "p_job.locked_by = p_worker_id and p_job.locked_until > now(), false)",
        "p_job.locked_by = p_worker_id, false)",
        "tests/db/test_budget.py::test_a_reservation_by_the_holder_of_an_expired_lease_is_refused",
    ),
    Plant(
        "the runner claims as many as worker_concurrency whatever already runs",
        "src/vidanim/worker/runner.py",
        "            free = self.settings.worker_concurrency - len(self._running)\n",
        "            free = self.settings.worker_concurrency\n",
        "tests/worker/test_runner.py::test_a_worker_runs_at_most_worker_concurrency_jobs_at_once_and_reaches_that_many",
    ),
    Plant(
        "a half-open breaker is taken for a closed one: every job goes to the provider under probe",
        "src/vidanim/worker/gate.py",
        '            if breaker is None or breaker.state == "closed":',
        '            if breaker is None or breaker.state != "open":',
        "tests/worker/test_gate_breakers.py::"
        "test_while_another_jobs_probe_is_in_flight_a_job_is_not_sent_to_that_provider",
    ),
    Plant(
        "concurrent cold-start deliveries each fetch the key set (a forced refresh skips the check)",
        "src/vidanim/webhooks/fal.py",
        "            if self.fetched_at != stamp:\n",
        "            if self.fetched_at != stamp and not force:\n",
        "tests/webhooks/test_fal.py::test_concurrent_first_deliveries_fetch_the_key_set_once",
    ),
    Plant(
        "deliveries that waited on another's refresh are refused (a rotated key: only the first verifies)",
        "src/vidanim/webhooks/fal.py",
        "                return True  # another caller refreshed while this one waited",
        "                return False  # another caller refreshed while this one waited",
        "tests/webhooks/test_fal.py::test_concurrent_deliveries_signed_with_a_rotated_key_all_verify_after_one_refresh",
    ),
    Plant(
        "the attempt bound is off by one the other way (job_max_attempts - 1 submissions)",
        "src/vidanim/worker/control.py",
        "        if transient and job.attempts < self.settings.job_max_attempts:",
        "        if transient and job.attempts + 1 < self.settings.job_max_attempts:",
        "tests/worker/test_flows.py::test_a_job_whose_task_keeps_vanishing_is_submitted_exactly_job_max_attempts_times",
    ),
    Plant(
        "`animate --wait` stops showing the queue place move (a change of place alone is not a change)",
        "src/vidanim/client/client.py",
        "                view.job.queue_position,\n",
        "",
        "tests/client/test_client.py::test_wait_reports_each_new_queue_place_under_the_same_provider_status",
    ),
    Plant(
        "Runway's progress at 0 and at 1 is dropped (the boundaries of its fraction)",
        "src/vidanim/providers/runway.py",
        "isinstance(fraction, int | float) and 0 <= fraction <= 1 else None",
        "isinstance(fraction, int | float) and 0 < fraction < 1 else None",
        "tests/providers/test_runway.py::test_runways_progress_fraction_is_read_from_0_to_1_inclusive",
    ),
    Plant(
        "/readyz counts a provider without a breaker row (never failed) as down",
        "src/vidanim/worker/http.py",
        'usable = [p for p in metrics.providers if p not in breakers or breakers[p].state != "open"]',
        'usable = [p for p in metrics.providers if p in breakers and breakers[p].state != "open"]',
        "tests/worker/test_metrics.py::test_waiting_jobs_and_open_breakers_show_and_readiness_follows_the_providers",
    ),
    Plant(
        "the webhook route is not wired to the worker: a delivery it records wakes nobody without LISTEN",
        "src/vidanim/worker/assemble.py",
        "                worker.delivered,\n",
        "                lambda _job: None,\n",
        "tests/worker/test_webhooks.py::test_without_listen_a_delivery_this_worker_records_still_wakes_its_job",
    ),
    Plant(
        "progress lands on a job a retry put back in the queue",
        "supabase/migrations/0029_job_progress.sql",
        "     and j.status = 'processing'\n",
        "     and j.status in ('queued', 'processing')\n",
        "tests/worker/test_follow_progress.py::test_progress_does_not_land_on_a_queued_job_even_from_its_lease_holder",
    ),
    Plant(
        "an input replaced with one exactly at the limit fails at submission (0035)",
        "supabase/migrations/0035_input_at_submission.sql",
        "  if v_size is not null and v_limit is not null and v_size > v_limit then",
        "  if v_size is not null and v_limit is not null and v_size >= v_limit then",
        "tests/worker/test_flows.py::test_an_input_replaced_with_one_exactly_at_the_limit_is_still_submitted",
    ),
    Plant(
        "an input replaced with one a byte over the limit is still submitted (0035)",
        "supabase/migrations/0035_input_at_submission.sql",
        "  if v_size is not null and v_limit is not null and v_size > v_limit then",
        "  if v_size is not null and v_limit is not null and v_size > v_limit + 1 then",
        "tests/worker/test_flows.py::test_an_input_replaced_beyond_the_limits_after_the_request_fails_once_refunded_unsent",
    ),
    Plant(
        "the client holds an image to the provider's limit even when the bucket's is smaller",
        "src/vidanim/images.py",
        "    limit = min(rules.max_bytes, size_limit) if size_limit is not None else rules.max_bytes",
        "    limit = max(rules.max_bytes, size_limit) if size_limit is not None else rules.max_bytes",
        "tests/test_images.py::test_an_image_exactly_at_the_buckets_size_limit_is_accepted_and_one_byte_over_refused",
    ),
    Plant(
        "one more than the largest documented seed is accepted",
        "supabase/migrations/0025_video_options.sql",
        "(v_value #>> '{}')::numeric > 4294967295 then",
        "(v_value #>> '{}')::numeric > 4294967296 then",
        "tests/db/test_request_video_animation.py::test_the_largest_documented_seed_is_accepted_and_one_more_refused",
    ),
    Plant(
        "`budget show --days 7` shows 6 days",
        "supabase/migrations/0024_daily_budget.sql",
        "   where s.day > (now() at time zone 'utc')::date - p_days",
        "   where s.day > (now() at time zone 'utc')::date - p_days + 1",
        "tests/test_cli_ops.py::test_budget_show_days_7_lists_exactly_the_last_7_utc_days",
    ),
    Plant(
        "a signed `anon` token is accepted as a user (anon listed with the user roles)",
        "src/vidanim/client/postgres.py",
        '    if claims.get("role") not in (None, "authenticated"):',
        '    if claims.get("role") not in (None, "authenticated", "anon"):',
        "tests/client/test_client.py::test_the_postgres_transport_refuses_a_signed_anon_token_as_a_user",
    ),
    Plant(
        "doctor's bucket check fails only when a bucket is both missing and public",
        "src/vidanim/doctor.py",
        "            not missing and not public,\n",
        "            not (missing and public),\n",
        "tests/test_doctor.py::test_a_public_bucket_fails_the_bucket_check_itself_not_only_the_checklist",
    ),
    Plant(
        "`jobs retry` accepts any job that is not completed (a queued or running one too)",
        "src/vidanim/commands/jobs.py",
        '    if old["status"] not in ("failed", "canceled"):',
        '    if old["status"] == "completed":',
        "tests/test_cli_ops.py::test_jobs_retry_makes_one_new_job_from_a_failed_one",
    ),
    Plant(
        "`storage cleanup --dry-run --limit` lists the newest due videos, a run expires the oldest",
        "src/vidanim/commands/storage.py",
        "     order by completed_at limit %s\n",
        "     order by completed_at desc limit %s\n",
        "tests/test_cli_ops.py::test_storage_cleanup_dry_run_with_a_limit_lists_the_oldest_due_videos_as_a_run_expires",
    ),
    Plant(
        "a missing bucket is read as a missing object (NoSuchBucket taken for NoSuchKey)",
        "src/vidanim/storage/supabase.py",
        'if status == 404 and _code(response) in (None, "NoSuchKey", "not_found"):\n'
        "            await self._missing_or_hidden(bucket, path)\n            return None",
        'if status == 404 and _code(response) in (None, "NoSuchKey", "not_found", "NoSuchBucket"):\n'
        "            await self._missing_or_hidden(bucket, path)\n            return None",
        "tests/storage/test_supabase.py::test_a_missing_bucket_is_an_error_not_a_missing_object",
    ),
    Plant(
        "one download attempt more than DELIVERY_ATTEMPTS (an output URL that keeps failing)",
        "src/vidanim/worker/deliver.py",
        "                attempt += 1\n                if attempt >= DELIVERY_ATTEMPTS:\n",
        "                attempt += 1\n                if attempt > DELIVERY_ATTEMPTS:\n",
        "tests/worker/test_flows.py::"
        "test_an_output_url_that_keeps_failing_is_fetched_exactly_delivery_attempts_times_then_waits",
    ),
    Plant(
        "a wake timer that has fired blocks every later due time (a fired handle is not cancelled)",
        "src/vidanim/worker/runner.py",
        "        if timer is not None and not timer.cancelled() and loop.time() < timer.when() <= due:",
        "        if timer is not None and not timer.cancelled() and timer.when() <= due:",
        "tests/worker/test_wakeups.py::test_a_due_time_announced_after_the_wake_timer_fired_sets_a_new_timer",
    ),
]


FUNCTION = re.compile(r"create or replace function ([\w.]+)\(")


def superseded(plant: Plant) -> str | None:
    """The later migration that replaces the SQL function this row plants into, if one does.

    A bug planted in a definition a later migration replaces is never run: its test
    passes for that reason alone, so the row must move to the live definition.
    """
    if not plant.path.startswith("supabase/migrations/"):
        return None
    source = (ROOT / plant.path).read_text()
    before = [m.group(1) for m in FUNCTION.finditer(source, 0, source.find(plant.original))]
    if not before:
        return None  # not inside a function (a policy, a table)
    name = Path(plant.path).name
    for later in sorted((ROOT / "supabase/migrations").glob("*.sql")):
        if later.name > name and before[-1] in FUNCTION.findall(later.read_text()):
            return f"{before[-1]} is replaced by {later.name}"
    return None


def run(number: int, plant: Plant) -> bool:
    """Plant the bug, run its test, restore the file. True when the test caught the bug."""
    file = ROOT / plant.path
    source = file.read_text()
    if source.count(plant.original) != 1:
        raise SystemExit(f"{number}: the line to break is not exactly once in {plant.path}; update this script")
    if (replaced := superseded(plant)) is not None:
        raise SystemExit(f"{number}: {plant.path} is not the live definition ({replaced}); update this script")
    try:
        file.write_text(source.replace(plant.original, plant.planted))
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", plant.test],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        file.write_text(source)
    if result.returncode not in (0, 1):  # 1: tests failed; anything else: the run itself broke
        raise SystemExit(f"{number}: pytest could not run {plant.test}:\n{result.stdout[-2000:]}{result.stderr}")
    return result.returncode == 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rows", nargs="*", type=int, help="row numbers (1-based); all when omitted")
    args = parser.parse_args()
    chosen = args.rows or list(range(1, len(PLANTS) + 1))
    missed = 0
    for number in chosen:
        plant = PLANTS[number - 1]
        caught = run(number, plant)
        missed += not caught
        print(f"{number}. {'caught' if caught else 'MISSED'}  {plant.bug}  <- {plant.test.split('::')[-1]}", flush=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
