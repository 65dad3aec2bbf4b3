"""A mutation sweep over one wave's code: plant fresh one-line bugs, one at a time, and count the caught.

    python scripts/mutation_sweep.py              # every mutant
    python scripts/mutation_sweep.py --only K1 G3 # only these
    python scripts/mutation_sweep.py --check      # each mutant's line is there exactly once; nothing run

`scripts/plant_bugs.py` holds the bugs that once slipped through, each with the test
written for it. This list is the other half of the habit: bugs nobody has seen yet, the
kind a tired colleague makes in the code of one wave (issues 18 and 19: the worker's
stages, the CLI's errors, Storage keys of both generations, the start-up check,
/metrics staleness, one log format). Each mutant names the file, a text occurring
exactly once in it, what it becomes, and the tests that mirror the file. The script
plants it, runs those tests (`pytest -x -q -p no:cacheprovider <tests>`), restores the
file (always, Ctrl-C included), and prints one line per mutant, `caught` when the tests
failed, `MISSED` when they passed, then the total. A mutant is fresh: none is one of
plant_bugs' rows. A survivor judged equivalent is listed, with why, in docs/testing.md
("Mutation sweep of this wave"); `EQUIVALENT` below holds its id, so the total says
how many of the others were caught. Exit code 1 when a mutant not judged equivalent
was missed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from plant_bugs import PLANTS  # noqa: E402  (the rows this sweep must not repeat)

# A mutant whose tests run longer than this is stopped; a hang counts as caught (the suite did not pass).
TIMEOUT_SECONDS = 900

CLI_ERRORS = "tests/test_cli_errors.py"
CLI_OPS = "tests/test_cli_ops.py"
STORAGE = "tests/storage/test_supabase.py"
NEW_KEYS = "tests/worker/test_new_api_keys.py"
KEYS = "tests/test_supabase_keys.py"
DOCTOR = "tests/test_doctor.py"
STARTUP = "tests/worker/test_startup.py"
METRICS = "tests/worker/test_metrics.py"
LOGS = "tests/worker/test_worker_logs.py"
LOG_FORMAT = "tests/test_logs.py"
DELIVER = "tests/worker/test_deliver_storage_faults.py"
FLOWS = "tests/worker/test_flows.py"
FOLLOW = "tests/worker/test_follow_progress.py"
WEBHOOKS = "tests/worker/test_webhooks.py"
PAUSES = "tests/worker/test_gate_pauses.py"
BREAKERS = "tests/worker/test_gate_breakers.py"
BUDGET = "tests/worker/test_gate_budget.py"
LOCAL_FAULTS = "tests/worker/test_submit_local_faults.py"
CLEANUP_SQL = "tests/db/test_stale_inputs.py"


@dataclass(frozen=True)
class Mutant:
    id: str
    bug: str
    path: str
    original: str
    mutated: str
    tests: tuple[str, ...]


def m(id: str, bug: str, path: str, original: str, mutated: str, *tests: str) -> Mutant:
    return Mutant(id, bug, path, original, mutated, tests)


KEYS_PY = "src/vidanim/supabase_keys.py"
CATALOG_PY = "src/vidanim/storage/catalog.py"
STORAGE_PY = "src/vidanim/storage/supabase.py"
SETTINGS_PY = "src/vidanim/settings.py"
COMMON_PY = "src/vidanim/commands/common.py"
BUDGET_PY = "src/vidanim/commands/budget.py"
JOBS_PY = "src/vidanim/commands/jobs.py"
STORAGE_CMD_PY = "src/vidanim/commands/storage.py"
ANIMATE_PY = "src/vidanim/commands/animate.py"
DOCTOR_PY = "src/vidanim/doctor.py"
HTTP_PY = "src/vidanim/worker/http.py"
STARTUP_PY = "src/vidanim/worker/startup.py"
METRICS_PY = "src/vidanim/worker/metrics.py"
LOGS_PY = "src/vidanim/logs.py"
GATE_PY = "src/vidanim/worker/gate.py"
CONTROL_PY = "src/vidanim/worker/control.py"
DELIVER_PY = "src/vidanim/worker/deliver.py"
FOLLOW_PY = "src/vidanim/worker/follow.py"
SUBMIT_PY = "src/vidanim/worker/submit.py"
PIPELINE_PY = "src/vidanim/worker/pipeline.py"
CLEANUP_SQL_FILE = "supabase/migrations/0055_stale_input_cleanup.sql"
FAKE_STORAGE_PY = "tests/support/fake_supabase_storage.py"
FAKE_GATEWAY_PY = "tests/support/fake_supabase_gateway.py"

MUTANTS = [
    # Supabase's keys ------------------------------------------------------------------------
    m(
        "K1",
        "a publishable key, not the secret one, is the key sent in apikey only (a secret key goes as bearer too)",
        KEYS_PY,
        "    if kind_of(key) is KeyKind.SECRET:\n",
        "    if kind_of(key) is KeyKind.PUBLISHABLE:\n",
        NEW_KEYS,
    ),
    m(
        "K2",
        "the worker takes the legacy anon key as a service key",
        KEYS_PY,
        "KeyKind.LEGACY_SERVICE_ROLE:\n        return\n",
        "KeyKind.LEGACY_SERVICE_ROLE or kind is KeyKind.LEGACY_ANON:\n        return\n",
        NEW_KEYS,
        KEYS,
    ),
    m(
        "K3",
        "a JWT of role `authenticated` counts as a service_role key",
        KEYS_PY,
        '    if role == "service_role":',
        '    if role in ("service_role", "authenticated"):',
        NEW_KEYS,
        KEYS,
    ),
    m(
        "K4",
        "a client takes the legacy service_role key",
        KEYS_PY,
        "    if kind is KeyKind.SECRET or kind is KeyKind.LEGACY_SERVICE_ROLE:\n        raise WrongKey(",
        "    if kind is KeyKind.SECRET:\n        raise WrongKey(",
        NEW_KEYS,
        KEYS,
    ),
    # what storage.objects holds ---------------------------------------------------------------
    m(
        "C1",
        "the catalog says it holds every object (any missing one is 'hidden')",
        CATALOG_PY,
        "        return bool(row and row[0])",
        "        return bool(row)",
        STORAGE,
    ),
    m(
        "C2",
        "the catalog looks in the other buckets for the name",
        CATALOG_PY,
        "where bucket_id = %s and name = %s)",
        "where bucket_id <> %s and name = %s)",
        STORAGE,
    ),
    # Storage over HTTP ----------------------------------------------------------------------------
    m(
        "S1",
        "a hidden object answers 404, so it reads as a missing input",
        STORAGE_PY,
        "            status=403,\n",
        "            status=404,\n",
        STORAGE,
        DELIVER + "::test_a_key_that_cannot_see_the_input_storage_objects_holds_makes_the_job_wait_never_fail",
    ),
    m(
        "S2",
        "the hidden-object check is inverted (`not holds`)",
        STORAGE_PY,
        "if self.catalog is not None and await self.catalog.holds(bucket, path):",
        "if self.catalog is not None and not await self.catalog.holds(bucket, path):",
        STORAGE,
    ),
    m(
        "S3",
        "signing an object the key cannot see is a plain 404, not HiddenObject",
        STORAGE_PY,
        "            await self._missing_or_hidden(bucket, path)\n"
        "        if not response.is_success or status >= 400:\n"
        '            raise _failed(response, f"signing',
        "            pass\n        if not response.is_success or status >= 400:\n"
        '            raise _failed(response, f"signing',
        STORAGE,
        DELIVER + "::test_a_key_that_cannot_see_the_input_storage_objects_holds_makes_the_job_wait_never_fail",
    ),
    m(
        "S4",
        "Storage's client sends every key as the bearer token too (the key's kind ignored)",
        STORAGE_PY,
        "            headers=request_headers(service_role_key),",
        '            headers={"apikey": service_role_key, "Authorization": f"Bearer {service_role_key}"},',
        NEW_KEYS,
    ),
    m(
        "S5",
        "info of an object the key cannot see is 'missing' (no catalog look-up)",
        STORAGE_PY,
        "            await self._missing_or_hidden(bucket, path)\n            return None",
        "            return None",
        STORAGE,
    ),
    # settings ---------------------------------------------------------------------------------------
    m(
        "T1",
        "a log level in lower case is refused",
        SETTINGS_PY,
        "        level = value.strip().upper()",
        "        level = value.strip()",
        CLI_ERRORS,
    ),
    m(
        "T2",
        "an invalid setting's error names the field, not its variable",
        SETTINGS_PY,
        "    return f\"{variable(field.split('.')[0])}: {message}{shown}\"",
        '    return f"{field}: {message}{shown}"',
        CLI_ERRORS,
    ),
    m(
        "T3",
        "a database URL that is not a URL is echoed, password and all, in its error",
        SETTINGS_PY,
        '        reason = str(exc).splitlines()[0] if "://" not in url else "not a valid URL"',
        "        reason = str(exc).splitlines()[0]",
        CLI_ERRORS,
    ),
    m(
        "T4",
        "a malformed JSON setting's error does not name its variable",
        SETTINGS_PY,
        '        name = variable(match.group(1)) if match else "a VIDANIM_ variable"',
        '        name = "a VIDANIM_ variable"',
        CLI_ERRORS,
    ),
    m(
        "T5",
        "local storage ignores XDG_DATA_HOME",
        SETTINGS_PY,
        '    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")',
        '    base = str(Path.home() / ".local" / "share")',
        CLI_ERRORS,
    ),
    m(
        "T6",
        "a relative local storage directory stays relative",
        SETTINGS_PY,
        "        return value.expanduser().absolute()",
        "        return value.expanduser()",
        CLI_ERRORS,
    ),
    m(
        "T7",
        "a secret's invalid value is echoed when its field name says secret (not key/url)",
        SETTINGS_PY,
        '("key", "secret", "password", "url")',
        '("key", "password", "url")',
        CLI_ERRORS,
    ),
    # the CLI's errors ------------------------------------------------------------------------------
    m(
        "M1",
        "an unknown user's foreign-key error from the client is not named as such",
        COMMON_PY,
        '        if exc.sqlstate == "23503" and "user_id_fkey" in exc.message:',
        "        if False:",
        CLI_ERRORS,
    ),
    m(
        "M3",
        "an unmigrated database's missing function is not read as 'not migrated'",
        COMMON_PY,
        '("42P01", "42883", "3F000")',
        '("42P01", "3F000")',
        CLI_ERRORS,
    ),
    m(
        "M4",
        "a value the database refuses as out of range exits 1, not 2 (usage)",
        COMMON_PY,
        '        raise fail(f"{option}: {exc.diag.message_primary or exc}", 2) from None',
        '        raise fail(f"{option}: {exc.diag.message_primary or exc}") from None',
        CLI_OPS + "::test_budget_set_refusals_are_one_line",
        CLI_OPS + "::test_quota_errors_are_one_line",
    ),
    m(
        "M5",
        "psycopg's undefined table is not read as 'not migrated'",
        COMMON_PY,
        "(psycopg.errors.UndefinedTable, psycopg.errors.UndefinedFunction, psycopg.errors.InvalidSchemaName):",
        "(psycopg.errors.InvalidSchemaName,):",
        CLI_ERRORS,
    ),
    # budget, jobs, storage, animate ------------------------------------------------------------------
    m(
        "B1",
        "a cap with fractions of a cent is rounded to cents when shown",
        BUDGET_PY,
        '    if value == value.quantize(Decimal("0.01")):',
        "    if True:",
        CLI_OPS + "::test_budget_set_prints_the_cap_the_database_stored_without_hiding_fractions_of_a_cent",
    ),
    m(
        "B2",
        "`budget show --days 0` is accepted",
        BUDGET_PY,
        "typer.Option(min=1, max=366,",
        "typer.Option(min=0, max=366,",
        CLI_OPS + "::test_budget_set_refusals_are_one_line",
        CLI_OPS + "::test_budget_show_days_7_lists_exactly_the_last_7_utc_days",
        CLI_OPS + "::test_budget_show_takes_1_to_366_days_and_refuses_either_side_as_a_usage_error",
    ),
    m(
        "B3",
        "an infinite cap is not refused as a usage error",
        BUDGET_PY,
        "    if cap is not None and not cap.is_finite():",
        "    if cap is not None and cap.is_nan():",
        CLI_OPS + "::test_budget_set_refusals_are_one_line",
        CLI_OPS + "::test_budget_set_and_show",
    ),
    m(
        "B4",
        "`budget set` prints the cap it was given, not the one stored",
        BUDGET_PY,
        '    cap = stored["cap"] if stored else cap',
        "    stored = stored",
        CLI_OPS + "::test_budget_set_prints_the_cap_the_database_stored_without_hiding_fractions_of_a_cent",
        CLI_OPS + "::test_budget_set_prints_the_cap_as_the_database_rounded_it_not_as_it_was_typed",
    ),
    m(
        "J1",
        "`jobs list` no longer says why a queued job waits",
        JOBS_PY,
        'if job.get("waiting_reason") else str(job["status"])',
        'if job.get("provider_status") else str(job["status"])',
        CLI_ERRORS,
    ),
    m(
        "J2",
        "an operator's cancel is audited under a fixed name, not the login running it",
        JOBS_PY,
        "        job = cur.execute(CANCEL_AS_OPERATOR, (job_id, operator_actor())).fetchone()",
        '        job = cur.execute(CANCEL_AS_OPERATOR, (job_id, "operator")).fetchone()',
        CLI_ERRORS,
    ),
    m(
        "ST1",
        "storage cleanup never deletes the stale inputs it lists",
        STORAGE_CMD_PY,
        '        inputs_kept = [] if dry_run else asyncio.run(_delete(s, "video-inputs", [r["name"] for r in inputs]))',
        "        inputs_kept = []",
        CLI_ERRORS,
    ),
    m(
        "ST2",
        "storage cleanup deletes the expired videos' names in the inputs bucket",
        STORAGE_CMD_PY,
        '        failed = [] if dry_run else asyncio.run(_delete(s, "video-outputs", list(by_name)))',
        '        failed = [] if dry_run else asyncio.run(_delete(s, "video-inputs", list(by_name)))',
        CLI_OPS + "::test_storage_cleanup_expires_old_videos_and_deletes_them",
    ),
    m(
        "ST3",
        "what Storage did not delete is looked up in the outputs bucket whatever the bucket",
        STORAGE_CMD_PY,
        "rows(STILL_STORED, (bucket, unconfirmed))",
        'rows(STILL_STORED, ("video-outputs", unconfirmed))',
        CLI_ERRORS,
        CLI_OPS + "::test_storage_cleanup_names_what_storage_did_not_delete_and_those_jobs_keep_their_video",
    ),
    m(
        "ST4",
        "input images Storage did not delete leave the exit code 0",
        STORAGE_CMD_PY,
        "    if failed or inputs_kept:\n",
        "    if failed:\n",
        CLI_ERRORS,
    ),
    m(
        "ST5",
        "a storage configuration cleanup cannot build exits 1, not 2 (usage)",
        STORAGE_CMD_PY,
        "        raise fail(str(exc), 2) from None\n    with handled():",
        "        raise fail(str(exc)) from None\n    with handled():",
        CLI_ERRORS,
        CLI_OPS,
    ),
    m(
        "ST6",
        "cleanup counts input images it could not delete as removed",
        STORAGE_CMD_PY,
        "{len(inputs) - len(inputs_kept)} input image(s)",
        "{len(inputs)} input image(s)",
        CLI_ERRORS,
    ),
    m(
        "A1",
        "Ctrl-C during `animate --wait` exits 1, not 130",
        ANIMATE_PY,
        "        raise fail(interrupted_message(job_id), 130) from None",
        "        raise fail(interrupted_message(job_id)) from None",
        CLI_ERRORS + "::test_ctrl_c_while_animate_waits_says_the_job_goes_on_and_how_to_follow_it",
    ),
    # doctor -----------------------------------------------------------------------------------------------
    m(
        "D1",
        "doctor runs the Storage check on an unmigrated database",
        DOCTOR_PY,
        "    migrated = len(checks) > 2",
        "    migrated = len(checks) > 1",
        CLI_ERRORS + "::test_doctor_on_a_database_without_migrations_says_it_is_reachable_and_to_migrate",
    ),
    m(
        "D2",
        "doctor looks for a stored object only among the outputs",
        DOCTOR_PY,
        "where bucket_id in ('video-inputs', 'video-outputs') limit 1",
        "where bucket_id in ('video-outputs') limit 1",
        DOCTOR,
    ),
    m(
        "D3",
        "doctor passes a key that cannot see the object storage.objects holds (`is not None`)",
        DOCTOR_PY,
        "if held is not None and await storage.info(held[0], held[1]) is None:",
        "if held is not None and await storage.info(held[0], held[1]) is not None:",
        DOCTOR,
    ),
    m(
        "D4",
        "doctor says 'not reachable' of a reachable, unmigrated database",
        DOCTOR_PY,
        '        why = "the database is not migrated" if database_ok else "the database is not reachable"',
        '        why = "the database is not reachable"',
        CLI_ERRORS + "::test_doctor_on_a_database_without_migrations_says_it_is_reachable_and_to_migrate",
    ),
    # the worker's start, listeners, metrics, logs ------------------------------------------------------
    m(
        "H1",
        "a taken port raises the raw OSError, not ListenError naming the listener",
        HTTP_PY,
        "        raise ListenError(name, host, port, (exc.strerror or str(exc)).lower()) from None",
        "        raise",
        CLI_ERRORS,
    ),
    m(
        "H2",
        "the bound address logged is the one asked for (port 0 unresolved)",
        HTTP_PY,
        '        self.address = f"{bound_host}:{bound_port}"',
        '        self.address = f"{host}:{port}"',
        LOGS,
    ),
    m(
        "H3",
        "every listener is logged as `http`, not public/operator",
        HTTP_PY,
        '        log_event(log, "http.listening", listener=self.name,',
        '        log_event(log, "http.listening", listener="http",',
        LOGS,
    ),
    m(
        "U1",
        "one provider refusing its configuration refuses the worker's start",
        STARTUP_PY,
        "    if health and all(h.configuration for h in health):",
        "    if health and any(h.configuration for h in health):",
        STARTUP,
    ),
    m(
        "U2",
        "a check failing for this host's own trouble (LocalFault) opens the shared breaker",
        STARTUP_PY,
        "        if isinstance(self.fault, TransientProviderError) and not isinstance(self.fault, LocalFault):",
        "        if isinstance(self.fault, TransientProviderError):",
        STARTUP,
    ),
    m(
        "U3",
        "any account fault (no credits) counts as a configuration fault that refuses the start",
        STARTUP_PY,
        "        return isinstance(self.fault, OperatorFault) and self.fault.configuration",
        "        return isinstance(self.fault, OperatorFault)",
        STARTUP,
    ),
    m(
        "MT1",
        "a read that failed (not timed out) is served as fresh: stale 0",
        METRICS_PY,
        "        self.stale.set(0 if done and not task.cancelled() and task.result() else 1)",
        "        self.stale.set(0 if done else 1)",
        METRICS,
    ),
    m(
        "MT2",
        "the values' age counts from the worker's start, not the last read",
        METRICS_PY,
        "(self._read_at if self._read_at is not None else self._created_at)",
        "self._created_at",
        METRICS,
    ),
    m(
        "MT3",
        "every scrape starts a read of its own (no sharing of the one under way)",
        METRICS_PY,
        "        if self._read_task is None or self._read_task.done():",
        "        if True:",
        METRICS,
    ),
    m(
        "MT4",
        "a scrape served from the cache keeps the stale mark of an earlier one",
        METRICS_PY,
        "        if self._fresh():\n            self.stale.set(0)\n            return",
        "        if self._fresh():\n            return",
        METRICS,
    ),
    m(
        "L1",
        "the libraries log at the chosen level (INFO), not WARNING and up",
        LOGS_PY,
        "    root.setLevel(max(chosen, logging.WARNING))",
        "    root.setLevel(chosen)",
        LOGS,
        LOG_FORMAT,
    ),
    m(
        "L2",
        "a value with a double quote is written unquoted",
        LOGS_PY,
        "c.isspace() or c in '=\"' or not c.isprintable()",
        "c.isspace() or c in '=' or not c.isprintable()",
        LOGS,
        LOG_FORMAT,
    ),
    m(
        "L3",
        "a library's line does not say which logger wrote it",
        LOGS_PY,
        '        if not record.name.startswith("vidanim"):\n',
        "        if False:\n",
        LOGS,
    ),
    m(
        "L4",
        "a library's message is not redacted",
        LOGS_PY,
        '"event": getattr(record, "event", None) or redact(_message(record)),',
        '"event": getattr(record, "event", None) or _message(record),',
        LOGS,
        LOG_FORMAT,
    ),
    m(
        "L5",
        "configuring twice leaves two handlers (each line written twice)",
        LOGS_PY,
        "    root.handlers[:] = [h for h in root.handlers if not isinstance(h, _Handler)] + [handler]",
        "    root.handlers[:] = [*root.handlers, handler]",
        LOGS,
        LOG_FORMAT,
    ),
    # the worker's stages ----------------------------------------------------------------------------
    m(
        "G1",
        "after a lost answer a third submission is allowed (`<=`)",
        GATE_PY,
        "        if job.uncertain_submissions < MAX_UNCERTAIN_SUBMISSIONS:",
        "        if job.uncertain_submissions <= MAX_UNCERTAIN_SUBMISSIONS:",
        WEBHOOKS + "::test_without_webhooks_a_second_lost_answer_ends_the_job_unpaid_and_never_submits_a_third",
    ),
    m(
        "G2",
        "a job with every provider paused waits as 'providers_unavailable', not 'submissions_paused'",
        GATE_PY,
        "        if paused:  # a resume wakes the job",
        "        if False:  # a resume wakes the job",
        PAUSES,
    ),
    m(
        "G3",
        "a paused provider is still planned",
        GATE_PY,
        "        for name in (n for n in self.order if n not in paused):",
        "        for name in self.order:",
        PAUSES,
    ),
    m(
        "G4",
        "a refusal elsewhere fails the job while a provider that would take it is at its cap",
        GATE_PY,
        '        if busy and not any(e.code == "content_moderated" for e in errors):\n',
        "        if busy and all(isinstance(e, OperatorFault | TransientProviderError) for e in errors):\n",
        BREAKERS,
        BUDGET,
    ),
    m(
        "G6",
        "content refused as against a policy is resent every few seconds while a busy provider is waited for",
        GATE_PY,
        '        if busy and not any(e.code == "content_moderated" for e in errors):\n',
        "        if busy:\n",
        BREAKERS,
    ),
    m(
        "G5",
        "a provider at its cap is waited for even when its limits would not take the refused image",
        SUBMIT_PY,
        "                    busy = [n for n in busy if n in accepting]",
        "                    pass",
        BREAKERS,
    ),
    m(
        "CT1",
        "Runway counts as a provider that reports by webhook",
        CONTROL_PY,
        '        return provider == "fal" and self.settings.fal_webhooks',
        '        return provider in ("fal", "runway") and self.settings.fal_webhooks',
        WEBHOOKS + "::test_runway_is_still_polled_when_webhooks_are_on",
    ),
    m(
        "CT2",
        "a provider's own words for a refusal go to the user",
        CONTROL_PY,
        "            message = chosen.message if moderated else REFUSED",
        "            message = chosen.message",
        FLOWS,
    ),
    m(
        "CT3",
        "the operator's detail of a failure is never noted",
        CONTROL_PY,
        "        if detail is not None and detail != message:\n",
        "        if False:\n",
        FLOWS,
    ),
    m(
        "CT4",
        "Storage refusing with 403 is logged as 'unavailable', not as the worker's key refused",
        CONTROL_PY,
        "        if exc.status in (401, 403):",
        "        if exc.status in (401,):",
        DELIVER,
    ),
    m(
        "DL1",
        "Storage's 413 for the video is retried as a lost upload, not failed as too large",
        DELIVER_PY,
        "                if refusal.status == 413:",
        "                if refusal.status == 400:",
        DELIVER,
    ),
    m(
        "DL2",
        "a partly stored video is deleted from the inputs bucket (so it stays)",
        DELIVER_PY,
        "        await self.storage.delete(OUTPUT_BUCKET, [job.output_path])",
        '        await self.storage.delete("video-inputs", [job.output_path])',
        DELIVER,
    ),
    m(
        "DL3",
        "an output URL that keeps expiring is fetched one more time than DELIVERY_ATTEMPTS",
        DELIVER_PY,
        "                if attempt >= DELIVERY_ATTEMPTS:\n",
        "                if attempt > DELIVERY_ATTEMPTS:\n",
        FLOWS,
        DELIVER,
    ),
    m(
        "F1",
        "the progress state is not reset with a new status",
        FOLLOW_PY,
        "                    progress_state = ProgressState()\n",
        "                    pass\n",
        FOLLOW,
    ),
    m(
        "F2",
        "polls slow down without bound",
        FOLLOW_PY,
        "        self.interval = min(self.interval * POLL_GROWTH, self.provider.poll_interval * 2)",
        "        self.interval = self.interval * POLL_GROWTH",
        FOLLOW,
    ),
    m(
        "F3",
        "a task past its deadline while still running is followed on",
        FOLLOW_PY,
        "                if time.time() > deadline:\n                    await self._time_out(job, provider, task_id)\n"
        "                    return None\n                continue\n",
        "                continue\n",
        FLOWS,
    ),
    m(
        "SU1",
        "an input the key cannot see (403) fails the job as missing",
        SUBMIT_PY,
        "            if exc.status == 404:\n",
        "            if exc.status in (403, 404):\n",
        DELIVER,
    ),
    m(
        "SU2",
        "the last submission attempt waits as if another followed, and opens no breaker (`<=`)",
        SUBMIT_PY,
        "                    if attempt + 1 < self.settings.submit_attempts:",
        "                    if attempt + 1 <= self.settings.submit_attempts:",
        LOCAL_FAULTS,
    ),
    m(
        "SU3",
        "an input replaced beyond the limits after the request is submitted anyway",
        SUBMIT_PY,
        "        if check.problem is not None:\n",
        "        if False:\n",
        FLOWS,
    ),
    m(
        "P1",
        "a resumed job whose provider is not configured here crashes the task instead of waiting",
        PIPELINE_PY,
        "            if job.provider not in self.providers:",
        "            if False:",
        FLOWS,
        "tests/worker/test_crashes.py",
    ),
    m(
        "P2",
        "a task no worker has a key for stays processing forever, holding its user's quota",
        PIPELINE_PY,
        "        if time.time() > started + self.settings.job_deadline_seconds:",
        "        if False:",
        "tests/worker/test_crashes.py",
    ),
    # the stale inputs' listing (0055) ----------------------------------------------------------------
    m(
        "Q1",
        "a processing job's input is listed as stale",
        CLEANUP_SQL_FILE,
        "j.status in ('queued', 'processing')",
        "j.status in ('queued')",
        CLI_ERRORS,
        CLEANUP_SQL,
    ),
    m(
        "Q2",
        "an input exactly at the age is listed (`<=`)",
        CLEANUP_SQL_FILE,
        "     and o.created_at < now() - p_older_than",
        "     and o.created_at <= now() - p_older_than",
        CLI_ERRORS,
        CLEANUP_SQL,
    ),
    m(
        "Q3",
        "the stale listing reads the outputs bucket",
        CLEANUP_SQL_FILE,
        "   where o.bucket_id = 'video-inputs'",
        "   where o.bucket_id = 'video-outputs'",
        CLI_ERRORS,
    ),
    m(
        "Q4",
        "a limit of 0 is accepted",
        CLEANUP_SQL_FILE,
        "p_limit not between 1 and 100000",
        "p_limit not between 0 and 100000",
        CLI_ERRORS,
        CLEANUP_SQL,
    ),
    # the stand-ins ---------------------------------------------------------------------------------------
    m(
        "FS1",
        "the Storage stand-in answers a valid key's hidden object 'Bucket not found'",
        FAKE_STORAGE_PY,
        "            if not verified and conn.execute(BUCKET_AS_CALLER, (bucket_id,)).fetchone() is None:",
        "            if conn.execute(BUCKET_AS_CALLER, (bucket_id,)).fetchone() is None:",
        STORAGE,
    ),
    m(
        "FS2",
        "the Storage stand-in answers a missing bucket NoSuchKey to a valid key",
        FAKE_STORAGE_PY,
        "        if self.storage.bucket(bucket_id) is None:\n            raise no_such_bucket()\n"
        "        with self.storage.connect()",
        "        with self.storage.connect()",
        STORAGE,
    ),
    m(
        "GW1",
        "the gateway stand-in takes a secret key as a bearer token",
        FAKE_GATEWAY_PY,
        '        if bearer.startswith("sb_"):',
        '        if bearer.startswith("sb_publishable_"):',
        NEW_KEYS,
    ),
    m(
        "GW2",
        "the gateway stand-in takes a secret key from a browser",
        FAKE_GATEWAY_PY,
        '            if (headers.get("User-Agent") or "").startswith(BROWSER_AGENTS):',
        "            if False:",
        NEW_KEYS,
    ),
    m(
        "GW3",
        "the gateway stand-in forwards a publishable key without a user as service_role",
        FAKE_GATEWAY_PY,
        '            return bearer or self.role_token("anon")',
        '            return bearer or self.role_token("service_role")',
        NEW_KEYS,
    ),
    m(
        "GW4",
        "the gateway stand-in passes an unknown sb_ key on",
        FAKE_GATEWAY_PY,
        '        if apikey.startswith("sb_"):\n',
        "        if False:\n",
        NEW_KEYS,
    ),
]

# Survivors judged equivalent (docs/testing.md, "Mutation sweep of this wave", says why).
EQUIVALENT: dict[str, str] = {
    "T7": "every setting whose name says secret is a SecretStr, which takes any string the environment"
    " can give: no value of one is ever invalid, so none reaches the message",
    "F3": "the loop checks the deadline again before its next sleep: a processing answer came from a poll"
    " (fal's deliveries carry an ended request), and the poll set the next one a whole interval away",
}


def check(mutant: Mutant) -> str:
    """The file's text; SystemExit when the mutant's line is not there exactly once or repeats plant_bugs."""
    source = (ROOT / mutant.path).read_text()
    if source.count(mutant.original) != 1:
        raise SystemExit(f"{mutant.id}: the text to mutate is not exactly once in {mutant.path}; update this script")
    if any(p.path == mutant.path and p.original == mutant.original for p in PLANTS):
        raise SystemExit(f"{mutant.id}: plant_bugs.py already plants this line; a sweep's mutant must be fresh")
    for test in mutant.tests:
        if not (ROOT / test.split("::")[0]).exists():
            raise SystemExit(f"{mutant.id}: no test file {test.split('::')[0]}")
    return source


def run(mutant: Mutant) -> tuple[bool, str]:
    """Plant the mutant, run its tests, restore the file. (caught, how)."""
    file = ROOT / mutant.path
    source = check(mutant)
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *mutant.tests]
    try:
        file.write_text(source.replace(mutant.original, mutant.mutated))
        try:
            result = subprocess.run(
                command, cwd=ROOT, capture_output=True, text=True, check=False, timeout=TIMEOUT_SECONDS
            )
        except subprocess.TimeoutExpired:
            return True, "timeout"
    finally:  # KeyboardInterrupt included: the file is always restored
        file.write_text(source)
    if result.returncode not in (0, 1):  # 1: a test failed; anything else: the run itself broke
        raise SystemExit(f"{mutant.id}: pytest could not run {mutant.tests}:\n{result.stdout[-3000:]}{result.stderr}")
    failed = next((line for line in result.stdout.splitlines() if line.startswith(("FAILED tests", "ERROR tests"))), "")
    return result.returncode == 1, failed.split(" - ")[0].split("::")[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", metavar="ID", help="mutant ids to run (all when omitted)")
    parser.add_argument("--check", action="store_true", help="check every mutant's text is there; run nothing")
    args = parser.parse_args()
    ids = [x.id for x in MUTANTS]
    if len(set(ids)) != len(ids):
        raise SystemExit("duplicate mutant ids")
    unknown = set(args.only or []) - set(ids)
    if unknown:
        raise SystemExit(f"unknown mutant ids: {', '.join(sorted(unknown))}")
    chosen = [x for x in MUTANTS if not args.only or x.id in args.only]
    if args.check:
        for mutant in chosen:
            check(mutant)
        print(f"{len(chosen)} mutants, each text found exactly once, none of plant_bugs' rows")
        return 0
    caught = missed_real = 0
    started = time.monotonic()
    for mutant in chosen:
        t0 = time.monotonic()
        ok, how = run(mutant)
        caught += ok
        verdict = "caught" if ok else ("MISSED (equivalent)" if mutant.id in EQUIVALENT else "MISSED")
        missed_real += not ok and mutant.id not in EQUIVALENT
        detail = f" by {how}" if ok and how else ""
        print(f"{mutant.id:4} {verdict}{detail}  {mutant.bug}  [{time.monotonic() - t0:.0f} s]", flush=True)
    total = len(chosen)
    print(
        f"total: {caught}/{total} caught ({100 * caught / total:.1f} %), "
        f"{total - caught - missed_real} missed judged equivalent, {missed_real} missed otherwise "
        f"[{time.monotonic() - started:.0f} s]"
    )
    return 1 if missed_real else 0


if __name__ == "__main__":
    sys.exit(main())
