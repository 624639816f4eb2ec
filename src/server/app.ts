import { createHash, timingSafeEqual } from 'node:crypto';
import * as path from 'node:path';
import Fastify, { LogController, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Context } from '../context.js';
import { ChatmemError, ConfigError, isChatmemError, OpsError } from '../errors.js';
import { BACKUP_REASONS, type BackupReason } from '../backup/manifest.js';
import type { RetentionPolicy } from '../backup/retention.js';
import type { Actor } from '../ops/audit.js';
import { VERSION } from '../version.js';
import { Metrics, METRICS_CONTENT_TYPE } from './metrics.js';

/** Default request body limit: 1 MiB. */
export const DEFAULT_BODY_LIMIT = 1024 * 1024;
/** Tokens shorter than this are refused: the API may be reachable from a network, and guessing must not pay. */
export const MIN_TOKEN_LENGTH = 16;

export interface BuildAppOptions {
  ctx: Context;
  /** Bearer token of the admin API. Required: there is no default. */
  adminToken: string;
  /** Bearer token of the data API; null or absent leaves the data API open (loopback only, enforced by serve()). */
  apiToken?: string | null;
  /** Request body limit in bytes (default 1 MiB); larger bodies get 413. */
  bodyLimit?: number;
  /** false (default): no logs; true: pino at info to stdout; an object: pino options. */
  logger?: boolean | object;
  /** Shared with the backup scheduler so its failures show in /metrics; created when absent. */
  metrics?: Metrics;
}

/** An error with an HTTP status, answered as `{ error: { code, message } }`. */
class HttpError extends ChatmemError {
  constructor(
    readonly status: number,
    code: string,
    message: string,
  ) {
    super(code, message);
  }
}

const STATUS_BY_CODE: Record<string, number> = {
  E_RECORD: 400,
  E_USER_ID: 400,
  E_OPS_ARG: 400,
  E_STORE_ARG: 400,
  E_RETENTION_POLICY: 400,
  E_BACKUP_ID: 400,
  E_CONFIRM: 400,
  E_IMPORT: 400,
  E_UNKNOWN_USER: 404,
  E_NOT_FOUND: 404,
  E_BACKUP_NOT_FOUND: 404,
  E_STORE_CONFLICT: 409,
  E_STORE_LOCKED: 409,
  // The backup exists but its content cannot be trusted or read: the request cannot be carried out as asked.
  E_BACKUP_VERIFY: 422,
  E_BACKUP_PARSE: 422,
  // Only during shutdown, after in-flight requests: the caller may retry against the next daemon.
  E_STORE_CLOSED: 503,
};

/** Fastify's own errors that are the caller's fault, with our code for each. */
const FASTIFY_ERRORS: Record<string, [number, string, string]> = {
  FST_ERR_CTP_BODY_TOO_LARGE: [413, 'E_BODY_LIMIT', 'request body is larger than the limit (server.bodyLimit)'],
  FST_ERR_CTP_INVALID_JSON_BODY: [400, 'E_BAD_JSON', 'request body is not valid JSON'],
  FST_ERR_CTP_EMPTY_JSON_BODY: [400, 'E_BAD_JSON', 'request body is empty but Content-Type is application/json'],
  FST_ERR_CTP_INVALID_MEDIA_TYPE: [415, 'E_MEDIA_TYPE', 'request bodies must be JSON (Content-Type: application/json)'],
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: [400, 'E_BAD_REQUEST', 'request body size does not match Content-Length'],
};

/**
 * Status, code and message for any error a handler or Fastify raised. A chatmem error without a mapped
 * status is a 500 that keeps its own code and message: those are written for operators (the admin API
 * needs to say why a restore failed). Anything else is E_INTERNAL, with details only in the log.
 */
function classify(err: unknown): { status: number; code: string; message: string; internal: boolean } {
  if (err instanceof HttpError) return { status: err.status, code: err.code, message: err.message, internal: false };
  if (isChatmemError(err)) {
    const status = STATUS_BY_CODE[err.code];
    if (status !== undefined) return { status, code: err.code, message: err.message, internal: false };
    return { status: 500, code: err.code, message: err.message, internal: true };
  }
  const fcode = typeof err === 'object' && err !== null && 'code' in err ? String((err as { code: unknown }).code) : '';
  const known = FASTIFY_ERRORS[fcode];
  if (known) return { status: known[0], code: known[1], message: known[2], internal: false };
  const statusCode = typeof err === 'object' && err !== null && 'statusCode' in err ? Number((err as { statusCode: unknown }).statusCode) : NaN;
  if (statusCode >= 400 && statusCode < 500) {
    return { status: statusCode, code: 'E_BAD_REQUEST', message: err instanceof Error ? err.message : 'bad request', internal: false };
  }
  return { status: 500, code: 'E_INTERNAL', message: 'internal error; see the daemon log', internal: true };
}

