"""Schemathesis hooks of scripts/api-fuzz.py (SCHEMATHESIS_HOOKS, loaded in both runs).

Bearer run (API_FUZZ_AUTH=bearer): the tenant owner's access token, from `POST /v1/auth/login`
at the tenant (`X-Tenant`), sent as `Authorization: Bearer …` on every request. A local access
token lasts fifteen minutes, so the owner logs in again every ten minutes; not on a 401
(schemathesis' default), which many fuzzed requests rightly get — the `/admin/v1` routes to
every tenant credential — and which would mean a login per request.

Both runs: Hypothesis describes strategies for its messages by parsing the source of their
lambdas, and CPython 3.11's `ast.parse`, called that deep in the stack, can fail with
`SystemError: AST constructor recursion depth mismatch`; schemathesis then reports a runtime
error for the operation (seen on POST /v1/flags/{key}/schedules) instead of testing it. Such a
lambda is described as `lambda: <unknown>` instead, as Hypothesis does for any other source it
cannot read.
"""
import json
import os
import urllib.request

import schemathesis
from hypothesis.internal import lambda_sources

_describe_lambda = lambda_sources._lambda_description


def _lambda_description(f):
    try:
        return _describe_lambda(f)
    except SystemError:
        return "lambda: <unknown>"


lambda_sources._lambda_description = _lambda_description

if os.environ.get("API_FUZZ_AUTH") == "bearer":
    BASE = os.environ["API_FUZZ_BASE"]
    TENANT = os.environ["API_FUZZ_TENANT"]
    CREDENTIALS = {"username": os.environ["API_FUZZ_USERNAME"], "password": os.environ["API_FUZZ_PASSWORD"]}

    @schemathesis.auth(refresh_interval=600, retry_on=[])
    class OwnerToken:
        def get(self, case, context):
            request = urllib.request.Request(
                f"{BASE}/v1/auth/login", data=json.dumps(CREDENTIALS).encode(), method="POST",
                headers={"Content-Type": "application/json", "X-Tenant": TENANT})
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.load(response)["access_token"]

        def set(self, case, data, context):
            case.headers = case.headers or {}
            case.headers["Authorization"] = f"Bearer {data}"
