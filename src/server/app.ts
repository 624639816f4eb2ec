import { createHmac, randomBytes } from 'node:crypto';
import { STATUS_CODES, type IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import * as path from 'node:path';
import Fastify, { LogController, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Context } from '../context.js';
import { ChatmemError, ConfigError, isChatmemError, OpsError } from '../errors.js';
import { httpStatusOf } from '../error-codes.js';
import { redactSecrets } from '../store/url.js';
import { BACKUP_REASONS, type BackupReason } from '../backup/manifest.js';
import type { RetentionPolicy } from '../backup/retention.js';
import type { Actor } from '../ops/audit.js';
import { stringifyJson } from '../json-safe.js';
import { VERSION } from '../version.js';
import type { HistoryInput } from '../record.js';
import { ADMIN_PAGE_CSP, ADMIN_PAGE_HTML } from '../web/page.generated.js';
import { Metrics, METRICS_CONTENT_TYPE } from './metrics.js';
import { docsPage, openApiDocument } from './openapi.js';
import { project, registerBotRoutes, wantsEnsure } from './routes/bot.js';

/** Every route each app registered (HEAD aside), in order: the OpenAPI test compares them with the document. */
export const registeredRoutes = new WeakMap<FastifyInstance, { method: string; url: string }[]>();
import { resolveHttpLimits, type HttpLimits } from './limits.js';
import { tokenDigest, tokenMatches } from './tokens.js';
import { NamedTokens } from './admin-tokens.js';

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
  /** Timeouts and header/URL limits (config `server.*`); defaults in DEFAULT_HTTP_LIMITS. */
  limits?: Partial<HttpLimits>;
  /** Named admin tokens (`chatmem token add`), data/admin-tokens.json; none when absent. */
  adminTokensFile?: string;
}

/** An error of the HTTP layer, answered as `{ error: { code, message } }` with its code's status (src/error-codes.ts). */
class HttpError extends ChatmemError {}

/** Fastify's own errors that are the caller's fault, with our code for each. */
const FASTIFY_ERRORS: Record<string, [string, string]> = {
  FST_ERR_CTP_BODY_TOO_LARGE: ['E_BODY_LIMIT', 'request body is larger than the limit (server.bodyLimit)'],
  FST_ERR_CTP_INVALID_JSON_BODY: ['E_BAD_JSON', 'request body is not valid JSON'],
  FST_ERR_CTP_EMPTY_JSON_BODY: ['E_BAD_JSON', 'request body is empty but Content-Type is application/json'],
  FST_ERR_CTP_INVALID_MEDIA_TYPE: ['E_MEDIA_TYPE', 'request bodies must be JSON (Content-Type: application/json)'],
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: ['E_BAD_REQUEST', 'request body size does not match Content-Length'],
};

/**
 * Status, code and message for any error a handler or Fastify raised. A chatmem error gets its code's
 * status from the catalogue; a 500 keeps its own code and message: those are written for operators (the admin API
 * needs to say why a restore failed). Anything else is E_INTERNAL, with details only in the log.
 */
function classify(err: unknown): { status: number; code: string; message: string; internal: boolean } {
  if (isChatmemError(err)) {
    const status = httpStatusOf(err.code);
    return { status, code: err.code, message: err.message, internal: status === 500 };
  }
  const fcode = typeof err === 'object' && err !== null && 'code' in err ? String((err as { code: unknown }).code) : '';
  const known = FASTIFY_ERRORS[fcode];
  if (known) return { status: httpStatusOf(known[0]), code: known[0], message: known[1], internal: false };
  const statusCode = typeof err === 'object' && err !== null && 'statusCode' in err ? Number((err as { statusCode: unknown }).statusCode) : NaN;
  if (statusCode >= 400 && statusCode < 500) {
    return { status: statusCode, code: 'E_BAD_REQUEST', message: err instanceof Error ? err.message : 'bad request', internal: false };
  }
  return { status: 500, code: 'E_INTERNAL', message: 'internal error; see the daemon log', internal: true };
}

