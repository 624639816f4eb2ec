import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { OpsError } from '../../errors.js';
import {
  anyJson,
  flag,
  historyInput,
  listQuery,
  one,
  record,
  recordInput,
  recordPatch,
  route,
  searchAnswer,
  searchQuery,
  storeStats,
  userPage,
} from '../../http-api.js';
import type { ContextInput, HistoryInput, MemoryRecord, RecordInput, RecordPatch } from '../../record.js';
import type { Operations } from '../../ops/operations.js';
import type { Store } from '../../store/types.js';
import { actorOf } from '../plugins/auth.js';
import { addRoute } from '../route.js';

// The routes check a body's outline; the store checks records and entries field by field (E_RECORD, E_USER_ID).
const idParam = z.object({ id: z.string() });
const keyParams = z.object({ id: z.string(), key: z.string() });
const ensureQuery = z.object({ ensure: flag.optional().describe('create the user when unknown, as the seed did') });
const jsonObject = (what: string) => z.looseObject({}, { error: `${what}: the body must be a JSON object` });
const valueBody = (what: string) => {
  const message = `${what}: the body must be {"value": <any JSON value>}`;
  return { body: z.object({ value: z.unknown() }, { error: message }), bodyDoc: z.object({ value: anyJson }), codes: { body: ['E_RECORD', message] as [string, string] } };
};
const keyValue = z.object({ key: z.string(), found: z.boolean(), value: anyJson });

/** The data plane: what a chatbot calls, one row per route. */
export const DATA_API = {
  getUser: route({
    method: 'GET',
    path: '/v1/users/:id',
    summary: "a user's record (404 when unknown, unless ensure)",
    auth: 'data',
    params: idParam,
    query: ensureQuery.extend({ fields: one.optional().describe('comma-separated top-level fields to return') }),
    answer: record,
  }),
  putUser: route({ method: 'PUT', path: '/v1/users/:id', summary: 'replace the record (creates the user)', auth: 'data', params: idParam, body: jsonObject('record'), bodyDoc: recordInput, codes: { body: 'E_RECORD' }, answer: record }),
  patchUser: route({ method: 'PATCH', path: '/v1/users/:id', summary: 'merge into the record (creates the user)', auth: 'data', params: idParam, body: jsonObject('patch'), bodyDoc: recordPatch, codes: { body: 'E_RECORD' }, answer: record }),
  appendHistory: route({
    method: 'POST',
    path: '/v1/users/:id/history',
    summary: 'append one turn, or an array of turns in one write; known ids are skipped',
    auth: 'data',
    params: idParam,
    body: z.union([z.array(z.unknown()), z.looseObject({})], { error: 'history entry: the body must be a JSON object' }),
    bodyDoc: z.union([historyInput, z.array(historyInput)]),
    codes: { body: 'E_RECORD' },
    status: 201,
    answer: record,
  }),
  truncateHistory: route({
    method: 'POST',
    path: '/v1/users/:id/history/truncate',
    summary: 'keep the newest turns; the dropped ones go to a per-user backup first',
    auth: 'data',
    params: idParam,
    body: z.object({ keepLast: z.number({ error: 'truncate: give {"keepLast": <number of newest entries to keep>}' }) }, { error: 'truncate: the body must be a JSON object' }),
    bodyDoc: z.object({ keepLast: z.number().int().min(0) }),
    codes: { body: 'E_RECORD', 'body.keepLast': 'E_OPS_ARG' },
    answer: z.object({ record, dropped: z.number().int(), backup: z.string().nullable() }),
  }),
  getFlag: route({ method: 'GET', path: '/v1/users/:id/flags/:key', summary: 'one flag', auth: 'data', params: keyParams, query: ensureQuery, answer: keyValue }),
  setFlag: route({ method: 'PUT', path: '/v1/users/:id/flags/:key', summary: 'set one flag', auth: 'data', params: keyParams, ...valueBody('flag'), answer: record }),
  clearFlag: route({ method: 'DELETE', path: '/v1/users/:id/flags/:key', summary: 'remove one flag (404 for an unknown user)', auth: 'data', params: keyParams, answer: record }),
  getSlot: route({ method: 'GET', path: '/v1/users/:id/slots/:key', summary: 'one slot', auth: 'data', params: keyParams, query: ensureQuery, answer: keyValue }),
  setSlot: route({ method: 'PUT', path: '/v1/users/:id/slots/:key', summary: 'set one slot', auth: 'data', params: keyParams, ...valueBody('slot'), answer: record }),
  clearSlot: route({ method: 'DELETE', path: '/v1/users/:id/slots/:key', summary: 'remove one slot (404 for an unknown user)', auth: 'data', params: keyParams, answer: record }),
  fillSlots: route({
    method: 'POST',
    path: '/v1/users/:id/slots',
    summary: 'set several slots verbatim (null is stored)',
    auth: 'data',
    params: idParam,
    body: z.object({ values: z.looseObject({}, { error: 'slots: give {"values": {"<key>": <value>, ...}}' }) }, { error: 'slots: the body must be a JSON object' }),
    bodyDoc: z.object({ values: z.record(z.string(), anyJson) }),
    codes: { body: 'E_RECORD' },
    answer: record,
  }),
  addContext: route({
    method: 'POST',
    path: '/v1/users/:id/context',
    summary: 'add a distinct summary entry and merge product and serials, atomically',
    auth: 'data',
    params: idParam,
    body: z.strictObject(
      { text: z.unknown().optional(), maxItems: z.unknown().optional(), product: z.unknown().optional(), serials: z.unknown().optional() },
      { error: (i) => (i.code === 'unrecognized_keys' ? `context: unknown field ${JSON.stringify(i.keys[0])} (text, maxItems, product, serials)` : 'context: the body must be a JSON object') },
    ),
    bodyDoc: z.object({ text: z.string().optional(), maxItems: z.number().int().min(1).max(1000).optional(), product: z.string().optional(), serials: z.array(z.string()).optional() }),
    codes: { body: 'E_RECORD' },
    answer: record,
  }),
  refreshSessionToken: route({ method: 'POST', path: '/v1/users/:id/session-token', summary: 'a new session token (creates the user)', auth: 'data', params: idParam, answer: record }),
  listUsers: route({ method: 'GET', path: '/v1/users', summary: 'users in id order, a page at a time', auth: 'data', query: listQuery, answer: userPage }),
  search: route({ method: 'GET', path: '/v1/search', summary: 'case-insensitive keyword search', auth: 'data', query: searchQuery, codes: { 'query.q': 'E_STORE_ARG' }, answer: searchAnswer }),
  stats: route({ method: 'GET', path: '/v1/stats', summary: 'users, messages, bytes, last update', auth: 'data', answer: storeStats }),
};

