"""Example integration plugin in Python (componentize-py): forwards each event it receives
as a JSON POST to the URL in its `url` setting, with the event id in a header, and counts
deliveries in key-value storage. A non-2xx answer makes the host retry the event later."""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import config, http, kv, logging, types


class Handler(exports.Handler):
    def on_event(self, event: types.Event) -> None:
        url = config.get("url")
        if url is None:
            raise Err("the `url` setting is missing")
        body = json.dumps({
            "id": event.id,
            "kind": event.kind,
            "subject": event.subject,
            "data": json.loads(event.data),
            "occurred_at": event.occurred_at,
            "via": "python",
        }).encode()
        resp = http.fetch(http.Request(
            method="POST",
            url=url,
            headers=[("content-type", "application/json"), ("x-neotenant-event", event.id)],
            body=body,
        ))
        if not 200 <= resp.status < 300:
            logging.log(logging.Level.WARN, f"{url} answered {resp.status}")
            raise Err(f"the receiver answered {resp.status}")
        count = kv.get("delivered")
        kv.set("delivered", str(int(count or b"0") + 1).encode())
