"""Verifies webhook deliveries with the Standard Webhooks reference library.

Reads JSON from stdin: {"secrets": [whsec_...], "deliveries": [{"headers": {...}, "body": "..."}]}
and prints, per delivery, which secrets verified it: [[true, false], ...]. The library also
checks the timestamp is within its tolerance.
"""

import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def main() -> None:
    task = json.load(sys.stdin)
    verifiers = [Webhook(s) for s in task["secrets"]]
    out = []
    for d in task["deliveries"]:
        row = []
        for v in verifiers:
            try:
                v.verify(d["body"], d["headers"])
                row.append(True)
            except WebhookVerificationError:
                row.append(False)
        out.append(row)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
