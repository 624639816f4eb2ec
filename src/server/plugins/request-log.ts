import { createHmac, randomBytes } from 'node:crypto';
import type { z } from 'zod';
import type { Metrics } from '../metrics.js';
import { globalPlugin } from '../plugin.js';

export type RequestLogOptions = {
  metrics: Metrics;
  /**
   * Log one in this many successful data-plane requests (config `server.logSample`; default 1: every one).
   * Errors, admin and public requests are always logged; sampled lines carry `sample: N`.
   */
  dataSample?: number;
};

type Loggable = { params?: Record<string, string>; query?: string[]; otherQuery?: number };

/**
 * What the request log says about a request's URL: the route pattern (from the caller), each path
 * parameter as a keyed hash (`tag`), and the names of the query parameters its route declares. Never
 * the raw URL: it carries phone numbers, search text, and whatever a client put in an unknown parameter
 * (a token).
 */
function loggableParts(params: unknown, query: unknown, declared: z.ZodObject | undefined, tag: (v: string) => string): Loggable {
  const out: Loggable = {};
  if (typeof params === 'object' && params !== null) {
    const entries = Object.entries(params as Record<string, unknown>).filter((e): e is [string, string] => typeof e[1] === 'string');
    if (entries.length > 0) out.params = Object.fromEntries(entries.map(([k, v]) => [k, tag(v)]));
  }
  if (typeof query === 'object' && query !== null) {
    const names = Object.keys(query);
    const known = declared ? names.filter((n) => Object.hasOwn(declared.shape, n)) : [];
    if (known.length > 0) out.query = known;
    if (names.length > known.length) out.otherQuery = names.length - known.length;
  }
  return out;
}

/** One line per request (sampled on the data plane when asked), without credentials or user data, and the request metrics. */
export const requestLogPlugin = globalPlugin<RequestLogOptions>(async (app, { metrics, dataSample = 1 }) => {
  // Per daemon run: the same user gets the same tag in one run's log, and a tag cannot be reversed by
  // hashing every phone number (the key never leaves this process).
  const logKey = randomBytes(32);
  const tag = (v: string): string => createHmac('sha256', logKey).update(v, 'utf8').digest('base64url').slice(0, 16);
  const every = Math.max(1, Math.floor(dataSample));
  let dataSeen = 0;

  app.addHook('onResponse', async (req, reply) => {
    const route = req.routeOptions.url ?? 'unmatched';
    const ms = reply.elapsedTime;
    metrics.observe(req.method, route, reply.statusCode, ms / 1000);
    const api = req.routeOptions.config.api;
    // A bot appends on every message: its successful calls are the bulk of the log and say little each.
    const sampled = every > 1 && api?.auth === 'data' && reply.statusCode < 400;
    if (sampled && dataSeen++ % every !== 0) return;
    req.log.info(
      {
        method: req.method,
        route,
        ...loggableParts(req.params, req.query, api?.query, tag),
        status: reply.statusCode,
        ms: Math.round(ms * 10) / 10,
        remote: req.ip,
        ...(sampled ? { sample: every } : {}),
      },
      'request',
    );
  });
});
