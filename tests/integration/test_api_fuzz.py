"""Fuzz the running REST API of a real one-node cluster from its OpenAPI document (schemathesis).

Real etcd and PostgreSQL, started by ``LocalCluster``. Every operation of src/pgha/api/openapi.yaml gets a fixed,
seeded set of generated requests (schemathesis' positive and, where the operation has inputs, negative
generation), plus a few hand-picked inputs the generator rarely reaches (``EDGE_QUERIES``, ``EDGE_BODIES``).

What fails the run: an answer of 500 or 501, a request the server answers with nothing (connection dropped, reset
or refused, or no reply within the call timeout), a run longer than its time budget, or, afterwards, a node whose
API no longer answers ``GET /patroni`` 200 with state ``running``. 503 (health checks), 502 (``/config`` unset,
``/failsafe``) and every 4xx are answers, not failures; a code the document does not list is reported as a
warning.

The read operations (GET/HEAD/OPTIONS) and the write operations are separate tests, so either runs alone
(``pytest tests/integration/test_api_fuzz.py -k write``). Generated write requests may restart PostgreSQL or
rewrite the dynamic configuration; the node must be running again within ``RECOVERY_TIMEOUT`` afterwards.
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.core import NotSet

from pgha.api.openapi import load_spec
from pgha.local.cluster import LocalCluster
from pgha.local.layout import Layout

from .conftest import TEST_TIMING, api_auth, free_base_port, make_workdir, wait_for

pytestmark = pytest.mark.integration

READ_METHODS = ("GET", "HEAD", "OPTIONS")
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
POSITIVE_EXAMPLES = 15  # per operation: 25 in all with the negative ones (fewer when an operation has no inputs)
NEGATIVE_EXAMPLES = 10
# A generated but well-formed dynamic configuration may legitimately stop PostgreSQL from starting (any GUC value
# is accepted, as Patroni accepts it) or pause the cluster: the node would then rightly not run again. /config
# writes get the hand-picked bad bodies only (each must be refused with 4xx and change nothing).
GENERATE_NOT = frozenset({"/config"})
READ_BUDGET = 60.0  # seconds for all read operations (18 s measured on the shared 2-core machine)
WRITE_BUDGET = 60.0  # seconds for all write operations (5 to 15 s measured, restarts included)
READ_CALL_TIMEOUT = 10.0  # a read never waits for the agent, PostgreSQL or the DCS
WRITE_CALL_TIMEOUT = 60.0  # a restart answers when done; a switchover polls the DCS for up to 20 s
RECOVERY_TIMEOUT = 120.0  # a generated restart or reinitialize may be under way when the fuzz ends
FAILURE_CODES = (500, 501)

HUGE = "9" * 5000  # more digits than int() converts (sys.get_int_max_str_digits(): 4300)
EDGE_QUERIES: tuple[dict[str, str], ...] = (
    {"lag": HUGE}, {"lag": "0x" + "f" * 5000}, {"lag": "0" + "7" * 5000}, {"lag": HUGE + ".5"},
    {"lag": "1e999"}, {"lag": "1e999GB"}, {"lag": "-1"}, {"lag": "nan"}, {"lag": "1.5TB"}, {"lag": ""},
    {"lag": "\x00"}, {"replication_state": "stréaming\r\n"}, {"tag_": ""}, {"tag_nofailover": HUGE},
    {"mode": "write", "lag": HUGE},
)
EDGE_BODIES: dict[tuple[str, str], tuple[Any, ...]] = {
    # role=replica: the filter fails on the primary, so only the parsing of the other value is exercised
    ("POST", "/restart"): ({"role": "replica", "timeout": HUGE}, {"role": "replica", "timeout": "1e999"},
                           {"timeout": 1e300}, {"timeout": 0}, {"schedule": HUGE}, {"schedule": "2030-01-01T00:00:00"},
                           {"postgres_version": HUGE}, {"postgres_version": "15." + HUGE},
                           {"postgres_version": "15.\u00b2"}, {"role": None},
                           {"restart_pending": "yes", "role": "replica"}),
    ("POST", "/switchover"): ({"leader": "node0", "scheduled_at": HUGE}, {"leader": "node0", "candidate": "node0"}),
    ("POST", "/failover"): ({"candidate": "node0"}, {"member": "nobody"}),
    ("POST", "/reinitialize"): ({"force": HUGE, "from_leader": [HUGE]},),
    # configurations pgha cannot use: refused with 400, the DCS left as it was
    ("PATCH", "/config"): ({"ttl": HUGE}, {"loop_wait": -1}, {"maximum_lag_on_failover": "lots"},
                           {"postgresql": {"use_slots": "maybe"}}, {"ttl": None, "loop_wait": [1]}),
    ("PUT", "/config"): ({"ttl": "soon"}, {"retry_timeout": {}}, {"synchronous_mode": 7}),
}


@dataclass
class FuzzRun:
    base_url: str
    spec: dict[str, Any]
    deadline: float
    call_timeout: float
    finished: float = 0.0
    sent: int = 0
    auth: tuple[str, str] | None = None  # the node's REST API credentials: the writes must get past 401
    problems: dict[str, tuple[int, list[str]]] = field(default_factory=dict)
    undocumented: dict[str, int] = field(default_factory=dict)

    def send(self, case: Any, label: str) -> None:
        if time.monotonic() > self.deadline:
            return  # over budget: check() fails the run; the remaining examples are not sent
        self.sent += 1
        try:
            response = case.call(base_url=self.base_url, timeout=self.call_timeout, auth=self.auth)
        except requests.RequestException as exc:
            self._problem(f"{label}: no answer ({type(exc).__name__})", case)
            return
        if response.status_code in FAILURE_CODES:
            self._problem(f"{label}: {response.status_code} {response.reason}", case)
        documented = self.spec["paths"][case.operation.path][case.operation.method.lower()]["responses"]
        if str(response.status_code) not in documented:
            key = f"{label} -> {response.status_code}"
            self.undocumented[key] = self.undocumented.get(key, 0) + 1

    def _problem(self, kind: str, case: Any) -> None:
        """One entry per kind of failure: how many requests, and the first three."""
        count, examples = self.problems.get(kind, (0, []))
        self.problems[kind] = (count + 1, examples + [_describe(case)] if len(examples) < 3 else examples)

    def check(self, what: str, budget: float, afterwards: str | None) -> None:
        """Fail with every failing kind of request, and ``afterwards`` (the node's state after the run, when
        wrong)."""
        for key, count in sorted(self.undocumented.items()):
            warnings.warn(f"undocumented status code: {key} ({count} requests)", stacklevel=2)
        lines = [f"  {kind}: {count} requests, e.g. " + "; ".join(examples)
                 for kind, (count, examples) in self.problems.items()]
        if self.finished > self.deadline:
            lines.append(f"  the fuzz did not finish within its budget of {budget}s")
        if afterwards:
            lines.append(f"  after the fuzz: {afterwards}")
        if lines:
            failing = sum(count for count, _ in self.problems.values())
            pytest.fail(f"{what}: {failing} failing requests of {self.sent}\n" + "\n".join(lines), pytrace=False)


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else f"{text[:40]}...({len(text)} chars)"


def _describe(case: Any) -> str:
    """The request, long values cut (the generated ones can be kilobytes)."""
    query = "&".join(f"{_short(k)}={_short(v)}" for k, v in (case.query or {}).items())
    body_text = "" if isinstance(case.body, NotSet) else f" body={_short(case.body)}"
    return f"{case.method.upper()} {case.formatted_path}{'?' + query if query else ''}{body_text}"


def _label(operation: Any) -> str:
    return f"{operation.method.upper()} {operation.path}"


def _operations(spec: dict[str, Any], methods: tuple[str, ...]) -> list[Any]:
    schema = schemathesis.openapi.from_dict(spec, config=schemathesis.Config())  # no schemathesis.toml lookup
    operations = [result.ok() for result in schema.get_all_operations()]
    chosen = [op for op in operations if op.method.upper() in methods]
    assert chosen, f"no {methods} operations in the document"
    # POST /reload last: each one queues a request for the node's loop, and a full queue answers restart and
    # reinitialize 503 until the loop has drained it, which would leave those two barely exercised
    return sorted(chosen, key=lambda op: _label(op) == "POST /reload")


def _has_inputs(spec: dict[str, Any], operation: Any) -> bool:
    raw = spec["paths"][operation.path][operation.method.lower()]
    return bool(raw.get("parameters") or raw.get("requestBody"))


def _generate(run: FuzzRun, operation: Any) -> None:
    """The seeded examples of one operation: positive, then negative when it has inputs to get wrong."""
    modes = [(GenerationMode.POSITIVE, POSITIVE_EXAMPLES)]
    if _has_inputs(run.spec, operation):
        modes.append((GenerationMode.NEGATIVE, NEGATIVE_EXAMPLES))
    for mode, examples in modes:
        label = f"{_label(operation)} [{mode.value}]"

        @settings(max_examples=examples, derandomize=True, database=None, deadline=None, print_blob=False,
                  suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
        @given(case=operation.as_strategy(generation_mode=mode))
        def fuzz_one(case: Any) -> None:
            run.send(case, label)

        fuzz_one()


def _fuzz(node: "Node", methods: tuple[str, ...], budget: float, call_timeout: float,
          edge_cases: Callable[[FuzzRun, Any], None]) -> FuzzRun:
    spec = load_spec()
    run = FuzzRun(node.base_url, spec, time.monotonic() + budget, call_timeout, auth=node.auth)
    operations = _operations(spec, methods)
    for operation in operations:  # first, while the node is as the fixture left it
        edge_cases(run, operation)
    for operation in operations:
        if operation.path in GENERATE_NOT:
            continue  # edge cases only, see GENERATE_NOT
        _generate(run, operation)
    run.finished = time.monotonic()
    return run


def _read_edges(run: FuzzRun, operation: Any) -> None:
    for query in EDGE_QUERIES:
        run.send(operation.Case(query=query), f"{_label(operation)} [edge]")


def _write_edges(run: FuzzRun, operation: Any) -> None:
    for body in EDGE_BODIES.get((operation.method.upper(), operation.path), ()):
        run.send(operation.Case(body=body, media_type="application/json"), f"{_label(operation)} [edge]")


# --- the node -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Node:
    base_url: str
    auth: tuple[str, str] | None = None

    def status(self) -> dict[str, Any]:
        response = requests.get(self.base_url + "/patroni", timeout=5)
        assert response.status_code == 200, response.status_code
        return response.json()

    def running(self) -> dict[str, Any] | None:
        status = self.status()
        return status if status.get("state") == "running" else None

    def wait_running(self, timeout: float) -> dict[str, Any]:
        return wait_for(self.running, timeout, "GET /patroni to answer 200 with state running")

    def problem_after(self, timeout: float) -> str | None:
        """None once the API answers GET /patroni 200 with state running (bounded poll), else what is wrong."""
        try:
            self.wait_running(timeout)
        except AssertionError as exc:
            return str(exc)
        return None


@pytest.fixture(scope="module")
def node():
    root = make_workdir()
    layout = Layout(os.path.join(root, "c"), 1, free_base_port())
    local = LocalCluster(layout, say=lambda line: None)
    try:
        local.up(timeout=240, timing=TEST_TIMING)
        one = Node(f"http://127.0.0.1:{layout.api_port(0)}", api_auth(layout))
        one.wait_running(60)
        yield one
    finally:
        local.down()
        if not os.environ.get("PGHA_KEEP_TEST_DIRS"):  # set it to read the agent's log after a failure
            shutil.rmtree(root, ignore_errors=True)


# --- the tests ----------------------------------------------------------------------------------------------------

def test_fuzz_read_operations(node):
    run = _fuzz(node, READ_METHODS, READ_BUDGET, READ_CALL_TIMEOUT, _read_edges)
    run.check("read operations", READ_BUDGET, node.problem_after(30))


def test_fuzz_write_operations(node):
    """A write endpoint not implemented yet answers 501, which fails this test."""
    run = _fuzz(node, WRITE_METHODS, WRITE_BUDGET, WRITE_CALL_TIMEOUT, _write_edges)
    # whatever was sent (restarts, a rewritten configuration), the API answers and PostgreSQL runs again
    run.check("write operations", WRITE_BUDGET, node.problem_after(RECOVERY_TIMEOUT))
