#!/usr/bin/env python3
"""Drives a running server through the generated Python SDK (`make sdks` → sdks/build/python).

Environment:
  BASE_URL  the server, e.g. http://127.0.0.1:8080
  TENANT    the tenant's slug (sent as `X-Tenant`, as docs/API.md describes for local use)
  TOKEN     an access token of one of the tenant's owners

Run with the SDK and its libraries importable:
  PYTHONPATH=sdks/build/python:.devstack/sdk-tools/python-lib python3 tests/sdk/flow.py

Every call goes through the SDK. Prints one JSON line (`"ok": true` and what it made, or
`"ok": false` and the first mismatch) and exits 1 on any mismatch.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from typing import Any

from neotenant_client import AuthenticatedClient
from neotenant_client.api.api_keys import (
    neotenant_apikeys_handlers_create_key as create_key,
)
from neotenant_client.api.api_keys import (
    neotenant_apikeys_handlers_list_keys as list_keys,
)
from neotenant_client.api.api_keys import (
    neotenant_apikeys_handlers_revoke_key as revoke_key,
)
from neotenant_client.api.resources import (
    neotenant_resources_handlers_create as create_resource,
)
from neotenant_client.api.resources import (
    neotenant_resources_handlers_create_type as create_type,
)
from neotenant_client.api.resources import (
    neotenant_resources_handlers_delete as delete_resource,
)
from neotenant_client.api.resources import (
    neotenant_resources_handlers_get as get_resource,
)
from neotenant_client.api.resources import (
    neotenant_resources_handlers_list as list_resources,
)
from neotenant_client.api.resources import (
    neotenant_resources_handlers_patch as patch_resource,
)
from neotenant_client.api.resources import (
    neotenant_resources_handlers_search as search,
)
from neotenant_client.api.users import neotenant_users_handlers_me as me
from neotenant_client.models import (
    NeotenantApikeysApiKeyView,
    NeotenantApikeysCreatedApiKey,
    NeotenantApikeysNewApiKey,
    NeotenantHttpExtractPageneotenantResourcesResource,
    NeotenantResourcesHandlersSearchPage,
    NeotenantResourcesResource,
    NeotenantResourcesResourceInput,
    NeotenantResourcesResourcePatch,
    NeotenantResourcesResourceType,
    NeotenantResourcesTypeInput,
    NeotenantUsersMe,
    Problem,
)
from neotenant_client.types import Response

PROBLEMS = "https://neotenant.dev/problems/"

# The search index follows writes within about `search.index_interval_ms` (docs/API.md,
# "Search"): a new resource is searched for this often, for up to this long.
SEARCH_POLL_S = 0.2
SEARCH_TIMEOUT_S = 20.0


class Mismatch(Exception):
    pass


class Flow:
    def __init__(self) -> None:
        self.checks = 0
        # Answers whose status the OpenAPI document does not declare for the operation: the
        # SDK hands back the raw body only, and the flow reads it into the SDK's model itself.
        self.undeclared: list[str] = []
        self.made: dict[str, Any] = {}

    def check(self, condition: bool, what: str) -> None:
        if not condition:
            raise Mismatch(what)
        self.checks += 1

    def expect(self, res: Response[Any], status: int, what: str) -> None:
        self.check(
            res.status_code == status,
            f"{what}: expected {status}, got {res.status_code} {res.content[:500]!r}",
        )

    def body(self, res: Response[Any], model: Any, what: str) -> Any:
        """The answer as `model`: the SDK's parsed value, else read from the raw content."""
        if isinstance(res.parsed, model):
            return res.parsed
        self.undeclared.append(f"{what} {int(res.status_code)}")
        try:
            return model.from_dict(json.loads(res.content))
        except Exception as e:
            raise Mismatch(f"{what}: body is not a {model.__name__}: {e}: {res.content[:500]!r}") from e

    def problem(self, res: Response[Any], status: int, slug: str, op: str, why: str) -> Problem:
        what = f"{op} ({why})"
        self.expect(res, status, what)
        self.check(
            res.headers.get("content-type") == "application/problem+json",
            f"{what}: content type {res.headers.get('content-type')}",
        )
        p = self.body(res, Problem, op)
        self.check(p.type_ == PROBLEMS + slug, f"{what}: problem type {p.type_}, expected {slug}")
        self.check(p.status == status, f"{what}: problem status {p.status}")
        self.check(
            p.request_id == res.headers.get("x-request-id"),
            f"{what}: request_id {p.request_id} vs header {res.headers.get('x-request-id')}",
        )
        return p


