"""The emulator's HTTP server: the Synthesize Bio API protocol on loopback, offline.

Layers, so that a later fault plan can step in at one place per endpoint:

- :class:`_Handler` (transport) reads each HTTP request into a :class:`Request` and writes
  the :class:`Response` it gets back (JSON bytes, or a file streamed in chunks);
- :meth:`EmulatorApp.handle` (the one dispatch point) counts the request, matches a
  :data:`ROUTES` entry, checks the bearer token of ``/api/`` calls, asks
  :meth:`EmulatorApp.intercept` (the fault-plan hook: it may answer instead of the endpoint)
  and calls the endpoint's method ``endpoint_<name>``, then lets the fault that hit the
  request (if any) change the answer (:meth:`EmulatorApp.apply_fault`);
- the endpoint methods are plain functions of the request and the emulator's state;
- faults that live below HTTP answers (``drop``, ``drop_after``, ``stall``, ``truncate``,
  ``short``) travel with the :class:`Response` and the transport acts them out.

The fault plan's format is in :mod:`.faults`.

Generation runs in background threads (:class:`Job`) that write each result to a file;
downloads go through HMAC-signed, expiring URLs and never carry the bearer token.

Every model of the vocabulary's table is served: the baseline models by :mod:`.generate`,
reference conditioning by :mod:`.reference`, metadata prediction by :mod:`.annotate` (whose
candidates include every metadata value the emulator has been sent, :attr:`EmulatorApp.seen`).
Queries are refused (422) with the client's own checks (:func:`~synthbio_pipeline.vocabulary.query.wire_problems`),
given the emulator's gene count, so a ``counts`` vector of another length is refused too.

GEM-2 (:mod:`.gem2`) is one hook per endpoint; in self-hosted mode (``self_hosted=True``:
a model container) ``predict`` answers at once with an Arrow IPC stream (:mod:`.self_hosted`),
sent in chunks as it is generated, and the token is required only when tokens are given.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import shutil
import socket
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from synthbio_pipeline.vocabulary.models import MODELS, get_model, is_known_model
from synthbio_pipeline.vocabulary.query import example_wire_query, wire_problems

from . import annotate, gem2, generate, reference, self_hosted
from .faults import HTTP_DATE_AHEAD, STATUS_FAULTS, TRANSPORT_FAULTS, FaultPlan, FaultRule

DOWNLOAD_CHUNK_BYTES = 1 << 20
#: How many queries generate at the same time; later ones wait as ``queued``.
MAX_CONCURRENT_JOBS = 2


# --- requests, responses, routes -----------------------------------------------------------


@dataclass
class Request:
    """One HTTP request, as the endpoints see it."""

    method: str
    path: str
    query: dict[str, str]
    headers: Mapping[str, str]
    body: bytes = b""
    params: dict[str, str] = field(default_factory=dict)  # from the route's pattern
    #: The fault-plan rule that hit this request, and its plan (set by :meth:`EmulatorApp.intercept`).
    fault: FaultRule | None = None
    fault_plan: FaultPlan | None = None


@dataclass
class Response:
    """What an endpoint answers: a small body in memory, or a file streamed from disk."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    file: Path | None = None
    #: A body sent as it is made (chunked transfer encoding), e.g. an Arrow stream.
    chunks: Iterable[bytes] | None = None
    #: A fault the transport acts out: ``drop``, ``stall``, ``truncate`` or ``short``.
    fault: FaultRule | None = None

    @classmethod
    def json(cls, status: int, payload: Any, **headers: str) -> Response:
        return cls(status, json.dumps(payload).encode("utf-8"), headers=dict(headers))

    @classmethod
    def error(cls, status: int, message: str, **extra: Any) -> Response:
        return cls.json(status, {"error": message, **extra})


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    #: The endpoint's name: in the stats, and the suffix of its ``endpoint_<name>`` method.
    name: str
    authenticated: bool = True


