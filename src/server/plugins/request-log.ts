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

/** Keyed hashes of user ids kept for reuse; the map is emptied when full (a few MB at most). */
const TAG_CACHE = 10_000;

type Loggable = { params?: Record<string, string>; query?: string[]; otherQuery?: number };

/**
 * What the request log says about a request's URL: the route pattern (from the caller), each path
 * parameter as a keyed hash (`tag`), and the names of the query parameters its route declares. Never
 * the raw URL: it carries phone numbers, search text, and whatever a client put in an unknown parameter
 * (a token).
 */
function loggableParts(out: Loggable, params: unknown, query: unknown, declared: z.ZodObject | undefined, tag: (v: string) => string): void {
  if (typeof params === 'object' && params !== null) {
    let tagged: Record<string, string> | undefined;
    for (const [k, v] of Object.entries(params as Record<string, unknown>)) if (typeof v === 'string') (tagged ??= {})[k] = tag(v);
    if (tagged) out.params = tagged;
  }
  if (typeof query === 'object' && query !== null) {
    const names = Object.keys(query);
    if (names.length === 0) return;
    const known = declared ? names.filter((n) => Object.hasOwn(declared.shape, n)) : [];
    if (known.length > 0) out.query = known;
    if (names.length > known.length) out.otherQuery = names.length - known.length;
  }
}

/** One line per request (sampled on the data plane when asked), without credentials or user data, and the request metrics. */
export const requestLogPlugin = globalPlugin<RequestLogOptions>(async (app, { metrics, dataSample = 1 }) => {
  // Per daemon run: the same user gets the same tag in one run's log, and a tag cannot be reversed by
  // hashing every phone number (the key never leaves this process).
  const logKey = randomBytes(32);
  // A bot's user sends several messages in a row: the keyed hash of a recent id is looked up, not computed again.
  const tags = new Map<string, string>();
  const tag = (v: string): string => {
    let t = tags.get(v);
    if (t === undefined) {
      t = createHmac('sha256', logKey).update(v, 'utf8').digest('base64url').slice(0, 16);
      if (tags.size >= TAG_CACHE) tags.clear();
      tags.set(v, t);
    }
    return t;
  };
  const every = Math.max(1, Math.floor(dataSample));
  let dataSeen = 0;

  // A callback hook, not an async one: it runs on every request, and a promise per request costs more than its work.
  app.addHook('onResponse', (req, reply, done) => {
    // Fastify builds routeOptions afresh on every read.
    const options = req.routeOptions;
    const route = options.url ?? 'unmatched';
    const ms = reply.elapsedTime;
    metrics.observe(req.method, route, reply.statusCode, ms / 1000);
    const api = options.config.api;
    // A bot appends on every message: its successful calls are the bulk of the log and say little each.
    const sampled = every > 1 && api?.auth === 'data' && reply.statusCode < 400;
    if (sampled && dataSeen++ % every !== 0) {
      done();
      return;
    }
    const line: Loggable & Record<string, unknown> = { method: req.method, route };
    loggableParts(line, req.params, req.query, api?.query, tag);
    line.status = reply.statusCode;
    line.ms = Math.round(ms * 10) / 10;
    line.remote = req.ip;
    if (sampled) line.sample = every;
    req.log.info(line, 'request');
    done();
  });
});
