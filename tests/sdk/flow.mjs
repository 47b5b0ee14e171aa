#!/usr/bin/env node
// @ts-check
// Drives a running server through the generated TypeScript SDK (`make sdks` compiles it to
// sdks/build/typescript/dist, which this script imports; `make sdks` also type-checks this file
// against it).
//
// Environment:
//   BASE_URL  the server, e.g. http://127.0.0.1:8080
//   TENANT    the tenant's slug (sent as `X-Tenant`, as docs/API.md describes for local use)
//   TOKEN     an access token of one of the tenant's owners
//
//   node tests/sdk/flow.mjs
//
// Every call goes through the SDK. Prints one JSON line (`"ok": true` and what it made, or
// `"ok": false` and the first mismatch) and exits 1 on any mismatch.

import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { isDeepStrictEqual } from 'node:util';

import { createClient, createConfig } from '../../sdks/build/typescript/dist/client/index.js';
import * as sdk from '../../sdks/build/typescript/dist/index.js';

const PROBLEMS = 'https://neotenant.dev/problems/';

// The search index follows writes within about `search.index_interval_ms` (docs/API.md,
// "Search"): a new resource is searched for this often, for up to this long.
const SEARCH_POLL_MS = 200;
const SEARCH_TIMEOUT_MS = 20_000;

class Mismatch extends Error {}

/** @typedef {import('../../sdks/build/typescript/dist/index.js').Problem} Problem */
/** @typedef {{ data?: unknown, error?: unknown, response: Response }} Answer */

let checks = 0;
/**
 * Answers whose status the OpenAPI document does not declare for the operation: the SDK still
 * parses their JSON body, but types it `unknown`.
 * @type {Set<string>}
 */
const undeclared = new Set();
/** @type {Record<string, unknown>} */
const made = {};

/**
 * @param {boolean} condition
 * @param {string} what
 */
function check(condition, what) {
  if (!condition) throw new Mismatch(what);
  checks += 1;
}

/**
 * @param {Answer} res
 * @param {number} status
 * @param {string} what
 */
function expect(res, status, what) {
  if (!res.response) {
    // No answer at all (the client hands back the transport error instead).
    const e = /** @type {any} */ (res.error);
    throw new Mismatch(`${what}: no answer: ${String(e)}${e?.cause ? ` (${String(e.cause)})` : ''}`);
  }
  const got = res.response.status;
  check(got === status, `${what}: expected ${status}, got ${got} ${JSON.stringify(res.data ?? res.error)}`);
}

/**
 * The answer's body; `declared` says whether the document declares this status for the
 * operation (else it is noted in `undeclared`).
 * @param {unknown} body
 * @param {boolean} declared
 * @param {string} op
 * @param {number} status
 * @returns {any}
 */
function bodyOf(body, declared, op, status) {
  if (!declared) undeclared.add(`${op} ${status}`);
  if (body === null || typeof body !== 'object') throw new Mismatch(`${op}: body is not JSON: ${String(body)}`);
  return body;
}

/**
 * @param {Answer} res
 * @param {number} status
 * @param {string} slug
 * @param {string} op
 * @param {string} why
 * @param {boolean} declared
 * @returns {Problem}
 */
function problem(res, status, slug, op, why, declared) {
  const what = `${op} (${why})`;
  expect(res, status, what);
  const type = res.response.headers.get('content-type');
  check(type === 'application/problem+json', `${what}: content type ${type}`);
  /** @type {Problem} */
  const p = bodyOf(res.error, declared, op, status);
  check(p.type === PROBLEMS + slug, `${what}: problem type ${p.type}, expected ${slug}`);
  check(p.status === status, `${what}: problem status ${p.status}`);
  const requestId = res.response.headers.get('x-request-id');
  check(p.request_id === requestId, `${what}: request_id ${p.request_id} vs header ${requestId}`);
  return p;
}

/**
 * `GET /v1/search?q=<word>&type=<typeName>`, repeated until `resourceId` is a hit.
 * @param {import('../../sdks/build/typescript/dist/client/index.js').Client} client
 * @param {string} word
 * @param {string} typeName
 * @param {string} resourceId
 */
