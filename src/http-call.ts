/**
 * The HTTP calls of the typed clients (the bot's ChatmemClient and the admin's RemoteAdmin): the global
 * `fetch`, bearer token, timeout, and the daemon's error shape turned into a {@link RemoteError}.
 */
import { ChatmemError } from './errors.js';

/**
 * An error answered by the daemon (its `code`, e.g. `E_RECORD`, and HTTP `status`), or a transport
 * failure: `E_UNREACHABLE` / `E_TIMEOUT` with status 0.
 */
export class RemoteError extends ChatmemError {
  readonly status: number;

  constructor(code: string, message: string, status: number, options?: { cause?: unknown }) {
    super(code, message, options);
    this.status = status;
  }
}

export type FetchFn = typeof fetch;

export interface Transport {
  baseUrl: string;
  token: string | null;
  fetch: FetchFn;
  timeoutMs: number;
  /** Sent with every request (X-Chatmem-Os-User). */
  headers?: Record<string, string>;
}

export type QueryValue = string | number | boolean | string[] | null | undefined;

export function queryString(query: Record<string, QueryValue>): string {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    if (v === undefined || v === null) continue;
    if (Array.isArray(v)) for (const x of v) params.append(k, x);
    else params.append(k, String(v));
  }
  const s = params.toString();
  return s ? `?${s}` : '';
}

export const seg = (s: string): string => encodeURIComponent(s);

export async function call<T>(t: Transport, method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { accept: 'application/json', ...t.headers };
  if (t.token) headers.authorization = `Bearer ${t.token}`;
  // Only send a content type with a body: the daemon refuses an empty JSON body.
  if (body !== undefined) headers['content-type'] = 'application/json';
  const url = t.baseUrl.replace(/\/+$/, '') + path;
  let res: Response;
  try {
    res = await t.fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: t.timeoutMs > 0 ? AbortSignal.timeout(t.timeoutMs) : undefined,
    });
  } catch (err) {
    const name = err instanceof Error ? err.name : '';
    if (name === 'TimeoutError' || name === 'AbortError') {
      throw new RemoteError('E_TIMEOUT', `${method} ${url}: no answer within ${t.timeoutMs} ms`, 0, { cause: err });
    }
    const cause = err instanceof Error && err.cause instanceof Error ? `: ${err.cause.message}` : '';
    throw new RemoteError('E_UNREACHABLE', `${method} ${url}: cannot reach the chatmem daemon${cause}`, 0, { cause: err });
  }
  const text = await res.text();
  let parsed: unknown = undefined;
  if (text) {
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = undefined;
    }
  }
  if (!res.ok) {
    const e = (parsed as { error?: { code?: unknown; message?: unknown } } | undefined)?.error;
    const code = typeof e?.code === 'string' ? e.code : `E_HTTP_${res.status}`;
    const message = typeof e?.message === 'string' ? e.message : `${method} ${path}: HTTP ${res.status} ${res.statusText}`;
    throw new RemoteError(code, message, res.status);
  }
  if (parsed === undefined && text) throw new RemoteError('E_BAD_RESPONSE', `${method} ${path}: the answer is not JSON`, res.status);
  return parsed as T;
}

/** Resolves to null instead of throwing when the user does not exist. */
export async function orNull<T>(p: Promise<T>): Promise<T | null> {
  try {
    return await p;
  } catch (err) {
    if (err instanceof RemoteError && err.code === 'E_UNKNOWN_USER') return null;
    throw err;
  }
}
