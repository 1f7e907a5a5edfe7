"""Fault plans: make the emulator misbehave the way networks and busy services do.

A plan is a seed and a list of rules; each rule names an endpoint, a kind of fault, and
which of that endpoint's requests it hits::

    {"seed": 1, "faults": [
        {"endpoint": "predict",  "fault": "503", "requests": [1]},
        {"endpoint": "predict",  "fault": "429", "requests": [2], "retry_after": "http-date"},
        {"endpoint": "status",   "fault": "429", "fraction": 0.2, "retry_after": 1},
        {"endpoint": "status",   "fault": "drop", "fraction": 0.1},
        {"endpoint": "status",   "fault": "stall", "requests": [2], "stall_seconds": 40},
        {"endpoint": "status",   "fault": "expire_url", "requests": [3]},
        {"endpoint": "download", "fault": "truncate", "requests": [1], "keep_fraction": 0.5}]}

Rule fields:

- ``endpoint``: ``list_models``, ``example_query``, ``predict``, ``status`` or ``download``;
- ``fault``: the kind (below; ``429`` may be written as a number);
- exactly one of ``requests``, the 1-based ordinals of that endpoint's requests to hit
  (counted from when the plan was installed; requests refused for their token are not
  counted), or ``fraction``, the chance that each request is hit, drawn from a
  ``random.Random`` seeded with the plan's ``seed`` and the endpoint, so that a plan
  replays the same way for the same sequence of requests;
- ``retry_after`` (429 and 5xx): send ``Retry-After`` with this many seconds, or, when it is
  ``"http-date"``, an HTTP date 2 s ahead; without it no ``Retry-After`` is sent;
- ``stall_seconds`` (``stall``, default 60) and ``keep_fraction`` (``truncate``/``short``,
  default 0.5, in [0, 1)).

Kinds of fault:

- ``429``, ``500``, ``502``, ``503``, ``504``: that status instead of the endpoint's answer;
  the request has no effect (a submission is not accepted);
- ``drop``: the connection is closed without an answer, before the request is processed
  (it had no effect); ``drop_after``: the request is processed (a submission is accepted
  and counted), then the connection is closed without an answer: the lost-answer case;
- ``stall``: the request is processed, and its answer comes after ``stall_seconds``, past a
  client's read timeout;
- ``failed`` (status only): the query becomes ``failed`` for good, with a message that carries
  a server traceback after a line starting ``Traceback``;
- ``expire_url`` (status only): a ``ready`` answer carries a download URL that has already
  expired. A hit on an answer that is not ready yet is carried over to the next ready answer
  (at most one is carried);
- ``truncate`` (download only): only ``keep_fraction`` of the body is sent, with a matching
  ``Content-Length``: a complete answer holding a corrupt document; ``short`` (download, and
  predict): the full ``Content-Length`` is announced but the connection closes after
  ``keep_fraction`` of the body; a self-hosted emulator's Arrow stream stops after
  ``keep_fraction`` of its samples (whole record batches), without its end-of-stream
  marker, and the connection closes.

The first rule that hits a request decides its fault (every fraction rule still draws, so
the draws do not depend on which rules hit). ``FaultPlan.injected`` (``stats()["faults"]``)
counts the faults acted out, by ``"<endpoint>:<kind>"``, since the plan was installed
(replacing a plan starts its ordinals and counts from zero).

A plan is loaded by :meth:`FaultPlan.load` from a dict, a JSON text, or a ``.json`` /
``.yaml`` file (YAML needs PyYAML); ``start_emulator(faults=...)``, the CLI's
``--faults PATH_OR_JSON``, ``Emulator.set_faults(plan)`` and ``POST /_emulator/faults``
(JSON body, with the bearer token) take one.
"""

from __future__ import annotations

import json
import math
import random
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENDPOINTS = ("list_models", "example_query", "predict", "status", "download")
STATUS_FAULTS = ("429", "500", "502", "503", "504")
#: Faults the transport acts out, after the endpoint has answered.
TRANSPORT_FAULTS = ("drop_after", "stall", "truncate", "short")
KINDS = (*STATUS_FAULTS, "drop", "drop_after", "stall", "failed", "expire_url", "truncate", "short")
ONLY_ON = {
    "failed": ("status",),
    "expire_url": ("status",),
    "truncate": ("download",),
    "short": ("download", "predict"),
}
RULE_FIELDS = ("endpoint", "fault", "fraction", "requests", "retry_after", "stall_seconds", "keep_fraction")
#: ``Retry-After`` as an HTTP date is this many seconds ahead.
HTTP_DATE_AHEAD = 2


