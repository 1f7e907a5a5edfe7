"""Fault plans: make the emulator misbehave the way networks and busy services do.

A plan is a list of rules; each names an endpoint, a kind of fault, and which of that
endpoint's requests it hits (their 1-based ordinals, counted from when the plan was
installed, or a fraction drawn from a random generator seeded by the plan's seed and the
endpoint, so a plan is reproducible)::

    {"seed": 1, "faults": [
        {"endpoint": "predict",  "fault": "503", "requests": [1]},
        {"endpoint": "status",   "fault": "429", "fraction": 0.2, "retry_after": 1},
        {"endpoint": "status",   "fault": "drop", "fraction": 0.1},
        {"endpoint": "status",   "fault": "expire_url", "requests": [3]},
        {"endpoint": "download", "fault": "truncate", "requests": [1], "keep_fraction": 0.5}]}

Endpoints: ``list_models``, ``example_query``, ``predict``, ``status``, ``download``.
Kinds of fault:

- ``429`` (with ``Retry-After``: ``retry_after`` seconds, or an HTTP date when it is
  ``"http-date"``), ``500``, ``502``, ``503`` (also with ``Retry-After``), ``504``;
- ``drop``: the connection is closed without an answer, before the request is processed
  (it had no effect); ``drop_after``: the request is processed (a submission is accepted
  and counted), then the connection is closed without an answer, the lost-answer case;
- ``stall``: the answer comes after ``stall_seconds`` (default 60), past a client's read timeout;
- ``failed`` (status): the query becomes ``failed`` for good, with a server traceback in its message;
- ``expire_url`` (status): a ready answer carries a download URL that has already expired;
- ``truncate`` (download): only ``keep_fraction`` (default 0.5) of the body is sent, with a
  matching ``Content-Length``: a corrupt document; ``short``: the full ``Content-Length`` is
  announced but the connection closes after ``keep_fraction`` of the body.

The first rule that hits a request decides its fault.
"""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path


ENDPOINTS = ("list_models", "example_query", "predict", "status", "download")
STATUS_FAULTS = ("429", "500", "502", "503", "504")
KINDS = (*STATUS_FAULTS, "drop", "drop_after", "stall", "failed", "expire_url", "truncate", "short")
ONLY_ON = {"failed": "status", "expire_url": "status", "truncate": "download", "short": "download"}


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
        if self.endpoint not in ENDPOINTS:
            raise ValueError(f"fault plan: unknown endpoint {self.endpoint!r}; one of {', '.join(ENDPOINTS)}")
        if self.fault not in KINDS:
            raise ValueError(f"fault plan: unknown fault {self.fault!r}; one of {', '.join(KINDS)}")
        if ONLY_ON.get(self.fault, self.endpoint) != self.endpoint:
            raise ValueError(f"fault plan: {self.fault!r} applies to the {ONLY_ON[self.fault]} endpoint only")
        if (self.fraction is None) == (not self.requests):
            raise ValueError(f"fault plan: a {self.fault!r} rule needs either 'fraction' or 'requests'")
        if self.fraction is not None and not 0 <= self.fraction <= 1:
            raise ValueError(f"fault plan: fraction must be between 0 and 1, not {self.fraction}")
        if not 0 <= self.keep_fraction < 1:
            raise ValueError(f"fault plan: keep_fraction must be in [0, 1), not {self.keep_fraction}")


@dataclass
class FaultPlan:
    """Which requests get which fault; thread-safe, and counting what it injected."""

    rules: list[FaultRule] = field(default_factory=list)
    seed: int = 0

    def __post_init__(self):
        self._lock = threading.Lock()
        self._random = {endpoint: random.Random(f"{self.seed}:{endpoint}") for endpoint in ENDPOINTS}
        self._seen: Counter[str] = Counter()  # requests per endpoint since this plan was installed
        self.injected: Counter[str] = Counter()

    @classmethod
    def load(cls, plan: "FaultPlan | dict | str | Path | None") -> "FaultPlan":
        """A plan from a plan, a dict, a JSON text, or a JSON/YAML file; ``None`` is no faults."""
        if plan is None:
            return cls()
        if isinstance(plan, FaultPlan):
            return plan
        if isinstance(plan, (str, Path)) and not str(plan).lstrip().startswith("{"):
            text = Path(plan).read_text()
            if Path(plan).suffix.lower() in (".yaml", ".yml"):
                import yaml

                plan = yaml.safe_load(text)
            else:
                plan = json.loads(text)
        elif isinstance(plan, str):
            plan = json.loads(plan)
        rules = []
        for item in plan.get("faults", []):
            item = dict(item)
            item["fault"] = str(item["fault"])
            if "requests" in item:
                item["requests"] = frozenset(int(n) for n in item["requests"])
            rules.append(FaultRule(**item))
        return cls(rules, int(plan.get("seed", 0)))

    def decide(self, endpoint: str) -> FaultRule | None:
        """The fault for the next request to ``endpoint``, if any (ordinals count from this plan's start)."""
        with self._lock:
            self._seen[endpoint] += 1
            ordinal = self._seen[endpoint]
            chosen = None
            for rule in self.rules:
                if rule.endpoint != endpoint:
                    continue
                # Every fraction rule draws for every request, so the draws do not depend on
                # which earlier rule happened to hit: the plan stays reproducible.
                hit = ordinal in rule.requests if rule.fraction is None else self._random[endpoint].random() < rule.fraction
                if hit and chosen is None:
                    chosen = rule
            if chosen is not None:
                self.injected[f"{endpoint}:{chosen.fault}"] += 1
            return chosen