def search_for(
    flow: Flow,
    base_url: str,
    token: str,
    headers: dict[str, str],
    word: str,
    type_name: str,
    resource_id: str,
) -> None:
    """`GET /v1/search?q=<word>&type=<type_name>`, repeated until `resource_id` is a hit."""
    what = f"GET /v1/search?q={word}&type={type_name}"
    searcher = AuthenticatedClient(base_url=base_url, token=token, headers=headers)
    deadline = time.monotonic() + SEARCH_TIMEOUT_S
    searches = 0
    with searcher:
        while True:
            res = search.sync_detailed(client=searcher, q=word, type_=type_name, limit=50)
            searches += 1
            if res.status_code != 200:
                flow.expect(res, 200, what)
            found = flow.body(res, NeotenantResourcesHandlersSearchPage, "GET /v1/search")
            hits = [h for h in found.items if h.id == resource_id]
            if hits or time.monotonic() >= deadline:
                break
            time.sleep(SEARCH_POLL_S)
    flow.expect(res, 200, what)
    flow.check(
        bool(hits),
        f"{what}: {resource_id} not among the items after {SEARCH_TIMEOUT_S:g} s ({searches} searches; "
        f"last answer: total {found.total}, ids {[h.id for h in found.items]})",
    )
    hit = hits[0]
    flow.check(found.total >= 1, f"{what}: total {found.total}")
    flow.check(hit.type_ == type_name, f"{what}: hit type {hit.type_}")
    flow.check(hit.title == word, f"{what}: hit title {hit.title!r}")
    flow.check(
        all(h.type_ == type_name for h in found.items),
        f"{what}: hits of other types {sorted({h.type_ for h in found.items} - {type_name})}",
    )


