import { ConfigError } from '../errors.js';

/** How long the daemon waits for a client, and how much it reads before the body (config `server.*`). */
export interface HttpLimits {
  /** Milliseconds from a request's first byte until all its headers are in; a slow-loris client gets 408. */
  headersTimeout: number;
  /** Milliseconds from a request's first byte until its whole body is in; 408 after that. */
  requestTimeout: number;
  /** Milliseconds a kept-alive socket may idle between requests before it is closed. */
  keepAliveTimeout: number;
  /** Milliseconds a new connection may stay silent before it is closed (no request of it is being answered). */
  connectionTimeout: number;
  /** Longest request target (path and query) in bytes; longer gets 414. */
  maxUrlLength: number;
  /** Largest request line plus headers in bytes; larger gets 431. */
  maxHeaderSize: number;
}

/**
 * Defaults: generous for a chatbot on the same host or LAN (a request of 1 MiB over a slow link takes
 * well under 30 s), short enough that a few hundred idle or trickling sockets go away within seconds.
 * The time an answer takes (a clear of a big store) is not limited: these clocks stop once the request is in.
 */
export const DEFAULT_HTTP_LIMITS: Readonly<HttpLimits> = {
  headersTimeout: 10_000,
  requestTimeout: 30_000,
  keepAliveTimeout: 5_000,
  connectionTimeout: 10_000,
  maxUrlLength: 8 * 1024,
  maxHeaderSize: 16 * 1024,
};

/** Merges `given` over the defaults and checks each value. */
export function resolveHttpLimits(given: Partial<Record<keyof HttpLimits, unknown>> = {}): HttpLimits {
  const out = { ...DEFAULT_HTTP_LIMITS };
  for (const key of Object.keys(DEFAULT_HTTP_LIMITS) as (keyof HttpLimits)[]) {
    const v = given[key];
    if (v === undefined || v === '') continue;
    const n = typeof v === 'number' ? v : Number(v);
    if (!Number.isInteger(n) || n < 1 || n > 3_600_000) throw new ConfigError('E_CONFIG', `server.${key} must be an integer from 1 to 3600000, got ${JSON.stringify(v)}`);
    out[key] = n;
  }
  // Node refuses a headers timeout longer than the request timeout.
  if (out.headersTimeout > out.requestTimeout) {
    throw new ConfigError('E_CONFIG', `server.headersTimeout (${out.headersTimeout}) must not be longer than server.requestTimeout (${out.requestTimeout})`);
  }
  return out;
}
