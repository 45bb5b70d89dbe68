"""Schemathesis against the live OpenAPI schema of the app: no 5xx, every response as documented.

Every operation gets up to 20 generated requests valid for its schema and 10 invalid ones, with
an admin token on the sample operator of :mod:`test_role_matrix` (SQLite); POSTs carry an
``Idempotency-Key``. (Schemathesis' own pytest integration, ``from_fixture(...).parametrize()``,
fails on pytest 9: it reads ``request.node._nodeid``; so the operations are walked here.)
"""

from __future__ import annotations

import uuid

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance
from test_role_matrix import world  # noqa: F401  (fixture: one sample operator and app for the module)

CHECKS = [not_a_server_error, response_schema_conformance]
# Found by this test in modules whose owners fix them (declare the id ``routes.ObjectId``: an id
# above 2**63 - 1 overflows the database driver, a 500); remove a line once its fix lands.
KNOWN: dict[str, str] = {}          # operations excluded, with the module to fix: none left
EXAMPLES = {GenerationMode.POSITIVE: 20, GenerationMode.NEGATIVE: 10}


def _failures(operation, mode: GenerationMode, headers: dict) -> list[str]:
    """The failing checks of up to ``EXAMPLES[mode]`` generated requests of ``operation``."""
    found: list[str] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES[mode], deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def run(case):
        key = {"Idempotency-Key": uuid.uuid4().hex} if case.method != "GET" else {}
        try:
            case.call_and_validate(headers={**headers, **key}, checks=CHECKS)
        except Exception as exc:  # noqa: BLE001 - a failed check, or a server error the test client re-raises
            found.append(f"{operation.label} ({mode.value}): {type(exc).__name__}: {str(exc)[:600]}")

    try:
        run()
    except Unsatisfiable:
        if mode is GenerationMode.POSITIVE:
            raise                              # only an operation without parameters has no invalid request
    return found[:1]


@pytest.mark.parametrize("methods", [{"GET"}, {"POST", "PATCH", "PUT", "DELETE"}], ids=["reads", "writes"])
def test_generated_requests_get_documented_answers(world, methods):  # noqa: F811
    client, tokens, _ = world
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", client.app)
    headers = {"Authorization": f"Bearer {tokens['admin']}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    failures = [failure for op in operations if op.method.upper() in methods and op.label not in KNOWN
                for mode in EXAMPLES for failure in _failures(op, mode, headers)]
    assert failures == [], "\n\n".join(failures)
