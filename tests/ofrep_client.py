"""Evaluates flags through the OpenFeature Python SDK and its OFREP provider, as a tenant's
application would, and prints what the SDK resolved.

Input (stdin, JSON): {"base_url", "tenant", "api_key", "evaluations": [{"flag", "type"
(boolean|string|integer|float|object), "default", "context": {"targetingKey", ...}}]}.
Output (stdout, JSON): one {"value", "variant", "reason", "error_code", "error_message"} per
evaluation.
"""

import json
import sys

from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext


def main() -> None:
    request = json.load(sys.stdin)
    headers = {"X-API-Key": request["api_key"], "X-Tenant": request["tenant"]}
    api.set_provider(OFREPProvider(request["base_url"], headers_factory=lambda: headers))
    client = api.get_client()
    resolve = {
        "boolean": client.get_boolean_details,
        "string": client.get_string_details,
        "integer": client.get_integer_details,
        "float": client.get_float_details,
        "object": client.get_object_details,
    }
    out = []
    for e in request["evaluations"]:
        ctx = dict(e.get("context") or {})
        targeting_key = ctx.pop("targetingKey", None)
        details = resolve[e["type"]](
            e["flag"], e["default"], EvaluationContext(targeting_key, ctx)
        )
        out.append(
            {
                "value": details.value,
                "variant": details.variant,
                "reason": str(getattr(details.reason, "value", details.reason)),
                "error_message": details.error_message,
                "error_code": (
                    None
                    if details.error_code is None
                    else str(getattr(details.error_code, "value", details.error_code))
                ),
            }
        )
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