const sha256 = tokenDigest;
const sameToken = tokenMatches;

/** Query parameters that look like credentials: refused outright. */
const TOKEN_PARAMS = /^(token|access_token|api_key|apikey|auth|authorization)$/i;

/** Query parameters the API knows; only their names are logged, never their values (search text, user ids). */
const KNOWN_QUERY = new Set(['q', 'limit', 'cursor', 'fullBackup', 'user', 'users', 'sample', 'a', 'b', 'since', 'action', 'op']);

/**
 * What the request log says about a request's URL: the route pattern (from the caller), each path
 * parameter as a keyed hash (`tag`), and the names of known query parameters. Never the raw URL: it
 * carries phone numbers, search text, and whatever a client put in an unknown parameter (a token).
 */
function loggableParts(params: unknown, query: unknown, tag: (v: string) => string): { params?: Record<string, string>; query?: string[]; otherQuery?: number } {
  const out: { params?: Record<string, string>; query?: string[]; otherQuery?: number } = {};
  if (typeof params === 'object' && params !== null) {
    const entries = Object.entries(params as Record<string, unknown>).filter((e): e is [string, string] => typeof e[1] === 'string');
    if (entries.length > 0) out.params = Object.fromEntries(entries.map(([k, v]) => [k, tag(v)]));
  }
  if (typeof query === 'object' && query !== null) {
    const names = Object.keys(query);
    const known = names.filter((n) => KNOWN_QUERY.has(n));
    if (known.length > 0) out.query = known;
    if (names.length > known.length) out.otherQuery = names.length - known.length;
  }
  return out;
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
    throw new HttpError(code, `${what}: the body must be a JSON object`);
  }
  return body as Record<string, unknown>;
}

function optionalBool(v: unknown, name: string): boolean | undefined {
  if (v === undefined) return undefined;
  if (typeof v === 'boolean') return v;
  if (v === 'true' || v === '1') return true;
  if (v === 'false' || v === '0') return false;
  throw new HttpError('E_OPS_ARG', `${name} must be true or false, got ${JSON.stringify(v)}`);
}

function stringList(v: unknown, name: string): string[] | undefined {
  if (v === undefined) return undefined;
  const list = Array.isArray(v) ? v : [v];
  if (!list.every((x): x is string => typeof x === 'string')) throw new HttpError('E_OPS_ARG', `${name} must be a list of strings`);
  return list;
}

function intParam(v: unknown, name: string, min: number, max: number): number | undefined {
  if (v === undefined || v === '') return undefined;
  const n = typeof v === 'number' ? v : Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw new HttpError('E_OPS_ARG', `${name} must be an integer from ${min} to ${max}, got ${JSON.stringify(v)}`);
  return n;
}