/** `?fields=a,b`: only those top-level fields, so a bot asking for one value does not download 50 turns. */
export function project(record: MemoryRecord, fields: string | undefined): Record<string, unknown> {
  if (fields === undefined) return record;
  if (fields.trim() === '') throw new OpsError('E_OPS_ARG', 'fields must be a comma-separated list of field names');
  const out: Record<string, unknown> = {};
  for (const name of fields.split(',').map((f) => f.trim()).filter((f) => f !== '')) {
    out[name] = Object.prototype.hasOwnProperty.call(record, name) ? record[name] : null;
  }
  return out;
}

const unknownUser = (id: string) => new OpsError('E_UNKNOWN_USER', `unknown user: ${JSON.stringify(id)}`);

/** `Prefer: return=minimal` (RFC 7240): a bot that only appends need not download 50 turns per message. */
const PREFER_MINIMAL = /(^|[,;\s])return\s*=\s*"?minimal"?($|[,;\s])/i;

export type DataRoutesOptions = { store: Store; ops: Operations };

/**
 * The data plane: plain record reads and writes, and what a bot written against the seed's MemoryStore
 * needs beyond them (one flag or slot, a session-token refresh, context entries with product inference,
 * slot filling), each one atomic write on the server (the Python drop-in in clients/python calls these).
 */