const sha256 = (s: string): Buffer => createHash('sha256').update(s, 'utf8').digest();

/** Constant-time over the digests, so neither content nor length of the expected token leaks. */
function sameToken(given: string, expected: Buffer): boolean {
  return timingSafeEqual(sha256(given), expected);
}

/** Query parameters that look like credentials: refused outright, and masked in logs. */
const TOKEN_PARAMS = /^(token|access_token|api_key|apikey|auth|authorization)$/i;

/** The URL as logged: values of credential-like query parameters masked. */
function loggableUrl(url: string): string {
  const q = url.indexOf('?');
  if (q < 0) return url;
  const params = url
    .slice(q + 1)
    .split('&')
    .map((p) => {
      const eq = p.indexOf('=');
      const key = eq < 0 ? p : p.slice(0, eq);
      let name = key;
      try {
        name = decodeURIComponent(key);
      } catch {
        // keep the raw key
      }
      return TOKEN_PARAMS.test(name) ? `${key}=***` : p;
    });
  return `${url.slice(0, q)}?${params.join('&')}`;
}

/** True for names and addresses that only this machine can reach (brackets around IPv6 allowed). */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || h === '::ffff:127.0.0.1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/** Host name of a Host header (without the port). */
function hostName(header: string | undefined): string {
  if (!header) return '';
  if (header.startsWith('[')) return header.slice(0, header.indexOf(']') + 1);
  const colon = header.lastIndexOf(':');
  return colon >= 0 ? header.slice(0, colon) : header;
}

type Plane = 'data' | 'admin';

function bodyObject(body: unknown, what: string, code = 'E_OPS_ARG'): Record<string, unknown> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new HttpError(400, code, `${what}: the body must be a JSON object`);
  }
  return body as Record<string, unknown>;
}

function optionalBool(v: unknown, name: string): boolean | undefined {
  if (v === undefined) return undefined;
  if (typeof v === 'boolean') return v;
  if (v === 'true' || v === '1') return true;
  if (v === 'false' || v === '0') return false;
  throw new HttpError(400, 'E_OPS_ARG', `${name} must be true or false, got ${JSON.stringify(v)}`);
}

function stringList(v: unknown, name: string): string[] | undefined {
  if (v === undefined) return undefined;
  const list = Array.isArray(v) ? v : [v];
  if (!list.every((x): x is string => typeof x === 'string')) throw new HttpError(400, 'E_OPS_ARG', `${name} must be a list of strings`);
  return list;
}

function intParam(v: unknown, name: string, min: number, max: number): number | undefined {
  if (v === undefined || v === '') return undefined;
  const n = typeof v === 'number' ? v : Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw new HttpError(400, 'E_OPS_ARG', `${name} must be an integer from ${min} to ${max}, got ${JSON.stringify(v)}`);
  return n;
}

function stringParam(v: unknown, name: string): string | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw new HttpError(400, 'E_OPS_ARG', `${name} must be given once, as a string`);
  return v;
}

type Query = Record<string, unknown>;
type Params = Record<string, string>;

/**
 * The daemon's HTTP API: the data plane the chatbot uses, and the admin plane that runs the guarded
 * operations online. See the routes table in README.
 */