function stringParam(v: unknown, name: string): string | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw new HttpError('E_OPS_ARG', `${name} must be given once, as a string`);
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
  const limits = resolveHttpLimits(opts.limits);
  const started = Date.now();
  // Per daemon run: the same user gets the same tag in one run's log, and a tag cannot be reversed by
  // hashing every phone number (the key never leaves this process).
  const logKey = randomBytes(32);
  const logTag = (v: string): string => createHmac('sha256', logKey).update(v, 'utf8').digest('base64url').slice(0, 16);

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
    // Slow or idle clients must not hold sockets: see limits.ts, and the connection timeout below.
    keepAliveTimeout: limits.keepAliveTimeout,
    requestTimeout: limits.requestTimeout,
    http: {
      headersTimeout: limits.headersTimeout,
      maxHeaderSize: limits.maxHeaderSize,
      // Node checks the header and request clocks only this often (default 30 s).
      connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(limits.headersTimeout / 4))),
      // Node would answer a missing Host with an empty 400; the Host check in onRequest answers it in our shape.
      requireHostHeader: false,
    },
    // Errors Node raises before Fastify sees a request (431, 408, unparsable requests), and bad URLs, in our shape.
    clientErrorHandler: (err: Error & { code?: string }, socket: Socket) => answerClientError(err, socket),
    frameworkErrors: (err, _req, reply) => {
      const [code, message] =
        err.code === 'FST_ERR_MAX_PARAM_LENGTH'
          ? ['E_URI_TOO_LONG', 'a path segment is longer than 4096 bytes']
          : err.code === 'FST_ERR_BAD_URL'
            ? ['E_BAD_URL', 'the URL path is not valid percent-encoded UTF-8']
            : ['E_BAD_REQUEST', 'bad request'];
      // The generic reply type of frameworkErrors cannot take a status; this is the plain FastifyReply.
      return (reply as FastifyReply).status(httpStatusOf(code)).send({ error: { code, message } });
    },
  });

  function answerClientError(err: Error & { code?: string }, socket: Socket): void {
    if (err.code === 'ECONNRESET' || socket.destroyed) return;
    const [code, message] =
      err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? ['E_REQUEST_TIMEOUT', `the request did not arrive in time (server.headersTimeout ${limits.headersTimeout} ms, server.requestTimeout ${limits.requestTimeout} ms)`]
        : err.code === 'HPE_HEADER_OVERFLOW'
          ? ['E_HEADERS_TOO_LARGE', `the request line and headers are larger than ${limits.maxHeaderSize} bytes (server.maxHeaderSize)`]
          : ['E_BAD_REQUEST', 'malformed HTTP request'];
    app.log.info({ code, reason: err.code, remote: socket.remoteAddress }, 'client error');
    // A response already begun on this socket (keep-alive) cannot be followed by another one.
    // Node's private field, which its own clientError default reads too.
    const pending: { headersSent?: boolean } | undefined = (socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage;
    if (socket.writable && !pending?.headersSent) {
      const status = httpStatusOf(code);
      const body = JSON.stringify({ error: { code, message } });
      socket.end(
        `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\nContent-Type: application/json; charset=utf-8\r\n` +
          `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      );
      // The answer needs a moment to leave; a client that never reads must not keep the socket.
      setTimeout(() => socket.destroy(), 1000).unref();
    } else {
      socket.destroy();
    }
  }

  // A connection that sends nothing is closed after connectionTimeout. The clock stops when its first request
  // arrives: from then on Node's request, headers and keep-alive clocks apply, and an answer may take its time.
  app.server.on('connection', (socket: Socket) => socket.setTimeout(limits.connectionTimeout));
  app.server.on('request', (req: IncomingMessage) => req.socket.setTimeout(0));

  // Bodies are JSON in UTF-8: a declared other charset is refused, and bytes that are not UTF-8 are an error
  // rather than U+FFFD in a user's memory.
  const parseJson = app.getDefaultJsonParser('error', 'error');
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (req, body, done) => {
    const charset = /;\s*charset\s*=\s*"?([^";\s]*)/i.exec(req.headers['content-type'] ?? '')?.[1];
    if (charset !== undefined && !/^utf-?8$/i.test(charset)) {
      done(new HttpError('E_MEDIA_TYPE', `request bodies must be JSON in UTF-8; got charset=${charset.slice(0, 40)}`), undefined);
      return;
    }
    let text: string;
    try {
      text = utf8.decode(body as Buffer);
    } catch {
      done(new HttpError('E_BAD_ENCODING', 'request body is not valid UTF-8'), undefined);
      return;
    }
    parseJson(req, text, done);
  });
  // JSON only. A text/plain POST is a "simple" cross-site request that a browser sends without a CORS preflight.
  app.removeContentTypeParser('text/plain');
  const registered: { method: string; url: string }[] = [];
  registeredRoutes.set(app, registered);
  app.addHook('onRoute', (r) => {
    for (const method of [r.method].flat()) if (method !== 'HEAD') registered.push({ method, url: r.url });
  });
  // Fastify's default serialiser recurses: a deeply nested record stored before the limits would answer 500.
  app.setReplySerializer((payload) => stringifyJson(payload));

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
    throw new HttpError('E_AUTH', message);
  }

  /** Who is calling on `plane`, or a 401. The admin token is accepted on the data plane too. */
  async function authenticate(req: FastifyRequest, reply: FastifyReply, plane: Plane): Promise<Actor | null> {
    const token = bearer(req);
    if (plane === 'data' && apiDigest === null) return null;
    if (token === null) refuse(reply, `missing token: send "Authorization: Bearer <${plane === 'admin' ? 'admin' : 'API'} token>"`, false);
    const isAdmin = sameToken(token, adminDigest);
    const isApi = apiDigest !== null && sameToken(token, apiDigest);
    // A damaged tokens file must not lock out the built-in token: it is logged and matches nothing.
    const named =
      isAdmin || !namedTokens
        ? null
        : await namedTokens.match(token).catch((err: unknown) => {
            req.log.error({ err: { code: isChatmemError(err) ? err.code : 'E_INTERNAL', message: (err as Error).message } }, 'cannot read the named admin tokens');
            return null;
          });
    const osUser = osUserOf(req);
    if (isAdmin) return { kind: 'api', name: 'admin', remote: req.ip, ...osUser };
    if (named !== null) return { kind: 'api', name: named, remote: req.ip, ...osUser };
    if (plane === 'data' && isApi) return { kind: 'api', name: 'api', remote: req.ip };
    const route = req.routeOptions.url ?? req.url.split('?')[0] ?? '';
    if (plane === 'admin') await auditAuthFailure(req, route);
    else req.log.warn({ route, remote: req.ip }, 'data API call with a wrong token');
    refuse(reply, plane === 'admin' ? 'invalid admin token' : 'invalid token', true);
  }

  const namedTokens = opts.adminTokensFile ? new NamedTokens(opts.adminTokensFile) : null;
  /** The OS user a CLI says it runs as: printable, at most 64 characters, or nothing. */
  function osUserOf(req: FastifyRequest): { osUser?: string } {
    const h = req.headers['x-chatmem-os-user'];
    if (typeof h !== 'string') return {};
    // eslint-disable-next-line no-control-regex -- control characters are exactly what must not reach the audit log
    const clean = h.replace(/[\u0000-\u001f\u007f]/g, '').trim().slice(0, 64);
    return clean === '' ? {} : { osUser: clean };
  }

  /** The authenticated caller of each admin request, set by its onRequest guard. */
  const actors = new WeakMap<FastifyRequest, Actor>();
  const actorOf = (req: FastifyRequest): Actor => actors.get(req) ?? { kind: 'api', name: 'admin', remote: req.ip };

  app.addHook('onRequest', async (req) => {
    if (req.url.length > limits.maxUrlLength) throw new HttpError('E_URI_TOO_LONG', `the URL is longer than ${limits.maxUrlLength} bytes (server.maxUrlLength)`);
    for (const key of Object.keys((req.query ?? {}) as Query)) {
      if (TOKEN_PARAMS.test(key)) {
        throw new HttpError('E_TOKEN_IN_QUERY', `credentials are never accepted in the query string (${key}=); send "Authorization: Bearer <token>"`);
      }
    }
    // Without a data token the API is open to anything that can reach loopback, including web pages that
    // rebind their DNS name to 127.0.0.1; requiring a loopback Host header stops those.
    if (apiDigest === null && !isLoopbackHost(hostName(req.headers.host))) {
      throw new HttpError('E_HOST', 'without CHATMEM_API_TOKEN the API answers only to Host: localhost, 127.0.0.1 or [::1]');
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
      { method: req.method, route, ...loggableParts(req.params, req.query, logTag), status: reply.statusCode, ms: Math.round(ms * 10) / 10, remote: req.ip },
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
    c.message = redactSecrets(c.message);
    if (c.code === 'E_BODY_LIMIT') c.message = `request body is larger than the limit of ${bodyLimit} bytes (server.bodyLimit)`;
    if (c.internal) {
      const e = err as Error & { code?: unknown };
      req.log.error({ err: { code: e.code, message: redactSecrets(e.message), stack: redactSecrets(e.stack ?? '') }, route: req.routeOptions.url }, 'request failed');
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
    historyCap: ctx.store.historyCap,
    version: VERSION,
    pid: process.pid,
    uptime: Math.round((Date.now() - started) / 1000),
  }));

  let apiDoc: Record<string, unknown> | null = null;
  app.get('/openapi.json', async () => (apiDoc ??= openApiDocument()));
  app.get('/docs', async (_req, reply) =>
    reply.header('Content-Security-Policy', "default-src 'none'; style-src 'unsafe-inline'").type('text/html; charset=utf-8').send(docsPage()),
  );

  app.get('/admin', async (_req, reply) => {
    return reply
      .header('Content-Security-Policy', ADMIN_PAGE_CSP)
      .header('X-Frame-Options', 'DENY')
      .header('X-Content-Type-Options', 'nosniff')
      .header('Referrer-Policy', 'no-referrer')
      .type('text/html; charset=utf-8')
      .send(ADMIN_PAGE_HTML);
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
      // Read from the names, opening only the newest backups' manifests: not every backup on each scrape.
      backupSample = { at: now, value: ctx.ops.newestBackupAt().then((d) => d?.toISOString() ?? null, () => null) };
    }
    const listed = await backupSample.value;
    if (listed) metrics.noteBackup(new Date(listed));
    const offsite = ctx.offsite ? { lagSeconds: ctx.offsite.lagSeconds(), failures: ctx.offsite.failures, pending: ctx.offsite.pending().length, uploaded: ctx.offsite.uploaded } : undefined;
    return reply.type(METRICS_CONTENT_TYPE).send(metrics.render({ store: await storeSample.value, lastBackupAt: metrics.lastBackupAt, offsite }));
  });

  // --- data plane ------------------------------------------------------------------------------------------

  const store = ctx.store;
  const valueOf = (body: unknown, what: string): unknown => {
    const b = body as Record<string, unknown> | null | undefined;
    if (typeof b !== 'object' || b === null || Array.isArray(b) || !('value' in b)) {
      throw new HttpError('E_RECORD', `${what}: the body must be {"value": <any JSON value>}`);
    }
    return b.value;
  };

  app.get<{ Params: Params }>('/v1/users/:id', { onRequest: dataAuth }, async (req) => {
    const id = req.params.id ?? '';
    const q = req.query as Query;
    const record = wantsEnsure(q) ? await store.ensure(id) : await store.get(id);
    if (!record) throw unknownUser(id);
    return project(record, q.fields);
  });
  // Through the operations: a PUT or PATCH that drops part of a user's memory backs that user up first.
  app.put<{ Params: Params }>('/v1/users/:id', { onRequest: dataAuth }, async (req) => ctx.ops.putRecord(req.params.id ?? '', bodyObject(req.body, 'record', 'E_RECORD'), { actor: actorOf(req) }));
  app.patch<{ Params: Params }>('/v1/users/:id', { onRequest: dataAuth }, async (req) => ctx.ops.patchRecord(req.params.id ?? '', bodyObject(req.body, 'patch', 'E_RECORD'), { actor: actorOf(req) }));
  app.post<{ Params: Params }>('/v1/users/:id/history', { onRequest: dataAuth }, async (req, reply) => {
    const id = req.params.id ?? '';
    // An array is one batch, appended in order in one write (a UI saving its whole message list).
    const record = Array.isArray(req.body)
      ? await store.appendHistoryMany(id, req.body as HistoryInput[])
      : await store.appendHistory(id, bodyObject(req.body, 'history entry', 'E_RECORD') as unknown as HistoryInput);
    // `Prefer: return=minimal` (RFC 7240): a bot that only appends need not download 50 turns per message.
    if (/(^|[,;\s])return\s*=\s*"?minimal"?($|[,;\s])/i.test(String(req.headers.prefer ?? ''))) {
      const sent = Array.isArray(req.body) ? (req.body as unknown[]).at(-1) : req.body;
      const given = (sent as { id?: unknown } | undefined)?.id;
      // The write is atomic per user, so a fresh entry is the newest one; a retried entry keeps the id it was sent with.
      const entryId = typeof given === 'string' ? given : (record.history.at(-1)?.id ?? null);
      return reply.status(201).header('preference-applied', 'return=minimal').send({ user_id: record.user_id, id: entryId });
    }
    return reply.status(201).send(record);
  });
  registerBotRoutes(app, { store, ops: ctx.ops, dataAuth });
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
    if (text === undefined || text.trim() === '') throw new HttpError('E_STORE_ARG', 'search needs a query: ?q=<text>');
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
  app.get('/v1/admin/whoami', { onRequest: adminAuth }, async (req) => {
    const a = actorOf(req);
    return { name: a.name, osUser: a.osUser ?? null, remote: a.remote ?? null };
  });

  app.delete<{ Params: Params }>('/v1/users/:id', { onRequest: adminAuth }, async (req) => {
    const fullBackup = optionalBool((req.query as Query).fullBackup, 'fullBackup');
    return adminOp(req, 'delete-users', (actor) => ops.deleteUsers([req.params.id ?? ''], { fullBackup, actor }));
  });
  app.post('/v1/admin/delete', { onRequest: adminAuth }, async (req) => {
    const b = bodyObject(req.body, 'delete');
    const users = stringList(b.users, 'users');
    if (!users || users.length === 0) throw new HttpError('E_OPS_ARG', 'delete: give {"users": ["<user id>", ...]}');
    const fullBackup = optionalBool(b.fullBackup, 'fullBackup');
    return adminOp(req, 'delete-users', (actor) => ops.deleteUsers(users, { fullBackup, actor }));
  });
  app.post('/v1/admin/clear', { onRequest: adminAuth }, async (req) => {
    const b = req.body as Record<string, unknown> | undefined;
    if (typeof b !== 'object' || b === null || b.confirm !== 'YES') {
      throw new HttpError('E_CONFIRM', 'clearing every user needs the body {"confirm": "YES"} (exactly, in capitals)');
    }
    return adminOp(req, 'clear-all', (actor) => ops.clearAll({ actor }));
  });

  app.post('/v1/admin/forget', { onRequest: adminAuth }, async (req) => {
    const b = bodyObject(req.body, 'forget');
    const users = stringList(b.users, 'users');
    if (!users || users.length === 0) throw new HttpError('E_OPS_ARG', 'forget: give {"users": ["<user id>", ...]}');
    return adminOp(req, 'forget', (actor) => ops.forget(users, { actor }));
  });
  app.post('/v1/admin/expire', { onRequest: adminAuth }, async (req) => {
    const b = req.body === undefined || req.body === null ? {} : bodyObject(req.body, 'expire');
    const inactiveAfter = b.inactiveAfter === undefined ? ctx.config.users.inactiveAfter : b.inactiveAfter;
    if (typeof inactiveAfter !== 'string') throw new HttpError('E_OPS_ARG', 'expire: give {"inactiveAfter": "180d"} or set users.inactiveAfter in the config');
    const mode = b.mode === undefined ? ctx.config.users.expireMode : b.mode;
    if (mode !== 'delete' && mode !== 'forget') throw new HttpError('E_OPS_ARG', 'expire: "mode" is "delete" or "forget"');
    const dryRun = optionalBool(b.dryRun, 'dryRun');
    return adminOp(req, 'expire', (actor) => ops.expire({ inactiveAfter, mode }, { dryRun, actor }));
  });
  app.post('/v1/admin/merge', { onRequest: adminAuth }, async (req) => {
    const b = bodyObject(req.body, 'merge');
    if (typeof b.from !== 'string' || typeof b.into !== 'string') throw new HttpError('E_OPS_ARG', 'merge: give {"from": "<user id>", "into": "<user id>"}');
    const { from, into } = b;
    return adminOp(req, 'merge', (actor) => ops.merge(from, into, { actor }));
  });
  app.get('/v1/admin/backups', { onRequest: adminAuth }, async () => ({ backups: await ops.listBackups({ offsite: true }) }));
  app.post('/v1/admin/backups', { onRequest: adminAuth }, async (req, reply) => {
    const b = req.body === undefined || req.body === null ? {} : bodyObject(req.body, 'backup');
    const gzip = optionalBool(b.gzip, 'gzip');
    const reason = b.reason === undefined ? 'manual' : b.reason;
    if (typeof reason !== 'string' || !(BACKUP_REASONS as readonly string[]).includes(reason)) {
      throw new HttpError('E_OPS_ARG', `reason must be one of ${BACKUP_REASONS.join(', ')}`);
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
    if (!a) throw new HttpError('E_OPS_ARG', 'diff needs ?a=<backup id or current>[&b=<backup id or current>]');
    return ops.diff(a, stringParam(q.b, 'b') ?? 'current', { users: stringList(q.users, 'users') });
  });

  app.post('/v1/admin/restore', { onRequest: adminAuth }, async (req) => {
    const b = bodyObject(req.body, 'restore');
    const backup = b.backup;
    if (typeof backup !== 'string' || backup === '') throw new HttpError('E_OPS_ARG', 'restore: give {"backup": "<backup id>"}');
    const mode = b.mode;
    if (mode !== undefined && mode !== 'replace' && mode !== 'merge') throw new HttpError('E_OPS_ARG', 'mode must be "replace" or "merge"');
    const users = stringList(b.users, 'users');
    const dryRun = optionalBool(b.dryRun, 'dryRun');
    const wholeStore = optionalBool(b.wholeStore, 'wholeStore');
    const allowUnverified = optionalBool(b.allowUnverified, 'allowUnverified');
    return adminOp(req, 'restore', (actor) => ops.restore(backup, { users, mode, dryRun, wholeStore, allowUnverified, actor }));
  });

  app.post('/v1/admin/prune', { onRequest: adminAuth }, async (req) => {
    const b = req.body === undefined || req.body === null ? {} : bodyObject(req.body, 'prune');
    const policy = b.policy === undefined ? ctx.config.retention : b.policy;
    if (typeof policy !== 'object' || policy === null || Array.isArray(policy)) throw new HttpError('E_RETENTION_POLICY', 'policy must be an object, e.g. {"daily": 7}');
    const dryRun = optionalBool(b.dryRun, 'dryRun');
    const only = b.only === undefined ? undefined : stringList(b.only, 'only');
    return adminOp(req, 'prune', (actor) => ops.prune(policy as RetentionPolicy, { dryRun, only, actor }));
  });

  app.post('/v1/admin/import', { onRequest: adminAuth }, async (req) => {
    const b = bodyObject(req.body, 'import');
    const file = b.file;
    if (typeof file !== 'string' || !path.isAbsolute(file)) {
      throw new HttpError('E_OPS_ARG', 'import: give {"file": "<absolute path readable by the daemon>"}; relative paths would resolve against the daemon\'s directory, not yours');
    }
    return adminOp(req, 'import', (actor) => ops.importFile(file, { actor }));
  });

  app.get('/v1/admin/audit', { onRequest: adminAuth }, async (req) => {
    const q = req.query as Query;
    const sinceText = stringParam(q.since, 'since');
    const since = sinceText === undefined ? undefined : new Date(sinceText);
    if (since && Number.isNaN(since.getTime())) throw new HttpError('E_OPS_ARG', `since must be a date, got ${JSON.stringify(sinceText)}`);
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
