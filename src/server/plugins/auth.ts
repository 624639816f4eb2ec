import type { FastifyReply, FastifyRequest, onRequestHookHandler } from 'fastify';
import { isChatmemError } from '../../errors.js';
import type { Actor, AuditLog } from '../../ops/audit.js';
import { NamedTokens } from '../admin-tokens.js';
import { globalPlugin } from '../plugin.js';
import { tokenDigest, tokenMatches } from '../tokens.js';
import { HttpError } from './errors.js';

declare module 'fastify' {
  interface FastifyInstance {
    /** onRequest guards of the two planes: they answer 401 or set `request.actor`. */
    auth: { data: onRequestHookHandler; admin: onRequestHookHandler };
  }
  interface FastifyRequest {
    /** The authenticated caller; null on the data plane when the daemon has no data token. */
    actor: Actor | null;
  }
}

export type AuthOptions = {
  /** Bearer token of the admin API (length checked by buildApp). */
  adminToken: string;
  /** Bearer token of the data API; null leaves the data API open (loopback Host only). */
  apiToken: string | null;
  /** Named admin tokens (`chatmem token add`); none when absent. */
  adminTokensFile?: string;
  /** Where failed admin logins are recorded. */
  audit: AuditLog;
  /** Longer URLs are refused before anything else looks at them. */
  maxUrlLength: number;
};

type Plane = 'data' | 'admin';
type Query = Record<string, unknown>;

/** Query parameters that look like credentials: refused outright. */
const TOKEN_PARAMS = /^(token|access_token|api_key|apikey|auth|authorization)$/i;

/**
 * Who the audit log records for a request: its authenticated caller, or, on an open data plane (no data
 * token), the built-in admin name with the caller's address, as before the plugins.
 */
export function actorOf(req: FastifyRequest): Actor {
  return req.actor ?? { kind: 'api', name: 'admin', remote: req.ip };
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

/** The OS user a CLI says it runs as: printable, at most 64 characters, or nothing. */
function osUserOf(req: FastifyRequest): { osUser?: string } {
  const h = req.headers['x-chatmem-os-user'];
  if (typeof h !== 'string') return {};
  // eslint-disable-next-line no-control-regex -- control characters are exactly what must not reach the audit log
  const clean = h.replace(/[\u0000-\u001f\u007f]/g, '').trim().slice(0, 64);
  return clean === '' ? {} : { osUser: clean };
}

/**
 * Who may call: the request checks every request passes (URL length, no credentials in the query, a
 * loopback Host while the data API has no token), the bearer tokens of both planes, named admin tokens,
 * and the audit of failed admin logins. Routes guard themselves with `app.auth.data` / `app.auth.admin`.
 */
export const authPlugin = globalPlugin<AuthOptions>(async (app, opts) => {
  const adminDigest = tokenDigest(opts.adminToken);
  const apiDigest = opts.apiToken === null ? null : tokenDigest(opts.apiToken);
  const namedTokens = opts.adminTokensFile ? new NamedTokens(opts.adminTokensFile) : null;

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
      await opts.audit.append({
        action: 'auth-failed',
        outcome: 'refused',
        actor: { kind: 'api', name: 'unknown', remote },
        details: suppressed > 0 ? { route, suppressedBefore: suppressed } : { route },
      });
    } catch (err) {
      req.log.error({ err: { code: isChatmemError(err) ? err.code : 'E_INTERNAL', message: (err as Error).message } }, 'cannot audit a failed login');
    }
  }

  /** Who is calling on `plane`, or a 401. The admin token is accepted on the data plane too. */
  async function authenticate(req: FastifyRequest, reply: FastifyReply, plane: Plane): Promise<Actor | null> {
    const token = bearer(req);
    if (plane === 'data' && apiDigest === null) return null;
    if (token === null) refuse(reply, `missing token: send "Authorization: Bearer <${plane === 'admin' ? 'admin' : 'API'} token>"`, false);
    const isAdmin = tokenMatches(token, adminDigest);
    const isApi = apiDigest !== null && tokenMatches(token, apiDigest);
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

  app.decorateRequest('actor', null);
  const guard =
    (plane: Plane): onRequestHookHandler =>
    async (req, reply) => {
      req.actor = await authenticate(req, reply, plane);
    };
  app.decorate('auth', { data: guard('data'), admin: guard('admin') });

  app.addHook('onRequest', async (req) => {
    if (req.url.length > opts.maxUrlLength) throw new HttpError('E_URI_TOO_LONG', `the URL is longer than ${opts.maxUrlLength} bytes (server.maxUrlLength)`);
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
});