class FaultPlanError(ValueError):
    """A fault plan that cannot be used; the message says which field and why."""


@dataclass(frozen=True)
class FaultRule:
    endpoint: str
    fault: str
    fraction: float | None = None
    requests: frozenset[int] = frozenset()
    retry_after: float | str | None = None
    stall_seconds: float = 60.0
    keep_fraction: float = 0.5

    def __post_init__(self):
        where = f"fault plan rule {{endpoint: {self.endpoint!r}, fault: {self.fault!r}}}"
        if self.endpoint not in ENDPOINTS:
            raise FaultPlanError(f"fault plan: unknown endpoint {self.endpoint!r}; one of {', '.join(ENDPOINTS)}")
        if self.fault not in KINDS:
            raise FaultPlanError(f"fault plan: unknown fault {self.fault!r}; one of {', '.join(KINDS)}")
        if self.endpoint not in ONLY_ON.get(self.fault, (self.endpoint,)):
            where = " and ".join(ONLY_ON[self.fault])
            raise FaultPlanError(f"fault plan: {self.fault!r} applies to the {where} endpoint only")
        if (self.fraction is None) == (not self.requests):
            raise FaultPlanError(f"fault plan: a {self.fault!r} rule needs either 'fraction' or 'requests'")
        if self.fraction is not None and not (_is_number(self.fraction) and 0 <= self.fraction <= 1):
            raise FaultPlanError(f"{where}: fraction must be a number between 0 and 1, not {self.fraction!r}")
        if any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in self.requests):
            raise FaultPlanError(f"{where}: requests are 1-based ordinals (whole numbers from 1)")
        if self.retry_after is not None:
            if self.fault not in STATUS_FAULTS:
                raise FaultPlanError(f"{where}: retry_after goes with a 429 or 5xx fault")
            if self.retry_after != "http-date" and not (_is_number(self.retry_after) and self.retry_after >= 0):
                raise FaultPlanError(f'{where}: retry_after is seconds (a number >= 0) or "http-date"')
        if not (_is_number(self.stall_seconds) and self.stall_seconds >= 0):
            raise FaultPlanError(f"{where}: stall_seconds must be a number >= 0")
        if not (_is_number(self.keep_fraction) and 0 <= self.keep_fraction < 1):
            raise FaultPlanError(f"{where}: keep_fraction must be in [0, 1), not {self.keep_fraction!r}")

    @classmethod
    def from_dict(cls, item: Any) -> FaultRule:
        if not isinstance(item, Mapping):
            raise FaultPlanError(f"fault plan: each rule is an object, not {item!r}")
        unknown = sorted(set(item) - set(RULE_FIELDS))
        if unknown:
            raise FaultPlanError(
                f"fault plan: unknown rule field(s) {', '.join(unknown)}; known: {', '.join(RULE_FIELDS)}"
            )
        for required in ("endpoint", "fault"):
            if required not in item:
                raise FaultPlanError(f"fault plan: a rule needs {required!r}: {dict(item)!r}")
        fields = dict(item)
        fields["fault"] = str(fields["fault"])
        if "requests" in fields:
            ordinals = fields["requests"]
            if isinstance(ordinals, int) and not isinstance(ordinals, bool):
                ordinals = [ordinals]
            if not isinstance(ordinals, (list, tuple)):
                raise FaultPlanError(f"fault plan: 'requests' is a list of 1-based ordinals, not {ordinals!r}")
            fields["requests"] = frozenset(ordinals)
        return cls(**fields)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"endpoint": self.endpoint, "fault": self.fault}
        if self.fraction is not None:
            out["fraction"] = self.fraction
        else:
            out["requests"] = sorted(self.requests)
        if self.retry_after is not None:
            out["retry_after"] = self.retry_after
        if self.fault == "stall":
            out["stall_seconds"] = self.stall_seconds
        if self.fault in ("truncate", "short"):
            out["keep_fraction"] = self.keep_fraction
        return out