async function searchFor(client, word, typeName, resourceId) {
  const what = `GET /v1/search?q=${word}&type=${typeName}`;
  const query = { q: word, type: typeName, limit: 50 };
  const deadline = Date.now() + SEARCH_TIMEOUT_MS;
  let searches = 0;
  /** @type {Awaited<ReturnType<typeof sdk.resourcesSearch>>} */
  let res;
  /** @type {import('../../sdks/build/typescript/dist/index.js').NeotenantResourcesHandlersSearchPage} */
  let found;
  /** @type {import('../../sdks/build/typescript/dist/index.js').NeotenantResourcesHandlersSearchHit[]} */
  let hits;
  for (;;) {
    res = await sdk.resourcesSearch({ client, query });
    searches += 1;
    if (res.response?.status !== 200) expect(res, 200, what);
    found = bodyOf(res.data, true, 'GET /v1/search', 200);
    hits = found.items.filter((h) => h.id === resourceId);
    if (hits.length || Date.now() >= deadline) break;
    await sleep(SEARCH_POLL_MS);
  }
  expect(res, 200, what);
  check(
    hits.length > 0,
    `${what}: ${resourceId} not among the items after ${SEARCH_TIMEOUT_MS / 1000} s (${searches} searches; ` +
      `last answer: total ${found.total}, ids ${JSON.stringify(found.items.map((h) => h.id))})`,
  );
  const [hit] = hits;
  check(found.total >= 1, `${what}: total ${found.total}`);
  check(hit.type === typeName, `${what}: hit type ${hit.type}`);
  check(hit.title === word, `${what}: hit title ${JSON.stringify(hit.title)}`);
  const others = [...new Set(found.items.map((h) => h.type))].filter((t) => t !== typeName);
  check(others.length === 0, `${what}: hits of other types ${JSON.stringify(others)}`);
}

/**
 * @param {string} baseUrl
 * @param {string} tenant
 * @param {string} token
 */