export async function buildApp(opts: BuildAppOptions): Promise<FastifyInstance> {
  const { ctx } = opts;
  if (typeof opts.adminToken !== 'string' || opts.adminToken.length < MIN_TOKEN_LENGTH) {
    throw new ConfigError('E_CONFIG', `the admin token must be at least ${MIN_TOKEN_LENGTH} characters long`);
  }
  const apiToken = opts.apiToken ?? null;
  if (apiToken !== null && apiToken.length < MIN_TOKEN_LENGTH) {
    throw new ConfigError('E_CONFIG', `CHATMEM_API_TOKEN must be at least ${MIN_TOKEN_LENGTH} characters long`);
  }
  const adminDigest = sha256(opts.adminToken);
  const apiDigest = apiToken === null ? null : sha256(apiToken);
  const metrics = opts.metrics ?? new Metrics();
  const bodyLimit = opts.bodyLimit ?? DEFAULT_BODY_LIMIT;
  const started = Date.now();

  const redact = { paths: ['req.headers.authorization', 'headers.authorization', 'authorization'], censor: '***' };
  const logger = opts.logger === true ? { level: 'info', redact } : typeof opts.logger === 'object' && opts.logger !== null ? { redact, ...opts.logger } : false;

  const app = Fastify({
    logger,
    // One line per request, written in onResponse below with the URL's credentials masked.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit,
    // User ids may be 256 characters; percent-encoded UTF-8 takes up to 12 bytes per character.
    routerOptions: { maxParamLength: 4096 },
    // In-flight requests finish on close; idle keep-alive sockets are dropped so close() does not wait for them.
    forceCloseConnections: 'idle',
  });
  // JSON only. A text/plain POST is a "simple" cross-site request that a browser sends without a CORS preflight.
  app.removeContentTypeParser('text/plain');

  // --- auth -------------------------------------------------------------------------------------------

  /** A few audit entries per caller and minute: a flood of bad tokens must not turn into a flood of fsyncs. */
  const authAuditWindow = new Map<string, { start: number; n: number; suppressed: number }>();
  async function auditAuthFailure(req: FastifyRequest, route: string): Promise<void> {
    const remote = req.ip;
    const now = Date.now();
    let w = authAuditWindow.get(remote);
    if (!w || now - w.start > 60_000) {
      if (authAuditWindow.size > 10_000) authAuditWindow.clear();
      // Failures suppressed in the last window are reported by the next entry.
      w = { start: now, n: 0, suppressed: w?.suppressed ?? 0 };
      authAuditWindow.set(remote, w);
    }
    if (w.n >= 10) {
      w.suppressed++;
      return;
    }
    w.n++;
    const suppressed = w.suppressed;
    w.suppressed = 0;
    try {
      await ctx.audit.append({
        action: 'auth-failed',
        outcome: 'refused',
        actor: { kind: 'api', name: 'unknown', remote },
        details: suppressed > 0 ? { route, suppressedBefore: suppressed } : { route },
      });
    } catch (err) {
      req.log.error({ err: { code: isChatmemError(err) ? err.code : 'E_INTERNAL', message: (err as Error).message } }, 'cannot audit a failed login');
    }
  }

  function bearer(req: FastifyRequest): string | null {
    const h = req.headers.authorization;
    if (h === undefined) return null;
    const m = /^Bearer +(\S+) *$/i.exec(h);
    // A header in another scheme still counts as a presented (and wrong) credential.
    return m?.[1] ?? '';
  }

  function refuse(reply: FastifyReply, message: string, invalid: boolean): never {
    void reply.header('WWW-Authenticate', invalid ? 'Bearer realm="chatmem", error="invalid_token"' : 'Bearer realm="chatmem"');
    throw new HttpError(401, 'E_AUTH', message);
  }

  /** Who is calling on `plane`, or a 401. The admin token is accepted on the data plane too. */
  async function authenticate(req: FastifyRequest, reply: FastifyReply, plane: Plane): Promise<Actor | null> {
    const token = bearer(req);
    if (plane === 'data' && apiDigest === null) return null;
    if (token === null) refuse(reply, `missing token: send "Authorization: Bearer <${plane === 'admin' ? 'admin' : 'API'} token>"`, false);
    const isAdmin = sameToken(token, adminDigest);
    const isApi = apiDigest !== null && sameToken(token, apiDigest);
    if (isAdmin) return { kind: 'api', name: 'admin', remote: req.ip };
    if (plane === 'data' && isApi) return { kind: 'api', name: 'api', remote: req.ip };
    const route = req.routeOptions.url ?? req.url.split('?')[0] ?? '';
    if (plane === 'admin') await auditAuthFailure(req, route);
    else req.log.warn({ route, remote: req.ip }, 'data API call with a wrong token');
    refuse(reply, plane === 'admin' ? 'invalid admin token' : 'invalid token', true);
  }

  /** The authenticated caller of each admin request, set by its onRequest guard. */
  const actors = new WeakMap<FastifyRequest, Actor>();
  const actorOf = (req: FastifyRequest): Actor => actors.get(req) ?? { kind: 'api', name: 'admin', remote: req.ip };

  app.addHook('onRequest', async (req) => {
    for (const key of Object.keys((req.query ?? {}) as Query)) {
      if (TOKEN_PARAMS.test(key)) {
        throw new HttpError(400, 'E_TOKEN_IN_QUERY', `credentials are never accepted in the query string (${key}=); send "Authorization: Bearer <token>"`);
      }
    }
    // Without a data token the API is open to anything that can reach loopback, including web pages that
    // rebind their DNS name to 127.0.0.1; requiring a loopback Host header stops those.
    if (apiDigest === null && !isLoopbackHost(hostName(req.headers.host))) {
      throw new HttpError(403, 'E_HOST', 'without CHATMEM_API_TOKEN the API answers only to Host: localhost, 127.0.0.1 or [::1]');
    }
  });

  const guard = (plane: Plane) => async (req: FastifyRequest, reply: FastifyReply) => {
    const actor = await authenticate(req, reply, plane);
    if (actor) actors.set(req, actor);
  };
  const dataAuth = guard('data');
  const adminAuth = guard('admin');

  // --- logging, metrics and errors ---------------------------------------------------------------------

  app.addHook('onResponse', async (req, reply) => {
    const route = req.routeOptions.url ?? 'unmatched';
    const ms = reply.elapsedTime;
    metrics.observe(req.method, route, reply.statusCode, ms / 1000);
    req.log.info(
      { method: req.method, url: loggableUrl(req.url), route, status: reply.statusCode, ms: Math.round(ms * 10) / 10, remote: req.ip },
      'request',
    );
  });

  // close() drops only the keep-alive sockets idle at that moment; a socket whose request was in flight would
  // stay open after its answer and hold the shutdown until the client lets go. Answers during close end the socket.
  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
  });
  app.addHook('onSend', async (_req, reply, payload) => {
    if (closing) void reply.header('connection', 'close');
    return payload;
  });

  app.setErrorHandler(async (err, req, reply) => {
    const c = classify(err);
    if (c.code === 'E_BODY_LIMIT') c.message = `request body is larger than the limit of ${bodyLimit} bytes (server.bodyLimit)`;
    if (c.internal) {
      const e = err as Error & { code?: unknown };
      req.log.error({ err: { code: e.code, message: e.message, stack: e.stack }, route: req.routeOptions.url }, 'request failed');
    }
    return reply.status(c.status).send({ error: { code: c.code, message: c.message } });
  });

  app.setNotFoundHandler(async (req, reply) => {
    return reply.status(404).send({ error: { code: 'E_NOT_FOUND', message: `no route ${req.method} ${req.url.split('?')[0] ?? ''}` } });
  });

  /** Runs an admin operation and logs one line for it (tokens never reach the log: only the actor's name). */
  async function adminOp<T>(req: FastifyRequest, action: string, run: (actor: Actor) => Promise<T>): Promise<T> {
    const actor = actorOf(req);
    const t0 = performance.now();
    try {
      const result = await run(actor);
      const r = (result ?? {}) as Record<string, unknown>;
      if (typeof r.backup === 'string') metrics.noteBackup(new Date());
      req.log.info(
        {
          action,
          actor,
          outcome: 'done',
          ms: Math.round(performance.now() - t0),
          ...(typeof r.backup === 'string' ? { backup: r.backup } : {}),
          ...(typeof r.auditOp === 'string' ? { auditOp: r.auditOp } : {}),
        },
        'admin operation',
      );
      return result;
    } catch (err) {
      const c = classify(err);
      req.log.warn({ action, actor, outcome: 'failed', code: c.code, ms: Math.round(performance.now() - t0) }, 'admin operation');
      throw err;
    }
  }

  const unknownUser = (id: string) => new OpsError('E_UNKNOWN_USER', `unknown user: ${JSON.stringify(id)}`);

  // --- public ----------------------------------------------------------------------------------------------

  app.get('/healthz', async () => ({
    ok: true,
    store: ctx.config.store.display,
    kind: ctx.store.kind,
    version: VERSION,
    pid: process.pid,
    uptime: Math.round((Date.now() - started) / 1000),
  }));

  let pageHtml: Promise<string> | null = null;
  app.get('/admin', async (_req, reply) => {
    pageHtml ??= loadAdminPage();
    return reply
      .header('Content-Security-Policy', "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'")
      .header('X-Frame-Options', 'DENY')
      .header('X-Content-Type-Options', 'nosniff')
      .header('Referrer-Policy', 'no-referrer')
      .type('text/html; charset=utf-8')
      .send(await pageHtml);
  });

  // Scraping a big store costs a scan (JSON) or an aggregate query (SQL): sample at most every 10 s.
  let storeSample: { at: number; value: Promise<{ users: number; bytes: number } | null> } | null = null;
  let backupSample: { at: number; value: Promise<string | null> } | null = null;
  app.get('/metrics', { onRequest: dataAuth }, async (req, reply) => {
    const now = Date.now();
    if (!storeSample || now - storeSample.at > 10_000) {
      storeSample = {
        at: now,
        value: ctx.store.stats().then(
          (s) => ({ users: s.users, bytes: s.bytes }),
          (err: unknown) => {
            req.log.error({ err: { message: (err as Error).message } }, 'metrics: cannot read store stats');
            return null;
          },
        ),
      };
    }
    if (!backupSample || now - backupSample.at > 30_000) {
      // Newest first; legacy files without a date sort last.
      backupSample = { at: now, value: ctx.ops.listBackups().then((list) => list.find((b) => b.createdAt)?.createdAt ?? null, () => null) };
    }
    const listed = await backupSample.value;
    if (listed) metrics.noteBackup(new Date(listed));
    return reply.type(METRICS_CONTENT_TYPE).send(metrics.render({ store: await storeSample.value, lastBackupAt: metrics.lastBackupAt }));
  });

  // --- data plane ------------------------------------------------------------------------------------------

  const store = ctx.store;
  const valueOf = (body: unknown, what: string): unknown => {
    const b = body as Record<string, unknown> | null | undefined;
    if (typeof b !== 'object' || b === null || Array.isArray(b) || !('value' in b)) {
      throw new HttpError(400, 'E_RECORD', `${what}: the body must be {"value": <any JSON value>}`);
    }
    return b.value;
  };

  app.get<{ Params: Params }>('/v1/users/:id', { onRequest: dataAuth }, async (req) => {
    const id = req.params.id ?? '';
    const record = await store.get(id);
    if (!record) throw unknownUser(id);
    return record;
  });
  // Through the operations: a PUT or PATCH that drops part of a user's memory backs that user up first.
  app.put<{ Params: Params }>('/v1/users/:id', { onRequest: dataAuth }, async (req) => ctx.ops.putRecord(req.params.id ?? '', bodyObject(req.body, 'record', 'E_RECORD'), { actor: actorOf(req) }));
  app.patch<{ Params: Params }>('/v1/users/:id', { onRequest: dataAuth }, async (req) => ctx.ops.patchRecord(req.params.id ?? '', bodyObject(req.body, 'patch', 'E_RECORD'), { actor: actorOf(req) }));
  app.post<{ Params: Params }>('/v1/users/:id/history', { onRequest: dataAuth }, async (req, reply) => {
    const record = await store.appendHistory(req.params.id ?? '', bodyObject(req.body, 'history entry', 'E_RECORD') as { role: string; text: string });
    return reply.status(201).send(record);
  });
  app.put<{ Params: Params }>('/v1/users/:id/flags/:key', { onRequest: dataAuth }, async (req) =>
    store.setFlag(req.params.id ?? '', req.params.key ?? '', valueOf(req.body, 'flag')),
  );
  app.delete<{ Params: Params }>('/v1/users/:id/flags/:key', { onRequest: dataAuth }, async (req) => {
    const id = req.params.id ?? '';
    // Clearing a flag of a user who does not exist must not create that user.
    if (!(await store.get(id))) throw unknownUser(id);
    return store.clearFlag(id, req.params.key ?? '');
  });
  app.put<{ Params: Params }>('/v1/users/:id/slots/:key', { onRequest: dataAuth }, async (req) =>
    store.setSlot(req.params.id ?? '', req.params.key ?? '', valueOf(req.body, 'slot')),
  );
  app.delete<{ Params: Params }>('/v1/users/:id/slots/:key', { onRequest: dataAuth }, async (req) => {
    const id = req.params.id ?? '';
    if (!(await store.get(id))) throw unknownUser(id);
    return store.patch(id, { slots: { [req.params.key ?? '']: null } });
  });

  const listUsers = async (req: FastifyRequest) => {
    const q = req.query as Query;
    return store.list({ cursor: stringParam(q.cursor, 'cursor') ?? null, limit: intParam(q.limit, 'limit', 1, 1000) });
  };
  const search = async (req: FastifyRequest) => {
    const q = req.query as Query;
    const text = stringParam(q.q, 'q');
    if (text === undefined || text.trim() === '') throw new HttpError(400, 'E_STORE_ARG', 'search needs a query: ?q=<text>');
    return { items: await store.search(text, { limit: intParam(q.limit, 'limit', 1, 1000) }) };
  };
  app.get('/v1/users', { onRequest: dataAuth }, listUsers);
  app.get('/v1/search', { onRequest: dataAuth }, search);
  app.get('/v1/stats', { onRequest: dataAuth }, async () => store.stats());

  // --- admin plane -----------------------------------------------------------------------------------------

  const ops = ctx.ops;
  app.get<{ Params: Params }>('/v1/admin/users/:id', { onRequest: adminAuth }, async (req) => {
    const id = req.params.id ?? '';
    const record = await store.get(id);
    if (!record) throw unknownUser(id);
    return record;
  });
  app.get('/v1/admin/users', { onRequest: adminAuth }, listUsers);
  app.get('/v1/admin/search', { onRequest: adminAuth }, search);
  app.get('/v1/admin/stats', { onRequest: adminAuth }, async () => store.stats());

  app.delete<{ Params: Params }>('/v1/users/:id', { onRequest: adminAuth }, async (req) => {
    const fullBackup = optionalBool((req.query as Query).fullBackup, 'fullBackup');
    return adminOp(req, 'delete-users', (actor) => ops.deleteUsers([req.params.id ?? ''], { fullBackup, actor }));
  });
  app.post('/v1/admin/delete', { onRequest: adminAuth }, async (req) => {
    const b = bodyObject(req.body, 'delete');
    const users = stringList(b.users, 'users');
    if (!users || users.length === 0) throw new HttpError(400, 'E_OPS_ARG', 'delete: give {"users": ["<user id>", ...]}');
    const fullBackup = optionalBool(b.fullBackup, 'fullBackup');
    return adminOp(req, 'delete-users', (actor) => ops.deleteUsers(users, { fullBackup, actor }));
  });
  app.post('/v1/admin/clear', { onRequest: adminAuth }, async (req) => {
    const b = req.body as Record<string, unknown> | undefined;
    if (typeof b !== 'object' || b === null || b.confirm !== 'YES') {
      throw new HttpError(400, 'E_CONFIRM', 'clearing every user needs the body {"confirm": "YES"} (exactly, in capitals)');
    }
    return adminOp(req, 'clear-all', (actor) => ops.clearAll({ actor }));
  });

  app.get('/v1/admin/backups', { onRequest: adminAuth }, async () => ({ backups: await ops.listBackups() }));
  app.post('/v1/admin/backups', { onRequest: adminAuth }, async (req, reply) => {
    const b = req.body === undefined || req.body === null ? {} : bodyObject(req.body, 'backup');
    const gzip = optionalBool(b.gzip, 'gzip');
    const reason = b.reason === undefined ? 'manual' : b.reason;
    if (typeof reason !== 'string' || !(BACKUP_REASONS as readonly string[]).includes(reason)) {
      throw new HttpError(400, 'E_OPS_ARG', `reason must be one of ${BACKUP_REASONS.join(', ')}`);
    }
    try {
      const result = await adminOp(req, 'backup', (actor) => ops.createBackup({ gzip, reason: reason as BackupReason, actor }));
      return reply.status(201).send({ ...result, backup: result.id });
    } catch (err) {
      metrics.backupFailures++;
      throw err;
    }
  });
  app.get<{ Params: Params }>('/v1/admin/backups/:id', { onRequest: adminAuth }, async (req) => {
    const q = req.query as Query;
    return ops.inspectBackup(req.params.id ?? '', { user: stringParam(q.user, 'user'), sample: intParam(q.sample, 'sample', 0, 10_000) });
  });
  const verifyResponse = (results: Awaited<ReturnType<typeof ops.verifyBackups>>) => ({ ok: results.every((r) => r.ok), results });
  app.post<{ Params: Params }>('/v1/admin/backups/:id/verify', { onRequest: adminAuth }, async (req) => verifyResponse(await ops.verifyBackups(req.params.id ?? '')));
  app.post('/v1/admin/verify', { onRequest: adminAuth }, async () => verifyResponse(await ops.verifyBackups()));

  app.get('/v1/admin/diff', { onRequest: adminAuth }, async (req) => {
    const q = req.query as Query;
    const a = stringParam(q.a, 'a');
    if (!a) throw new HttpError(400, 'E_OPS_ARG', 'diff needs ?a=<backup id or current>[&b=<backup id or current>]');
    return ops.diff(a, stringParam(q.b, 'b') ?? 'current', { users: stringList(q.users, 'users') });
  });

  app.post('/v1/admin/restore', { onRequest: adminAuth }, async (req) => {
    const b = bodyObject(req.body, 'restore');
    const backup = b.backup;
    if (typeof backup !== 'string' || backup === '') throw new HttpError(400, 'E_OPS_ARG', 'restore: give {"backup": "<backup id>"}');
    const mode = b.mode;
    if (mode !== undefined && mode !== 'replace' && mode !== 'merge') throw new HttpError(400, 'E_OPS_ARG', 'mode must be "replace" or "merge"');
    const users = stringList(b.users, 'users');
    const dryRun = optionalBool(b.dryRun, 'dryRun');
    const wholeStore = optionalBool(b.wholeStore, 'wholeStore');
    return adminOp(req, 'restore', (actor) => ops.restore(backup, { users, mode, dryRun, wholeStore, actor }));
  });

  app.post('/v1/admin/prune', { onRequest: adminAuth }, async (req) => {
    const b = req.body === undefined || req.body === null ? {} : bodyObject(req.body, 'prune');
    const policy = b.policy === undefined ? ctx.config.retention : b.policy;
    if (typeof policy !== 'object' || policy === null || Array.isArray(policy)) throw new HttpError(400, 'E_RETENTION_POLICY', 'policy must be an object, e.g. {"daily": 7}');
    const dryRun = optionalBool(b.dryRun, 'dryRun');
    const only = b.only === undefined ? undefined : stringList(b.only, 'only');
    return adminOp(req, 'prune', (actor) => ops.prune(policy as RetentionPolicy, { dryRun, only, actor }));
  });

  app.post('/v1/admin/import', { onRequest: adminAuth }, async (req) => {
    const b = bodyObject(req.body, 'import');
    const file = b.file;
    if (typeof file !== 'string' || !path.isAbsolute(file)) {
      throw new HttpError(400, 'E_OPS_ARG', 'import: give {"file": "<absolute path readable by the daemon>"}; relative paths would resolve against the daemon\'s directory, not yours');
    }
    return adminOp(req, 'import', (actor) => ops.importFile(file, { actor }));
  });

  app.get('/v1/admin/audit', { onRequest: adminAuth }, async (req) => {
    const q = req.query as Query;
    const sinceText = stringParam(q.since, 'since');
    const since = sinceText === undefined ? undefined : new Date(sinceText);
    if (since && Number.isNaN(since.getTime())) throw new HttpError(400, 'E_OPS_ARG', `since must be a date, got ${JSON.stringify(sinceText)}`);
    const entries = await ops.readAudit({
      since,
      user: stringParam(q.user, 'user'),
      action: stringParam(q.action, 'action'),
      op: stringParam(q.op, 'op'),
      limit: intParam(q.limit, 'limit', 1, 100_000) ?? 1000,
    });
    return { entries };
  });

  return app;
}

const PLACEHOLDER_PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>chatmem admin</title></head>
<body><h1>chatmem</h1><p>The web admin page is not part of this build. Use the <code>chatmem</code> CLI or the admin API.</p></body></html>
`;

/** The web admin page from src/web/page.ts, built separately; a placeholder when it is not there. */
async function loadAdminPage(): Promise<string> {
  // A computed specifier: the page module is optional at build time and TypeScript must not require it.
  const spec = '../web/page.js';
  let mod: { adminPageHtml?: () => string };
  try {
    mod = (await import(spec)) as { adminPageHtml?: () => string };
  } catch (err) {
    const code = typeof err === 'object' && err !== null && 'code' in err ? (err as { code: unknown }).code : undefined;
    if (code === 'ERR_MODULE_NOT_FOUND' || /Cannot find module|Failed to load url|Failed to resolve/i.test((err as Error).message)) return PLACEHOLDER_PAGE;
    throw err;
  }
  return typeof mod.adminPageHtml === 'function' ? mod.adminPageHtml() : PLACEHOLDER_PAGE;
}
