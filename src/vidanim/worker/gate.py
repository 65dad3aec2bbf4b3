"""The submission gate: whether a job may be sent to a provider now, and to which.

It answers in the words of `control.Verdict`: submit (to the providers of a plan,
in order), `Wait` for a reason until a time, `Fail`, or `GiveUp` (a retry later or
a failure, `Stage._give_up`). What it weighs:

- the uncertain-submission policy: after a submission whose answer was lost, one
  more submission, never a third (`admit`, `uncertain`);
- submissions paused by an operator (0051) and each provider's circuit breaker:
  closed ones in order, the one probe of an open one only when no provider before
  it is closed (`plan`, `trip`, `healthy`);
- the provider's concurrency slot and the day's budget, reserved before every
  submission and given back when it certainly started nothing (`reserve`, `unreserve`);
- what the failed attempts at every provider leave the job to (`exhausted`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Set as AbstractSet
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from vidanim.errors import Conflict
from vidanim.jobs import Job
from vidanim.logs import log_event
from vidanim.pricing import estimate_cost
from vidanim.providers.base import (
    OperatorFault,
    Provider,
    ProviderError,
    SubmissionUncertain,
    TransientProviderError,
)
from vidanim.worker.control import UNAVAILABLE, Fail, GiveUp, Stage, Verdict, Wait

log = logging.getLogger("vidanim.worker")

# The shortest wait of a job no provider can take now.
WAIT_FLOOR_SECONDS = 1.0
# a job waiting for paused submissions looks again this often, in case a resume's wake-up was missed
PAUSED_RECHECK_SECONDS = 60.0
# Submissions a job may send after one whose answer was lost: one more, then no other.
MAX_UNCERTAIN_SUBMISSIONS = 2

#: the providers a job may try, in order, each with whether it probes an open breaker
Plan = list[tuple[str, bool]]


class BudgetReached(Exception):
    """Today's committed spend would pass the daily cap."""


class ProviderBusy(Exception):
    """The provider has as many tasks in flight as its cap allows."""