@dataclass
class FaultPlan:
    """Which requests get which fault; thread-safe, and counting what it injected."""

    rules: list[FaultRule] = field(default_factory=list)
    seed: int = 0

    def __post_init__(self):
        self._lock = threading.Lock()
        self._random = {endpoint: random.Random(f"{self.seed}:{endpoint}") for endpoint in ENDPOINTS}
        self._seen: Counter[str] = Counter()  # requests per endpoint since this plan was installed
        self._carried: FaultRule | None = None  # an expire_url hit waiting for a ready answer
        self.injected: Counter[str] = Counter()

    @classmethod
    def load(cls, plan: FaultPlan | Mapping | str | Path | None) -> FaultPlan:
        """A plan from a plan, a dict, a JSON text, or a JSON/YAML file path; ``None`` is no faults.

        A string starting with ``{`` is JSON text, any other string a path. Raises
        :class:`FaultPlanError` (a ``ValueError``) for a plan that cannot be used.
        """
        if plan is None:
            return cls()
        if isinstance(plan, FaultPlan):
            return plan
        if isinstance(plan, Path) or (isinstance(plan, str) and not plan.lstrip().startswith("{")):
            plan = _read_plan_file(Path(plan))
        elif isinstance(plan, str):
            plan = _parse_json(plan, "the fault plan")
        return cls.from_dict(plan)

    @classmethod
    def from_dict(cls, plan: Any) -> FaultPlan:
        if not isinstance(plan, Mapping):
            raise FaultPlanError(f"a fault plan is an object with 'seed' and 'faults', not {type(plan).__name__}")
        unknown = sorted(set(plan) - {"seed", "faults"})
        if unknown:
            raise FaultPlanError(f"fault plan: unknown field(s) {', '.join(unknown)}; known: seed, faults")
        faults = plan.get("faults") or []
        if not isinstance(faults, list):
            raise FaultPlanError("fault plan: 'faults' is a list of rules")
        seed = plan.get("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise FaultPlanError(f"fault plan: 'seed' is a whole number, not {seed!r}")
        return cls([FaultRule.from_dict(item) for item in faults], seed)

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "faults": [rule.to_dict() for rule in self.rules]}

    def decide(self, endpoint: str) -> FaultRule | None:
        """The rule that hits the next request to ``endpoint``, if any (not counted yet: see :meth:`record`)."""
        with self._lock:
            self._seen[endpoint] += 1
            ordinal = self._seen[endpoint]
            chosen = None
            for rule in self.rules:
                if rule.endpoint != endpoint:
                    continue
                # Every fraction rule draws for every request, so the draws do not depend on
                # which earlier rule happened to hit: the plan stays reproducible.
                hit = (
                    ordinal in rule.requests
                    if rule.fraction is None
                    else self._random[endpoint].random() < rule.fraction
                )
                if hit and chosen is None:
                    chosen = rule
            return chosen

    def record(self, rule: FaultRule) -> None:
        """Count a fault that was acted out."""
        with self._lock:
            self.injected[f"{rule.endpoint}:{rule.fault}"] += 1

    def carry(self, rule: FaultRule) -> None:
        """Keep an ``expire_url`` hit for the next ready answer (at most one is kept)."""
        with self._lock:
            self._carried = rule

    def take_carried(self) -> FaultRule | None:
        with self._lock:
            rule, self._carried = self._carried, None
            return rule

    def injected_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self.injected)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _parse_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as error:
        raise FaultPlanError(f"{what} is not valid JSON: {error}") from None


def _read_plan_file(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise FaultPlanError(f"cannot read the fault plan {str(path)!r}: {error.strerror or error}") from None
    if path.suffix.lower() not in (".yaml", ".yml"):
        return _parse_json(text, f"the fault plan {str(path)!r}")
    try:
        import yaml
    except ImportError:
        raise FaultPlanError(
            f"the fault plan {str(path)!r} is YAML, but PyYAML is not installed: write it as JSON"
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise FaultPlanError(f"the fault plan {str(path)!r} is not valid YAML: {error}") from None