async function run(baseUrl, tenant, token) {
  const tenantHeader = { 'X-Tenant': tenant };
  const owner = createClient(createConfig({ baseUrl, headers: tenantHeader, auth: token }));

  // The caller.
  /** @type {Answer} */
  let res = await sdk.usersMe({ client: owner });
  expect(res, 200, 'GET /v1/me');
  const caller = bodyOf(res.data, true, 'GET /v1/me', 200);
  check(caller.id.startsWith('usr_'), `user id ${caller.id}`);
  made.user_id = caller.id;

  // A resource type with a small schema; `title` is searchable.
  const typeName = `sdk_flow_${randomBytes(4).toString('hex')}`;
  const schema = {
    type: 'object',
    properties: {
      title: { type: 'string', minLength: 1, maxLength: 100 },
      count: { type: 'integer', minimum: 0 },
    },
    required: ['title'],
    additionalProperties: false,
  };
  res = await sdk.resourcesCreateType({
    client: owner,
    body: { name: typeName, title: 'SDK flow', schema, searchable: ['title'] },
  });
  expect(res, 201, 'POST /v1/resource-types');
  /** @type {import('../../sdks/build/typescript/dist/index.js').NeotenantResourcesResourceType} */
  const rtype = bodyOf(res.data, false, 'POST /v1/resource-types', 201);
  check(rtype.name === typeName, `type name ${rtype.name}`);
  check(rtype.version === 1, `type version ${rtype.version}`);
  made.type = typeName;

  // A resource of it, titled with a word no other resource has (the search below finds it).
  const word = `sdkflow${randomBytes(6).toString('hex')}`;
  const path = { type_name: typeName };
  res = await sdk.resourcesCreate({ client: owner, path, body: { data: { title: word, count: 1 }, tags: ['sdk'] } });
  expect(res, 201, 'POST /v1/resources/{type}');
  /** @type {import('../../sdks/build/typescript/dist/index.js').NeotenantResourcesResource} */
  const created = bodyOf(res.data, false, 'POST /v1/resources/{type}', 201);
  check(created.id.startsWith('res_'), `resource id ${created.id}`);
  check(created.version === 1, `new version ${created.version}`);
  check(created.owner_id === caller.id, `owner ${created.owner_id}`);
  check(res.response.headers.get('etag') === '"1"', `create ETag ${res.response.headers.get('etag')}`);
  made.resource_id = created.id;
  const one = { type_name: typeName, id: created.id };

  // Listed.
  const listed = await sdk.resourcesList({ client: owner, path, query: { limit: 200 } });
  expect(listed, 200, 'GET /v1/resources/{type}');
  const ids = listed.data?.items.map((r) => r.id);
  check(isDeepStrictEqual(ids, [created.id]), `list ids ${JSON.stringify(ids)}`);

  // Found by full-text search once the index has caught up.
  await searchFor(owner, word, typeName, created.id);

  // Read back, with its ETag.
  const got = await sdk.resourcesGet({ client: owner, path: one });
  expect(got, 200, 'GET /v1/resources/{type}/{id}');
  check(isDeepStrictEqual(got.data?.data, { title: word, count: 1 }), `data ${JSON.stringify(got.data?.data)}`);
  check(isDeepStrictEqual(got.data?.tags, ['sdk']), `tags ${JSON.stringify(got.data?.tags)}`);
  const etag = got.response.headers.get('etag') ?? '';
  check(etag === '"1"', `get ETag ${etag}`);

  // Changed at the version read: a merge patch of `data`.
  const patched = await sdk.resourcesPatch({
    client: owner,
    path: one,
    headers: { 'If-Match': etag },
    body: { data: { count: 2 } },
  });
  expect(patched, 200, 'PATCH /v1/resources/{type}/{id}');
  check(patched.data?.version === 2, `patched version ${patched.data?.version}`);
  check(
    isDeepStrictEqual(patched.data?.data, { title: word, count: 2 }),
    `patched data ${JSON.stringify(patched.data?.data)}`,
  );
  check(patched.response.headers.get('etag') === '"2"', `patch ETag ${patched.response.headers.get('etag')}`);

  // A change at the stale version is refused.
  res = await sdk.resourcesPatch({ client: owner, path: one, headers: { 'If-Match': etag }, body: { data: { count: 3 } } });
  problem(res, 412, 'precondition-failed', 'PATCH /v1/resources/{type}/{id}', 'stale If-Match', false);

  // Data that breaks the schema: one 422 listing every field error under /data.
  res = await sdk.resourcesCreate({ client: owner, path, body: { data: { count: -1, extra: true } } });
  const p = problem(res, 422, 'validation', 'POST /v1/resources/{type}', 'data against the schema', true);
  const pointers = (p.errors ?? []).map((e) => e.pointer).sort();
  check(
    pointers.length >= 3 && pointers.every((ptr) => ptr.startsWith('/data')),
    `validation pointers ${JSON.stringify(pointers)}`,
  );

  // Deleted (at its current version), then gone.
  res = await sdk.resourcesDelete({ client: owner, path: one, headers: { 'If-Match': '"2"' } });
  expect(res, 204, 'DELETE /v1/resources/{type}/{id}');
  res = await sdk.resourcesGet({ client: owner, path: one });
  problem(res, 404, 'not-found', 'GET /v1/resources/{type}/{id}', 'deleted', true);
  const after = await sdk.resourcesList({ client: owner, path });
  expect(after, 200, 'GET /v1/resources/{type} after delete');
  check(after.data?.items.length === 0, `list after delete ${JSON.stringify(after.data?.items.map((r) => r.id))}`);

  // An API key: it authenticates (both ways docs/API.md names) until it is revoked.
  res = await sdk.apikeysCreateKey({
    client: owner,
    body: { name: 'sdk flow', scopes: ['resources.read.tenant'], expires_in_days: 1 },
  });
  expect(res, 201, 'POST /v1/api-keys');
  /** @type {import('../../sdks/build/typescript/dist/index.js').NeotenantApikeysCreatedApiKey} */
  const key = bodyOf(res.data, false, 'POST /v1/api-keys', 201);
  check(key.id.startsWith('key_'), `key id ${key.id}`);
  check(key.secret.startsWith(`${key.prefix}_`), `key prefix ${key.prefix}`);
  made.api_key_id = key.id;
  const keys = await sdk.apikeysListKeys({ client: owner });
  expect(keys, 200, 'GET /v1/api-keys');
  check((keys.data ?? []).some((k) => k.id === key.id), 'new key listed');

  const asBearer = createClient(createConfig({ baseUrl, headers: tenantHeader, auth: key.secret }));
  const asHeader = createClient(createConfig({ baseUrl, headers: { ...tenantHeader, 'X-Api-Key': key.secret } }));
  for (const [name, client] of /** @type {const} */ ([['Authorization', asBearer], ['X-Api-Key', asHeader]])) {
    const mine = await sdk.usersMe({ client });
    expect(mine, 200, `GET /v1/me with the key in ${name}`);
    check(mine.data?.id === caller.id, 'key acts as its maker');
  }
  const withKey = await sdk.resourcesList({ client: asBearer, path });
  expect(withKey, 200, 'GET /v1/resources/{type} with the key');

  res = await sdk.apikeysRevokeKey({ client: owner, path: { id: key.id } });
  expect(res, 204, 'DELETE /v1/api-keys/{id}');
  for (const [name, client] of /** @type {const} */ ([['Authorization', asBearer], ['X-Api-Key', asHeader]])) {
    res = await sdk.usersMe({ client });
    problem(res, 401, 'session-revoked', 'GET /v1/me', `revoked key in ${name}`, false);
  }
}

async function main() {
  const missing = ['BASE_URL', 'TENANT', 'TOKEN'].filter((name) => !process.env[name]);
  if (missing.length) {
    console.log(JSON.stringify({ sdk: 'typescript', ok: false, error: `missing env ${missing.join(', ')}` }));
    return 2;
  }
  const tenant = process.env.TENANT ?? '';
  /** @type {Record<string, unknown>} */
  const summary = { sdk: 'typescript', tenant };
  try {
    await run((process.env.BASE_URL ?? '').replace(/\/+$/, ''), tenant, process.env.TOKEN ?? '');
    summary.ok = true;
  } catch (e) {
    summary.ok = false;
    summary.error = e instanceof Mismatch ? e.message : `${e instanceof Error ? e.name : 'Error'}: ${String(e)}`;
  }
  Object.assign(summary, { checks, ...made, undeclared: [...undeclared].sort() });
  console.log(JSON.stringify(summary));
  return summary.ok ? 0 : 1;
}

process.exitCode = await main();