def run(flow: Flow, base_url: str, tenant: str, token: str) -> None:
    tenant_header = {"X-Tenant": tenant}
    owner = AuthenticatedClient(base_url=base_url, token=token, headers=tenant_header)

    # The caller.
    res = me.sync_detailed(client=owner)
    flow.expect(res, 200, "GET /v1/me")
    caller = flow.body(res, NeotenantUsersMe, "GET /v1/me")
    flow.check(caller.id.startswith("usr_"), f"user id {caller.id}")
    flow.made["user_id"] = caller.id

    # A resource type with a small schema; `title` is searchable.
    type_name = "sdk_flow_" + secrets.token_hex(4)
    schema = {
        "type": "object",
        "properties": {
            "title": {"type": "string", "minLength": 1, "maxLength": 100},
            "count": {"type": "integer", "minimum": 0},
        },
        "required": ["title"],
        "additionalProperties": False,
    }
    res = create_type.sync_detailed(
        client=owner,
        body=NeotenantResourcesTypeInput(
            name=type_name, title="SDK flow", schema=schema, searchable=["title"]
        ),
    )
    flow.expect(res, 201, "POST /v1/resource-types")
    rtype = flow.body(res, NeotenantResourcesResourceType, "POST /v1/resource-types")
    flow.check(rtype.name == type_name, f"type name {rtype.name}")
    flow.check(rtype.version == 1, f"type version {rtype.version}")
    flow.made["type"] = type_name

    # A resource of it, titled with a word no other resource has (the search below finds it).
    word = "sdkflow" + secrets.token_hex(6)
    res = create_resource.sync_detailed(
        type_name,
        client=owner,
        body=NeotenantResourcesResourceInput(data={"title": word, "count": 1}, tags=["sdk"]),
    )
    flow.expect(res, 201, "POST /v1/resources/{type}")
    created = flow.body(res, NeotenantResourcesResource, "POST /v1/resources/{type}")
    flow.check(created.id.startswith("res_"), f"resource id {created.id}")
    flow.check(created.version == 1, f"new version {created.version}")
    flow.check(created.owner_id == caller.id, f"owner {created.owner_id}")
    flow.check(res.headers.get("etag") == '"1"', f"create ETag {res.headers.get('etag')}")
    flow.made["resource_id"] = created.id

    # Listed.
    res = list_resources.sync_detailed(type_name, client=owner, limit=200)
    flow.expect(res, 200, "GET /v1/resources/{type}")
    page = flow.body(res, NeotenantHttpExtractPageneotenantResourcesResource, "GET /v1/resources/{type}")
    flow.check([r.id for r in page.items] == [created.id], f"list ids {[r.id for r in page.items]}")

    # Found by full-text search once the index has caught up.
    search_for(flow, base_url, token, tenant_header, word, type_name, created.id)

    # Read back, with its ETag.
    res = get_resource.sync_detailed(type_name, created.id, client=owner)
    flow.expect(res, 200, "GET /v1/resources/{type}/{id}")
    got = flow.body(res, NeotenantResourcesResource, "GET /v1/resources/{type}/{id}")
    flow.check(got.data == {"title": word, "count": 1}, f"data {got.data}")
    flow.check(got.tags == ["sdk"], f"tags {got.tags}")
    etag = res.headers.get("etag")
    flow.check(etag == '"1"', f"get ETag {etag}")

    # Changed at the version read: a merge patch of `data`.
    res = patch_resource.sync_detailed(
        type_name,
        created.id,
        client=owner,
        body=NeotenantResourcesResourcePatch(data={"count": 2}),
        if_match=etag,
    )
    flow.expect(res, 200, "PATCH /v1/resources/{type}/{id}")
    patched = flow.body(res, NeotenantResourcesResource, "PATCH /v1/resources/{type}/{id}")
    flow.check(patched.version == 2, f"patched version {patched.version}")
    flow.check(patched.data == {"title": word, "count": 2}, f"patched data {patched.data}")
    flow.check(res.headers.get("etag") == '"2"', f"patch ETag {res.headers.get('etag')}")

    # A change at the stale version is refused.
    res = patch_resource.sync_detailed(
        type_name,
        created.id,
        client=owner,
        body=NeotenantResourcesResourcePatch(data={"count": 3}),
        if_match=etag,
    )
    flow.problem(res, 412, "precondition-failed", "PATCH /v1/resources/{type}/{id}", "stale If-Match")

    # Data that breaks the schema: one 422 listing every field error under /data.
    res = create_resource.sync_detailed(
        type_name,
        client=owner,
        body=NeotenantResourcesResourceInput(data={"count": -1, "extra": True}),
    )
    p = flow.problem(res, 422, "validation", "POST /v1/resources/{type}", "data against the schema")
    pointers = sorted(e.pointer for e in (p.errors or []))
    flow.check(
        len(pointers) >= 3 and all(ptr.startswith("/data") for ptr in pointers),
        f"validation pointers {pointers}",
    )

    # Deleted (at its current version), then gone.
    res = delete_resource.sync_detailed(type_name, created.id, client=owner, if_match='"2"')
    flow.expect(res, 204, "DELETE /v1/resources/{type}/{id}")
    res = get_resource.sync_detailed(type_name, created.id, client=owner)
    flow.problem(res, 404, "not-found", "GET /v1/resources/{type}/{id}", "deleted")
    res = list_resources.sync_detailed(type_name, client=owner)
    flow.expect(res, 200, "GET /v1/resources/{type} after delete")
    page = flow.body(res, NeotenantHttpExtractPageneotenantResourcesResource, "GET /v1/resources/{type}")
    flow.check(page.items == [], f"list after delete {[r.id for r in page.items]}")

    # An API key: it authenticates (both ways docs/API.md names) until it is revoked.
    res = create_key.sync_detailed(
        client=owner,
        body=NeotenantApikeysNewApiKey(name="sdk flow", scopes=["resources.read.tenant"], expires_in_days=1),
    )
    flow.expect(res, 201, "POST /v1/api-keys")
    key = flow.body(res, NeotenantApikeysCreatedApiKey, "POST /v1/api-keys")
    flow.check(key.id.startswith("key_"), f"key id {key.id}")
    flow.check(key.secret.startswith(key.prefix + "_"), f"key prefix {key.prefix}")
    flow.made["api_key_id"] = key.id
    res = list_keys.sync_detailed(client=owner)
    flow.expect(res, 200, "GET /v1/api-keys")
    listed = res.parsed if isinstance(res.parsed, list) else []
    flow.check(
        any(isinstance(k, NeotenantApikeysApiKeyView) and k.id == key.id for k in listed),
        "new key listed",
    )

    as_bearer = AuthenticatedClient(base_url=base_url, token=key.secret, headers=tenant_header)
    as_header = AuthenticatedClient(
        base_url=base_url, token=key.secret, prefix="", auth_header_name="X-Api-Key", headers=tenant_header
    )
    for name, client in (("Authorization", as_bearer), ("X-Api-Key", as_header)):
        res = me.sync_detailed(client=client)
        flow.expect(res, 200, f"GET /v1/me with the key in {name}")
        flow.check(flow.body(res, NeotenantUsersMe, "GET /v1/me").id == caller.id, "key acts as its maker")
    res = list_resources.sync_detailed(type_name, client=as_bearer)
    flow.expect(res, 200, "GET /v1/resources/{type} with the key")

    res = revoke_key.sync_detailed(key.id, client=owner)
    flow.expect(res, 204, "DELETE /v1/api-keys/{id}")
    for name, client in (("Authorization", as_bearer), ("X-Api-Key", as_header)):
        res = me.sync_detailed(client=client)
        flow.problem(res, 401, "session-revoked", "GET /v1/me", f"revoked key in {name}")


def main() -> int:
    missing = [name for name in ("BASE_URL", "TENANT", "TOKEN") if not os.environ.get(name)]
    if missing:
        print(json.dumps({"sdk": "python", "ok": False, "error": f"missing env {', '.join(missing)}"}))
        return 2
    flow = Flow()
    summary: dict[str, Any] = {"sdk": "python", "tenant": os.environ["TENANT"]}
    try:
        run(flow, os.environ["BASE_URL"].rstrip("/"), os.environ["TENANT"], os.environ["TOKEN"])
        summary["ok"] = True
    except Mismatch as e:
        summary.update(ok=False, error=str(e))
    except Exception as e:  # noqa: BLE001 - a transport or SDK failure is reported the same way
        summary.update(ok=False, error=f"{type(e).__name__}: {e}")
    summary.update(checks=flow.checks, **flow.made, undeclared=sorted(set(flow.undeclared)))
    print(json.dumps(summary), flush=True)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
