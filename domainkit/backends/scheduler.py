"""The bounded queue in front of the runtime's chat backend (``domainkit.backends``):
waiting requests are generated together, and a full queue is refused at once."""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field

from domainkit.backends.base import ChatBackend, GenRequest, JoinsRunningBatch, ScoresChoices
from domainkit.errors import DomainkitError

log = logging.getLogger(__name__)


# Prompt tokens prefilled before a batch of newcomers starts streaming: prefilled a few at
# a time, the first stream while the rest are prefilled (docs/decisions.md, "newcomers join
# 512 prompt tokens at a time").
JOIN_TOKENS = 512


class BusyError(DomainkitError):
    """Too many requests are waiting; the caller should retry later (HTTP 503)."""


@dataclass
class _Job:
    request: GenRequest
    future: Future = field(default_factory=Future)


class Scheduler:
    """A bounded queue in front of a generator. One worker thread generates waiting
    requests together, each row with its own sampling settings; when ``max_queue`` requests
    are already waiting, ``submit`` raises ``BusyError`` at once instead of letting latency
    grow without bound. A request whose caller has gone (``GenRequest.cancelled``) is
    dropped from the queue, or stops within one decoding step when it is already generating.

    With a generator that joins a running batch (``JoinsRunningBatch``, the ``local``
    backend), batching is continuous: a request joins the running batch between decoding
    steps, up to ``max_batch`` rows, and leaves it as soon as it is done. Any other
    generator gets every waiting request (up to ``max_batch``) in one ``generate`` call.
    """

    def __init__(self, generator: ChatBackend, max_batch: int = 8, max_queue: int = 64):
        self.generator = generator
        self.max_batch = max_batch
        self._queue: queue.Queue[_Job] = queue.Queue(maxsize=max_queue)
        self._running = 0
        # The continuous batch, else None.
        self.batch = (
            generator.decoder(max_batch, join_tokens=JOIN_TOKENS)
            if isinstance(generator, JoinsRunningBatch)
            else None
        )
        self._worker = threading.Thread(target=self._run, name="domainkit-generate", daemon=True)
        self._worker.start()

    @property
    def waiting(self) -> int:
        """Requests queued, not yet generating."""
        return self._queue.qsize()

    @property
    def running(self) -> int:
        """Requests being generated now."""
        return self._running

    @property
    def capacity(self) -> int:
        return self._queue.maxsize

    def submit(self, request: GenRequest) -> Future:
        job = _Job(request)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise BusyError(
                f"the server is busy ({self._queue.maxsize} requests waiting); retry shortly"
            ) from None
        return job.future

    def _run(self) -> None:
        if self.batch is not None:
            self._run_continuous(self.batch)
        while True:
            jobs = [self._queue.get()]
            while len(jobs) < self.max_batch:
                try:
                    jobs.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._generate(jobs)

    def _run_continuous(self, batch) -> None:
        """Between decoding steps: take waiting requests while the batch has room (scored
        ones are scored there and then, one by one), then one step of the batch."""
        while True:
            jobs = [] if len(batch) else [self._queue.get()]
            while batch.free > len(jobs):
                try:
                    jobs.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            for job in jobs:
                self._start(job, batch)
            self._running = len(batch)
            if len(batch):
                batch.step()
            self._running = len(batch)

    def _start(self, job: _Job, batch) -> None:
        if not _claim(job):
            return
        generator = self.generator
        if job.request.choices and isinstance(generator, ScoresChoices):
            self._score(generator, job)
            return
        if not isinstance(generator, JoinsRunningBatch):
            self._call([job])
            return
        try:
            row = generator.row(job.request, lambda result: _deliver(job, result))
        except Exception as e:  # e.g. a prompt the chat template cannot render
            job.future.set_exception(e)
            return
        if row is not None:  # None: answered at once (a reply kept from an earlier run)
            batch.add(row)

    def _generate(self, jobs: list[_Job]) -> None:
        live = [job for job in jobs if _claim(job)]
        generator = self.generator
        if isinstance(generator, ScoresChoices):
            # A backend that scores choices scores one request at a time: in one call with
            # others, each answer would wait for the whole batch to be scored.
            for job in [j for j in live if j.request.choices]:
                if job.request.cancelled.is_set():  # its caller went while others were scored
                    job.future.set_exception(CancelledError())
                    continue
                self._score(generator, job)
            live = [j for j in live if not j.request.choices]
        if live:
            self._call(live)

    def _score(self, scorer: ScoresChoices, job: _Job) -> None:
        self._running = 1
        try:
            result = scorer.score_choices(job.request)
        except BaseException as e:  # handed to the caller; the worker keeps serving
            log.exception("scoring failed")
            job.future.set_exception(e)
            return
        finally:
            self._running = 0
        _deliver(job, result)

    def _call(self, live: list[_Job]) -> None:
        self._running = len(live)
        try:
            results = self.generator.generate([j.request for j in live])
        # Handed to the callers, whatever it is (a KeyboardInterrupt inside the backend
        # too: nobody else could catch it in this thread); the worker keeps serving.
        except BaseException as e:
            log.exception("generation failed")
            for job in live:
                job.future.set_exception(e)
            return
        finally:
            self._running = 0
        for job, result in zip(live, results, strict=True):
            _deliver(job, result)


def _claim(job: _Job) -> bool:
    """Mark ``job`` running; False when its caller has gone (it is then cancelled)."""
    if job.request.cancelled.is_set():
        job.future.cancel()
    return job.future.set_running_or_notify_cancel()


def _deliver(job: _Job, result) -> None:
    if isinstance(result, BaseException):
        job.future.set_exception(result)
    else:
        job.future.set_result(result)