ROUTES: tuple[Route, ...] = (
    Route("GET", re.compile(r"/api/models"), "list_models"),
    Route("GET", re.compile(r"/api/models/(?P<model_id>[^/]+)/example-query"), "example_query"),
    Route("POST", re.compile(r"/api/models/(?P<model_id>[^/]+)/predict"), "predict"),
    Route("GET", re.compile(r"/api/model-queries/(?P<query_id>[^/]+)/status"), "status"),
    Route("GET", re.compile(r"/download/(?P<query_id>[^/]+)"), "download", authenticated=False),
    # The control endpoints need the emulator's token too: anyone else who can reach it must not
    # steer its faults or read what was submitted.
    Route("GET", re.compile(r"/_emulator/stats"), "stats"),
    Route("POST", re.compile(r"/_emulator/faults"), "set_faults"),
)
#: Requests to these endpoints are not counted: they observe or steer the emulator, not the API.
UNCOUNTED = frozenset({"stats", "set_faults"})

#: The message of a query failed by a ``failed`` fault: a short line, then a server traceback.
INJECTED_FAILURE = (
    "generation failed: CUDA error: an illegal memory access was encountered (injected fault)\n"
    "Traceback (most recent call last):\n"
    '  File "/srv/worker.py", line 212, in run\n'
    "    outputs = model.generate(batch)\n"
    "RuntimeError: CUDA error: an illegal memory access was encountered"
)


def body_hash(body: Mapping[str, Any]) -> str:
    """SHA-256 of a query body's canonical JSON, ``source`` left out (the stats' submission key)."""
    canonical = {key: value for key, value in body.items() if key != "source"}
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- configuration, jobs, stats ------------------------------------------------------------


@dataclass(frozen=True)
class EmulatorConfig:
    tokens: frozenset[str] = frozenset()
    latency: float = 1.0
    genes: int = generate.DEFAULT_GENES
    url_ttl: float = 300.0
    workdir: Path | None = None
    faults: FaultPlan | None = None
    #: At most this many queries in flight (submitted, not yet ready or failed) at once;
    #: a submission beyond it is refused with 429 and ``Retry-After``. ``None``: no cap.
    max_in_flight: int | None = None
    #: A self-hosted model container: ``predict`` answers at once with an Arrow stream, and
    #: without ``tokens`` no token is needed.
    self_hosted: bool = False


@dataclass
class Job:
    """One submitted model query and the thread generating its result."""

    query_id: str
    model_id: str
    body: dict[str, Any]
    submitted: float  # time.monotonic()
    path: Path
    phase: str = "queued"  # queued -> running -> done | failed
    message: str = ""
    thread: threading.Thread | None = None
    #: Set by a ``failed`` fault: the query has failed for good, whatever its generation does.
    forced_failure: str | None = None
    #: Writes the result to a path (``cancelled`` is asked between samples); default: by the model's kind.
    write: Callable[..., Any] | None = None

    def status(self, latency: float) -> str:
        """The status the API reports: finished phases show only once ``latency`` has passed."""
        if self.forced_failure is not None:
            return "failed"
        if self.phase in ("done", "failed") and time.monotonic() - self.submitted < latency:
            return "running"
        return {"done": "ready"}.get(self.phase, self.phase)


class Stats:
    """Thread-safe counters behind :meth:`Emulator.stats` and ``GET /_emulator/stats``."""

    def __init__(self):
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.submissions: Counter[str] = Counter()
        self.counters: Counter[str] = Counter()

    def count_request(self, endpoint: str) -> None:
        with self._lock:
            self.requests[endpoint] += 1

    def count_submission(self, digest: str) -> None:
        with self._lock:
            self.submissions[digest] += 1

    def record_in_flight(self, in_flight: int) -> None:
        with self._lock:
            self.counters["peak_in_flight"] = max(self.counters["peak_in_flight"], in_flight)

    def bump(self, name: str) -> None:
        with self._lock:
            self.counters[name] += 1

    def snapshot(self, faults: FaultPlan | None = None) -> dict[str, Any]:
        with self._lock:
            return {
                "faults": faults.injected_counts() if faults is not None else {},
                "requests": dict(self.requests),
                "submissions": dict(self.submissions),
                "downloads": self.counters["downloads"],
                "downloads_with_auth": self.counters["downloads_with_auth"],
                "auth_failures": self.counters["auth_failures"],
                "peak_in_flight": self.counters["peak_in_flight"],
                "refused_over_capacity": self.counters["refused_over_capacity"],
                "streamed": self.counters["streamed"],
            }


# --- the application ------------------------------------------------------------------------


