import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { OpsError, RecordError } from '../../errors.js';
import type { ContextInput, MemoryRecord } from '../../record.js';
import type { Operations } from '../../ops/operations.js';
import type { Store } from '../../store/types.js';

type Params = Record<string, string>;
type Query = Record<string, unknown>;

export interface BotRoutesOptions {
  store: Store;
  ops: Operations;
  /** The data plane's auth hook. */
  dataAuth: (req: FastifyRequest, reply: FastifyReply) => Promise<void>;
}

/** `?ensure=true`: the seed's reads created unknown users, and its bots rely on that. */
export function wantsEnsure(q: Query): boolean {
  const v = q.ensure;
  if (v === undefined) return false;
  if (v === 'true' || v === '1') return true;
  if (v === 'false' || v === '0') return false;
  throw new OpsError('E_OPS_ARG', `ensure must be true or false, got ${JSON.stringify(v)}`);
}

/** `?fields=a,b`: only those top-level fields, so a bot asking for one value does not download 50 turns. */
export function project(record: MemoryRecord, fields: unknown): Record<string, unknown> {
  if (fields === undefined) return record;
  if (typeof fields !== 'string' || fields.trim() === '') throw new OpsError('E_OPS_ARG', 'fields must be a comma-separated list of field names');
  const out: Record<string, unknown> = {};
  for (const name of fields.split(',').map((f) => f.trim()).filter((f) => f !== '')) {
    out[name] = Object.prototype.hasOwnProperty.call(record, name) ? record[name] : null;
  }
  return out;
}

function body(req: FastifyRequest, what: string): Record<string, unknown> {
  const b = req.body;
  if (typeof b !== 'object' || b === null || Array.isArray(b)) throw new RecordError('E_RECORD', `${what}: the body must be a JSON object`);
  return b as Record<string, unknown>;
}

/**
 * What a bot written against the seed's MemoryStore needs beyond plain record reads and writes: one flag or
 * slot, a session-token refresh, context entries with product inference, and slot filling, each one atomic
 * write on the server (the Python drop-in in clients/python calls these).
 */
export function registerBotRoutes(app: FastifyInstance, { store, ops, dataAuth }: BotRoutesOptions): void {
  const one = (field: 'flags' | 'slots') => async (req: FastifyRequest<{ Params: Params }>) => {
    const id = req.params.id ?? '';
    const key = req.params.key ?? '';
    const record = wantsEnsure(req.query as Query) ? await store.ensure(id) : await store.get(id);
    if (!record) throw new OpsError('E_UNKNOWN_USER', `unknown user: ${JSON.stringify(id)}`);
    const map = record[field];
    const found = Object.prototype.hasOwnProperty.call(map, key);
    return { key, found, value: found ? map[key] : null };
  };
  app.get<{ Params: Params }>('/v1/users/:id/flags/:key', { onRequest: dataAuth }, one('flags'));
  app.get<{ Params: Params }>('/v1/users/:id/slots/:key', { onRequest: dataAuth }, one('slots'));

  app.post<{ Params: Params }>('/v1/users/:id/session-token', { onRequest: dataAuth }, async (req) => store.refreshSessionToken(req.params.id ?? ''));

  app.post<{ Params: Params }>('/v1/users/:id/context', { onRequest: dataAuth }, async (req) => {
    const b = body(req, 'context');
    for (const k of Object.keys(b)) {
      if (!['text', 'maxItems', 'product', 'serials'].includes(k)) throw new RecordError('E_RECORD', `context: unknown field ${JSON.stringify(k)} (text, maxItems, product, serials)`);
    }
    return store.addContext(req.params.id ?? '', b as ContextInput);
  });

  // Dropping turns destroys memory, so it goes through the guarded path: a per-user backup of what is dropped.
  app.post<{ Params: Params }>('/v1/users/:id/history/truncate', { onRequest: dataAuth }, async (req) => {
    const b = body(req, 'truncate');
    const keepLast = b.keepLast;
    if (typeof keepLast !== 'number') throw new OpsError('E_OPS_ARG', 'truncate: give {"keepLast": <number of newest entries to keep>}');
    const id = req.params.id ?? '';
    await store.ensure(id);
    const { record, dropped, backup } = await ops.truncateHistory(id, keepLast, { actor: { kind: 'api', name: 'data', remote: req.ip } });
    return { record, dropped, backup };
  });

  app.post<{ Params: Params }>('/v1/users/:id/slots', { onRequest: dataAuth }, async (req) => {
    const b = body(req, 'slots');
    if (typeof b.values !== 'object' || b.values === null || Array.isArray(b.values)) {
      throw new RecordError('E_RECORD', 'slots: give {"values": {"<key>": <value>, ...}}');
    }
    return store.fillSlots(req.params.id ?? '', b.values as Record<string, unknown>);
  });
}