class SubmissionGate(Stage):
    # submissions whose answer was lost ---------------------------------------------------
    def admit(self, job: Job) -> Verdict | None:
        """None when the job may be submitted; after an uncertain submission, one more per job, never a third.

        At the bound the job waits for the webhook of a task it may hold (with webhooks,
        until its deadline), then fails without charge: paying for more tasks nobody can
        see is how a bill runs away.
        """
        if job.provider_status != "submission_uncertain":
            return None
        if job.uncertain_submissions < MAX_UNCERTAIN_SUBMISSIONS:
            log_event(
                log,
                "provider.submitting_again",
                logging.WARNING,
                **self._fields(job, provider=job.provider, submissions=job.provider_submissions),
            )
            return None
        left = job.created_at.timestamp() + self.settings.job_deadline_seconds - time.time()
        if self._webhooks(job.provider) and left > 0:
            return Wait("submission_uncertain", min(self.settings.uncertain_submission_wait_seconds, left))
        return Fail("submission_uncertain", UNAVAILABLE)

    async def uncertain(self, job: Job, provider: str, exc: SubmissionUncertain) -> None:
        """Count it and let the job wait: for the task's webhook (adoption), then one more try.

        With webhooks the wait is long enough for the provider to finish the task it may
        run; without them nothing can name that task, so the job waits a retry's backoff.
        """
        wait = (
            self.settings.uncertain_submission_wait_seconds if self._webhooks(provider) else self._delay(job.attempts)
        )
        log_event(
            log,
            "provider.submission_uncertain",
            logging.WARNING,
            **self._fields(
                job,
                provider=provider,
                reason=exc.message,
                uncertain_submissions=job.uncertain_submissions + 1,
                retry_in=round(wait, 3),
            ),
        )
        with contextlib.suppress(Conflict):
            await self.db.record_uncertain(job.id, self.worker_id, provider, wait)

    # the concurrency slot and the daily budget -----------------------------------------
    async def reserve(self, job: Job, name: str, provider: Provider) -> Decimal:
        """Take the provider's slot and reserve the submission's estimated cost under the daily cap; that cost.

        The reservation is the last look at the job before the provider is called: it
        raises Conflict unless the job is still queued under this worker's lease.
        """
        cost = estimate_cost(
            name,
            getattr(provider, "model", ""),
            job.options,
            self.settings.prices_usd_per_second,
            self.settings.price_unknown_model_usd_per_second,
        )
        if not await self.db.acquire_slot(job.id, self.worker_id, name):
            raise ProviderBusy
        if not await self.db.reserve_spend(job.id, self.worker_id, name, cost):
            raise BudgetReached
        return cost

    async def unreserve(self, job: Job, name: str, cost: Decimal, exc: ProviderError) -> None:
        """After a refused submission: give the reservation back when it certainly started nothing.

        That is an HTTP error, a connection never made, a request never fully sent (with
        the quota unit of a job canceled meanwhile); only a submission whose answer was
        lost (SubmissionUncertain) may have started a paid task, so its reservation stays.
        """
        if not isinstance(exc, SubmissionUncertain):
            await self.db.release_spend(job.id, name, cost)

    def budget_wait(self) -> Wait:
        """The day's spend is at the cap: wait in queued until the next UTC day (a raised cap wakes it)."""
        now = datetime.now(UTC)
        midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
        return Wait("budget_reached", (midnight - now).total_seconds() + 1)

    # pauses and circuit breakers --------------------------------------------------------
    async def plan(self, job: Job) -> Plan | Wait:
        """The providers the job may try now, or how long it waits for one."""
        paused = await self.db.paused(self.order)  # submissions paused by an operator (0051)
        plan = await self._usable_providers(job, paused)
        if plan:
            return plan
        if paused:  # a resume wakes the job; the recheck is the fallback
            return Wait("submissions_paused", PAUSED_RECHECK_SECONDS)
        return await self._providers_wait()

    async def _usable_providers(self, job: Job, paused: AbstractSet[str] = frozenset()) -> Plan:
        """The providers this job may try, in order, each with whether it probes an open breaker.

        Closed breakers first come in order; the probe of an open one is taken only when
        no provider before it is closed, so a job that will run on a healthy provider
        never holds another provider's one probe slot.
        """
        breakers = await self.db.breakers()
        plan: Plan = []
        for name in (n for n in self.order if n not in paused):
            breaker = breakers.get(name)
            if breaker is None or breaker.state == "closed":
                plan.append((name, False))
            elif not plan and await self.db.begin_probe(name, job.id, self._probe_seconds()):
                log_event(log, "provider.probe", logging.WARNING, **self._fields(job, provider=name, kind=breaker.kind))
                plan.append((name, True))
        return plan

    def _probe_seconds(self) -> float:
        """How long one probe may hold the half-open slot: its submission attempts, with time to spare."""
        return 2 * self.settings.provider_timeout_seconds * max(self.settings.submit_attempts, 1)

    async def trip(self, job: Job, provider: str, kind: str, reason: str) -> None:
        """An operator's fault at `provider`: open its breaker for every worker; alert once per change."""
        previous, until = await self.db.open_breaker(provider, kind, reason, self.settings.breaker_open_seconds)
        if previous == "closed":
            log_event(
                log,
                "provider.breaker_opened",
                logging.ERROR,
                provider=provider,
                kind=kind,
                reason=reason,
                open_until=until.isoformat(),
                worker_id=self.worker_id,
                job_id=str(job.id),
            )
        elif previous == "half_open":
            log_event(log, "provider.probe_failed", logging.WARNING, **self._fields(job, provider=provider, kind=kind))

    async def healthy(self, job: Job, provider: str, probing: bool) -> None:
        """The provider answered as a working provider does: a probe closes its breaker."""
        if probing and await self.db.close_breaker(provider):
            log_event(log, "provider.breaker_closed", logging.WARNING, provider=provider, job_id=str(job.id))

    async def _providers_wait(self) -> Wait:
        """No provider can take the job now: it waits in queued, no attempt spent, until a breaker is due."""
        breakers = await self.db.breakers()
        mine = [breakers.get(name) for name in self.order]
        now = time.time()
        if any(b is None or b.state != "open" for b in mine):
            # A probe is in flight, or has just closed a breaker: look again in a second (a
            # breaker's closing wakes the jobs already waiting, not one deferred after it).
            delay = WAIT_FLOOR_SECONDS
        else:
            dues = [b.open_until.timestamp() - now for b in mine if b is not None and b.open_until is not None]
            delay = min(max(min(dues, default=self.settings.breaker_open_seconds), WAIT_FLOOR_SECONDS), 86400.0)
        return Wait("providers_unavailable", delay)

    # after every provider was tried ------------------------------------------------------
    async def exhausted(self, errors: list[ProviderError], busy: list[str]) -> Verdict:
        """No provider of the plan took the job: what it is left to."""
        if busy and not any(e.code == "content_moderated" for e in errors):
            # A provider that could take the job is at its cap: look again shortly (a refusal
            # elsewhere is no answer from this one; content refused as against a policy is not
            # sent again and again while it waits).
            return Wait("provider_busy", self.settings.provider_busy_wait_seconds)
        if errors and all(isinstance(e, OperatorFault | TransientProviderError) for e in errors):
            # No provider could take the job, and none of it was the request's fault.
            return await self._providers_wait()
        return GiveUp(errors)