class EmulatorApp:
    """The API's behaviour, independent of the HTTP transport."""

    def __init__(self, config: EmulatorConfig, workdir: Path):
        self.config = config
        self.workdir = workdir
        self.base_url = ""  # set once the server knows its port
        self.stats = Stats()
        self._secret = secrets.token_bytes(32)
        self._jobs: dict[str, Job] = {}
        self._jobs_lock = threading.Lock()
        self._slots = threading.Semaphore(MAX_CONCURRENT_JOBS)
        self._stopping = threading.Event()
        self.faults = FaultPlan.load(config.faults)
        #: Metadata values sent in queries: candidates of metadata prediction.
        self.seen = annotate.SeenValues()
        self._examples: dict[str, bytes] = {}
        self._examples_lock = threading.Lock()

    @property
    def stopping(self) -> threading.Event:
        """Set once :meth:`stop` has been called."""
        return self._stopping

    # -- dispatch

    def handle(self, request: Request) -> Response:
        """The single dispatch point: route, count, authenticate, intercept, answer."""
        route, params = _match(request.method, request.path)
        name = route.name if route else "unknown"
        if name not in UNCOUNTED:
            self.stats.count_request(name)
        if route is None:
            return Response.error(404, f"no such endpoint: {request.method} {request.path}")
        request.params = params
        if route.authenticated:
            refused = self._authenticate(request)
            if refused is not None:
                return refused
        answer = self.intercept(name, request)
        if answer is not None:
            return answer
        response = getattr(self, f"endpoint_{name}")(request, **params)
        return self.apply_fault(name, request, response)

    # -- faults

    def intercept(self, endpoint: str, request: Request) -> Response | None:
        """The fault-plan hook, before the endpoint: an answer that replaces the endpoint's, or ``None``.

        Asks the plan which rule (if any) hits this request and keeps it on ``request.fault``.
        A 429/5xx or ``drop`` answers here, so the request has no effect; ``failed`` marks the
        query as failed before the status endpoint reads it.
        """
        if endpoint in UNCOUNTED:
            return None
        plan = request.fault_plan = self.faults  # the plan may be replaced meanwhile: keep this one
        rule = request.fault = plan.decide(endpoint)
        if rule is None:
            return None
        if rule.fault == "drop":
            plan.record(rule)
            return Response(0, fault=rule)  # the transport hangs up
        if rule.fault in STATUS_FAULTS:
            plan.record(rule)
            return self._fault_answer(rule)
        if rule.fault == "failed":
            job = self._job(request.params.get("query_id", ""))
            if job is not None:
                job.forced_failure = INJECTED_FAILURE
                plan.record(rule)
        return None

    def apply_fault(self, endpoint: str, request: Request, response: Response) -> Response:
        """The fault-plan hook, after the endpoint: change its answer, or hand it to the transport."""
        plan, rule = request.fault_plan, request.fault
        if plan is None:
            return response
        if endpoint == "status" and response.status == 200 and b'"downloadUrl"' in response.body:
            # expire_url: this hit, or one carried over from an answer that was not ready.
            expire = rule if rule is not None and rule.fault == "expire_url" else plan.take_carried()
            if expire is not None:
                payload = json.loads(response.body)
                payload["downloadUrl"] = self.signed_url(payload["modelQueryId"], ttl=-1)
                plan.record(expire)
                response = Response.json(200, payload)
        elif rule is not None and rule.fault == "expire_url":
            plan.carry(rule)
        if rule is not None and rule.fault in TRANSPORT_FAULTS:
            plan.record(rule)
            response.fault = rule
        return response

    def _fault_answer(self, rule: FaultRule) -> Response:
        answer = Response.error(int(rule.fault), f"injected fault: {rule.fault}")
        if rule.retry_after == "http-date":
            answer.headers["Retry-After"] = formatdate(time.time() + HTTP_DATE_AHEAD, usegmt=True)
        elif rule.retry_after is not None:
            answer.headers["Retry-After"] = f"{rule.retry_after:g}"
        return answer

    def _authenticate(self, request: Request) -> Response | None:
        if self.config.self_hosted and not self.config.tokens:
            return None  # a container without auth
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            self.stats.bump("auth_failures")
            return Response.error(401, "missing bearer token: send 'Authorization: Bearer <token>'")
        if self.config.tokens and not any(hmac.compare_digest(token, known) for known in self.config.tokens):
            self.stats.bump("auth_failures")
            return Response.error(401, "invalid API token")
        return None

    # -- endpoints

    def endpoint_list_models(self, request: Request) -> Response:
        models = [
            {"model_id": spec.model_id, "family": spec.family, "modality": spec.modality, "kind": spec.kind}
            for spec in MODELS
        ]
        return Response.json(200, {"models": models + gem2.listed_models()})

    def endpoint_example_query(self, request: Request, model_id: str) -> Response:
        if gem2.is_served(model_id):
            return Response.json(200, {"example_query": gem2.example_query(model_id, self.config.genes)})
        if not is_known_model(model_id):
            return Response.error(404, f"unknown model: {model_id}")
        return Response(200, self._example_query(model_id))

    def _example_query(self, model_id: str) -> bytes:
        """The example query's JSON (made once per model: a counts example holds whole samples)."""
        with self._examples_lock:
            if model_id not in self._examples:
                spec, genes = get_model(model_id), self.config.genes

                def counts_of(metadata: Mapping[str, Any]) -> list[int]:
                    self.seen.add(metadata)  # the samples are of this metadata: metadata prediction knows it
                    return generate.expected_counts(metadata, spec.modality, spec.default_total_count, genes).tolist()

                example = example_wire_query(model_id, counts_of if spec.takes_counts else None)
                self._examples[model_id] = json.dumps({"example_query": example}).encode("utf-8")
            return self._examples[model_id]

    def endpoint_predict(self, request: Request, model_id: str) -> Response:
        if not (is_known_model(model_id) or gem2.is_served(model_id)):
            return Response.error(404, f"unknown model: {model_id}")
        try:
            body = json.loads(request.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as error:
            return Response.error(400, f"the request body is not JSON: {error}")
        if gem2.is_served(model_id):
            return self._predict_gem2(model_id, body)
        # The client's own checks, under the wire's names; the emulator knows its gene count.
        problems = wire_problems(model_id, body, genes=self.config.genes)
        if problems:
            errors = [{"path": problem.path, "message": problem.message} for problem in problems]
            return Response.json(422, {"error": "Invalid query", "errors": errors})
        if self.config.self_hosted:
            return self._stream(body, self._gem1_stream(model_id, body))
        return self._accepted(self._submit(model_id, body))

    def _predict_gem2(self, model_id: str, body: Any) -> Response:
        checked, problems = gem2.check(model_id, body, self.config.genes)
        if problems:
            return Response.json(422, gem2.invalid_body(problems))
        plan = gem2.plan(checked)
        if self.config.self_hosted:
            return self._stream(body, self_hosted.gem2_stream(plan, self.config.genes))

        def write(path: Path, cancelled: Callable[[], bool], extra: dict[str, Any]) -> None:
            gem2.write_result(path, plan, genes=self.config.genes, extra=extra, cancelled=cancelled)

        return self._accepted(self._submit(model_id, body, write))

    def _gem1_stream(self, model_id: str, body: Mapping[str, Any]) -> Iterable[bytes]:
        """A GEM-1 query's self-hosted answer: the samples (or predictions) its hosted result holds."""
        kind = get_model(model_id).kind
        for item in body["inputs"]:
            self.seen.add(item.get("metadata"))
        if kind == "predict-metadata":
            return self_hosted.gem1_metadata_stream(model_id, body, self.config.genes, self.seen.snapshot())
        plan = (reference.plan_query if kind == "reference-conditioning" else generate.plan_query)(model_id, body)
        return self_hosted.gem1_stream(plan, self.config.genes)

    def _stream(self, body: Mapping[str, Any], chunks: Iterable[bytes]) -> Response:
        """A self-hosted answer: the Arrow stream, sent as it is generated."""
        self.stats.count_submission(body_hash(body))
        self.stats.bump("streamed")
        return Response(200, content_type=self_hosted.CONTENT_TYPE, chunks=chunks)

    def _accepted(self, job: Job | None) -> Response:
        """The answer to a submission: its query id, or 429 when too many are in flight."""
        if job is None:
            self.stats.bump("refused_over_capacity")
            answer = Response.error(429, f"too many queries in flight (at most {self.config.max_in_flight})")
            answer.headers["Retry-After"] = "1"
            return answer
        return Response.json(200, {"modelQueryId": job.query_id})

    def endpoint_status(self, request: Request, query_id: str) -> Response:
        job = self._job(query_id)
        if job is None:
            return Response.error(404, f"unknown model query: {query_id}")
        status = job.status(self.config.latency)
        payload: dict[str, Any] = {"status": status, "modelQueryId": job.query_id}
        if status == "ready":
            payload["downloadUrl"] = self.signed_url(job.query_id)
        elif status == "failed":
            payload["message"] = job.forced_failure or job.message
        return Response.json(200, payload)

    def endpoint_download(self, request: Request, query_id: str) -> Response:
        if "Authorization" in request.headers:
            # An object store refuses a second credential next to a signed URL.
            self.stats.bump("downloads_with_auth")
            return _s3_error(
                400,
                "InvalidArgument",
                "Only one auth mechanism allowed; the URL is signed, send no Authorization header",
            )
        refusal = self._check_signature(query_id, request.query)
        if refusal is not None:
            return refusal
        job = self._job(query_id)
        if job is None or job.phase != "done" or not job.path.exists():
            return _s3_error(404, "NoSuchKey", "The specified key does not exist.")
        self.stats.bump("downloads")
        return Response(200, content_type="application/json", file=job.path)

    def endpoint_stats(self, request: Request) -> Response:
        return Response.json(200, self.stats.snapshot(self.faults))

    def endpoint_set_faults(self, request: Request) -> Response:
        """``POST /_emulator/faults``: the JSON body replaces the plan (``{}``: no faults)."""
        try:
            plan = FaultPlan.from_dict(json.loads(request.body.decode("utf-8") or "{}"))
        except (UnicodeDecodeError, ValueError) as error:  # FaultPlanError is a ValueError
            return Response.error(400, f"bad fault plan: {error}")
        self.faults = plan
        return Response.json(200, {"rules": len(plan.rules), "plan": plan.to_dict()})

    # -- signed URLs

    def signed_url(self, query_id: str, ttl: float | None = None) -> str:
        """A fresh download URL for a query, valid for ``url_ttl`` (or ``ttl``) seconds."""
        ttl = self.config.url_ttl if ttl is None else ttl
        expires = int(time.time() + ttl + 0.999)  # rounded up to whole seconds
        return f"{self.base_url}/download/{query_id}?expires={expires}&signature={self._sign(query_id, expires)}"

    def _sign(self, query_id: str, expires: int) -> str:
        return hmac.new(self._secret, f"{query_id}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def _check_signature(self, query_id: str, query: Mapping[str, str]) -> Response | None:
        expires, signature = query.get("expires", ""), query.get("signature", "")
        if not expires.isdigit() or not signature:
            return _s3_error(403, "AccessDenied", "Query-string authentication requires expires and signature")
        if not hmac.compare_digest(signature, self._sign(query_id, int(expires))):
            return _s3_error(403, "SignatureDoesNotMatch", "The request signature does not match.")
        if time.time() > int(expires):
            return _s3_error(403, "AccessDenied", "Request has expired")
        return None

    # -- jobs

    def _submit(self, model_id: str, body: dict[str, Any], write: Callable[..., Any] | None = None) -> Job | None:
        """Accept a query, or ``None`` when ``max_in_flight`` queries are already in flight.

        ``write(path, cancelled, extra)`` writes its result (default: by the model's kind)."""
        query_id = uuid.uuid4().hex
        job = Job(query_id, model_id, body, time.monotonic(), self.workdir / f"{query_id}.json", write=write)
        with self._jobs_lock:
            in_flight = sum(
                1 for other in self._jobs.values() if other.status(self.config.latency) in ("queued", "running")
            )
            if self.config.max_in_flight is not None and in_flight >= self.config.max_in_flight:
                return None
            self._jobs[query_id] = job
        self.stats.record_in_flight(in_flight + 1)
        self.stats.count_submission(body_hash(body))
        if write is None:  # GEM-1: metadata prediction knows the values it has been sent
            for item in body["inputs"]:
                self.seen.add(item.get("metadata"))
        job.thread = threading.Thread(target=self._run, args=(job,), name=f"emulator-{query_id[:8]}", daemon=True)
        job.thread.start()
        return job

    def _job(self, query_id: str) -> Job | None:
        with self._jobs_lock:
            return self._jobs.get(query_id)

    def _run(self, job: Job) -> None:
        with self._slots:
            if self._stopping.is_set():
                return
            job.phase = "running"
            try:
                self._generate(job)
            except Exception as error:  # reported through the status endpoint, as the service does
                job.message = f"generation failed: {error}\n{traceback.format_exc()}"
                job.phase = "failed"
                return
            if not self._stopping.is_set():
                job.phase = "done"

    def _generate(self, job: Job) -> None:
        """Write a job's result: expression (baseline, reference conditioning) or predicted metadata."""
        if job.write is not None:
            job.write(job.path, self._stopping.is_set, {"query_id": job.query_id})
            return
        kind = get_model(job.model_id).kind
        options = {"genes": self.config.genes, "extra": {"query_id": job.query_id}, "cancelled": self._stopping.is_set}
        if kind == "predict-metadata":
            annotate.write_result(job.path, job.model_id, job.body, seen=self.seen.snapshot(), **options)
            return
        plan = (reference.plan_query if kind == "reference-conditioning" else generate.plan_query)(
            job.model_id, job.body
        )
        generate.write_result(job.path, plan, **options)

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel generation and wait (briefly) for the generator threads."""
        self._stopping.set()
        with self._jobs_lock:
            threads = [job.thread for job in self._jobs.values() if job.thread is not None]
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


def _match(method: str, path: str) -> tuple[Route | None, dict[str, str]]:
    for route in ROUTES:
        found = route.pattern.fullmatch(path)
        if found and route.method == method:
            return route, found.groupdict()
    return None, {}


def _s3_error(status: int, code: str, message: str) -> Response:
    body = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>'
    return Response(status, body.encode("utf-8"), content_type="application/xml")


# --- HTTP transport -------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    """Turns HTTP requests into :class:`Request` objects and writes the app's :class:`Response`."""

    protocol_version = "HTTP/1.1"
    server_version = "synthbio-emulator"
    timeout = 300  # seconds an idle keep-alive connection may hold its thread
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: request lines would carry signed URLs

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        query = {key: values[-1] for key, values in parse_qs(url.query, keep_blank_values=True).items()}
        request = Request(self.command, url.path, query, self.headers, body)
        try:
            response = self.server.app.handle(request)
        except Exception:  # a bug in the emulator: answer 500 rather than drop the connection
            response = Response.error(500, "internal emulator error", detail=traceback.format_exc(limit=3))
        fault = response.fault.fault if response.fault is not None else None
        if fault in ("drop", "drop_after"):
            self._hang_up()
            return
        if fault == "stall" and self.server.app.stopping.wait(response.fault.stall_seconds):
            self._hang_up()  # the emulator is stopping: do not hold its thread any longer
            return
        self._write(response)

    def _hang_up(self) -> None:
        """Close the connection without a word, as a dropped network does."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _write_chunks(self, response: Response) -> None:
        """A body of unknown length, in chunked transfer encoding, written as it is made."""
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Transfer-Encoding", "chunked")
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            fault = response.fault
            # ``short``: whole record batches up to keep_fraction of the samples, then nothing more.
            cut = fault is not None and fault.fault == "short"
            keep = int(getattr(response.chunks, "total_rows", 0) * fault.keep_fraction) if cut else 0
            for chunk in response.chunks:
                if cut and getattr(response.chunks, "rows_sent", 0) > keep:
                    self.wfile.flush()
                    self._hang_up()
                    return
                if chunk:
                    self.wfile.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                if self.server.app.stopping.is_set():
                    self._hang_up()
                    return
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away mid-stream
        except Exception:  # a bug while generating: the stream ends without its end marker
            traceback.print_exc(limit=3)
            self._hang_up()

    def _write(self, response: Response) -> None:
        if response.chunks is not None:
            self._write_chunks(response)
            return
        size = response.file.stat().st_size if response.file is not None else len(response.body)
        fault = response.fault.fault if response.fault is not None else None
        sent = int(size * response.fault.keep_fraction) if fault in ("truncate", "short") else size
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(sent if fault == "truncate" else size))
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if response.file is None:
                self.wfile.write(response.body[:sent])
            else:
                with open(response.file, "rb") as source:
                    left = sent
                    while left > 0 and (chunk := source.read(min(DOWNLOAD_CHUNK_BYTES, left))):
                        self.wfile.write(chunk)
                        left -= len(chunk)
            if fault == "short":
                self.wfile.flush()
                self._hang_up()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away mid-body


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64  # many clients (a Snakemake run's jobs) may connect at once
    app: EmulatorApp

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (a read timeout, a stall, a drop) resets its connection:
        # routine under a fault plan, not worth a traceback on stderr.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class _Server6(_Server):
    address_family = socket.AF_INET6


# --- lifecycle ------------------------------------------------------------------------------


class Emulator:
    """A running emulator: ``.url``, ``.stats()``, ``.stop()``; also a context manager."""

    def __init__(self, host: str, port: int, config: EmulatorConfig):
        self.config = config
        self._own_workdir = config.workdir is None
        workdir = Path(tempfile.mkdtemp(prefix="synthbio-emulator-")) if self._own_workdir else Path(config.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        self.app = EmulatorApp(config, workdir)
        server_class = _Server6 if ":" in host else _Server
        self._server = server_class((host, port), _Handler)
        self._server.app = self.app
        bound_host, bound_port = self._server.server_address[:2]
        self.host, self.port = bound_host, bound_port
        self.url = f"http://[{bound_host}]:{bound_port}" if ":" in bound_host else f"http://{bound_host}:{bound_port}"
        self.app.base_url = self.url
        # A short poll interval makes stop() quick (shutdown waits for the next poll).
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="emulator-http", daemon=True
        )
        self._stopped = False

    @property
    def workdir(self) -> Path:
        """Where result files are written."""
        return self.app.workdir

    def start(self) -> Emulator:
        self._thread.start()
        return self

    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters (requests per endpoint, submissions per body hash, downloads,
        faults injected per ``endpoint:kind``...)."""
        return self.app.stats.snapshot(self.app.faults)

    def set_faults(self, plan: FaultPlan | dict | str | Path | None) -> None:
        """Replace the fault plan of the running emulator (``None``: no faults).

        The new plan counts request ordinals and ``stats()["faults"]`` from zero.
        """
        self.app.faults = FaultPlan.load(plan)

    def stop(self) -> None:
        """Stop serving, cancel generation, and remove the result files unless ``workdir`` was given."""
        if self._stopped:
            return
        self._stopped = True
        self._server.shutdown()
        self._server.server_close()
        self.app.stop()
        if self._own_workdir:
            shutil.rmtree(self.app.workdir, ignore_errors=True)

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"Emulator(url={self.url!r}, genes={self.config.genes}, latency={self.config.latency})"


def start_emulator(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    tokens: Iterable[str] = (),
    latency: float = 1.0,
    genes: int = generate.DEFAULT_GENES,
    url_ttl: float = 300.0,
    workdir: str | Path | None = None,
    faults: FaultPlan | dict | str | Path | None = None,
    max_in_flight: int | None = None,
    self_hosted: bool = False,
) -> Emulator:
    """Start an emulator serving in a background thread; ``port=0`` picks a free port.

    ``tokens`` are the accepted bearer tokens (none: any non-empty token is accepted);
    ``latency`` is the least time from submission to ``ready``; ``genes`` the length of
    every counts vector; ``url_ttl`` the lifetime of a signed download URL; ``workdir``
    keeps the result files (default: a temporary folder removed by :meth:`Emulator.stop`);
    ``faults`` is a fault plan (see :mod:`synthbio_pipeline.emulator.faults`);
    ``max_in_flight`` caps the queries in flight (more are refused with 429), as a busy
    service caps a customer's concurrency. ``self_hosted`` makes it a model container: every
    ``predict`` is answered at once with an Arrow IPC stream, and no token is needed unless
    ``tokens`` are given.
    """
    known = len(generate.ensembl_gene_ids())
    if not 1 <= genes <= known:
        raise ValueError(f"genes must be 1 to {known:,} (the human Ensembl gene ids the emulator has), not {genes:,}")
    config = EmulatorConfig(
        tokens=frozenset(tokens),
        latency=float(latency),
        genes=int(genes),
        url_ttl=float(url_ttl),
        workdir=Path(workdir) if workdir is not None else None,
        faults=FaultPlan.load(faults),
        max_in_flight=None if max_in_flight is None else int(max_in_flight),
        self_hosted=bool(self_hosted),
    )
    return Emulator(host, port, config).start()