export async function dataRoutes(app: FastifyInstance, { store, ops }: DataRoutesOptions): Promise<void> {
  const auth = app.auth.data;
  const A = DATA_API;

  addRoute(app, A.getUser, auth, async ({ params, query }) => {
    const record = query.ensure ? await store.ensure(params.id) : await store.get(params.id);
    if (!record) throw unknownUser(params.id);
    return project(record, query.fields);
  });
  // Through the operations: a PUT or PATCH that drops part of a user's memory backs that user up first.
  // The raw body, not the checked copy: the store checks records field by field, and a copy would drop keys such as __proto__.
  addRoute(app, A.putUser, auth, async ({ params }, req) => ops.putRecord(params.id, req.body as RecordInput, { actor: actorOf(req) }));
  addRoute(app, A.patchUser, auth, async ({ params }, req) => ops.patchRecord(params.id, req.body as RecordPatch, { actor: actorOf(req) }));
  addRoute(app, A.appendHistory, auth, async ({ params }, req, reply) => {
    const sent = req.body;
    // An array is one batch, appended in order in one write (a UI saving its whole message list).
    const record = Array.isArray(sent) ? await store.appendHistoryMany(params.id, sent as HistoryInput[]) : await store.appendHistory(params.id, sent as HistoryInput);
    if (PREFER_MINIMAL.test(String(req.headers.prefer ?? ''))) {
      const last = Array.isArray(sent) ? (sent as unknown[]).at(-1) : sent;
      const given = (last as { id?: unknown } | undefined)?.id;
      // The write is atomic per user, so a fresh entry is the newest one; a retried entry keeps the id it was sent with.
      const entryId = typeof given === 'string' ? given : (record.history.at(-1)?.id ?? null);
      return reply.status(201).header('preference-applied', 'return=minimal').send({ user_id: record.user_id, id: entryId });
    }
    return record;
  });
  // Dropping turns destroys memory, so it goes through the guarded path: a per-user backup of what is dropped.
  addRoute(app, A.truncateHistory, auth, async ({ params, body }, req) => {
    await store.ensure(params.id);
    const { record, dropped, backup } = await ops.truncateHistory(params.id, body.keepLast, { actor: { kind: 'api', name: 'data', remote: req.ip } });
    return { record, dropped, backup };
  });

  const oneValue = (field: 'flags' | 'slots') => async ({ params, query }: { params: { id: string; key: string }; query: { ensure?: boolean } }) => {
    const record = query.ensure ? await store.ensure(params.id) : await store.get(params.id);
    if (!record) throw unknownUser(params.id);
    const map = record[field];
    const found = Object.prototype.hasOwnProperty.call(map, params.key);
    return { key: params.key, found, value: found ? map[params.key] : null };
  };
  addRoute(app, A.getFlag, auth, oneValue('flags'));
  addRoute(app, A.getSlot, auth, oneValue('slots'));
  addRoute(app, A.setFlag, auth, async ({ params, body }) => store.setFlag(params.id, params.key, body.value));
  addRoute(app, A.setSlot, auth, async ({ params, body }) => store.setSlot(params.id, params.key, body.value));
  // Clearing a flag or slot of a user who does not exist must not create that user.
  addRoute(app, A.clearFlag, auth, async ({ params }) => {
    if (!(await store.get(params.id))) throw unknownUser(params.id);
    return store.clearFlag(params.id, params.key);
  });
  addRoute(app, A.clearSlot, auth, async ({ params }) => {
    if (!(await store.get(params.id))) throw unknownUser(params.id);
    return store.patch(params.id, { slots: { [params.key]: null } });
  });
  addRoute(app, A.fillSlots, auth, async ({ params }, req) => store.fillSlots(params.id, (req.body as { values: Record<string, unknown> }).values));
  addRoute(app, A.addContext, auth, async ({ params }, req) => store.addContext(params.id, req.body as ContextInput));
  addRoute(app, A.refreshSessionToken, auth, async ({ params }) => store.refreshSessionToken(params.id));

  addRoute(app, A.listUsers, auth, async ({ query }) => store.list({ cursor: query.cursor ?? null, limit: query.limit }));
  addRoute(app, A.search, auth, async ({ query }) => ({ items: await store.search(query.q, { limit: query.limit }) }));
  addRoute(app, A.stats, auth, async () => store.stats());
}
