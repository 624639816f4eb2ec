import pg from 'pg';
import type { Pool, PoolClient } from 'pg';
import { StoreError, isChatmemError } from '../../errors.js';
import { redactSecrets, redactUrl } from '../url.js';

/** The pool of a driver opened from a URL; the driver ends it in `close()`. */
export function createPool(connectionString: string | undefined): Pool {
  const pool = new pg.Pool({
    connectionString,
    // Without a timeout an unreachable (blackholed) server hangs the start forever.
    connectionTimeoutMillis: 10_000,
    // Sections hold a connection idle for a long time; keepalive notices a dead peer so its locks are freed.
    keepAlive: true,
    application_name: 'chatmem',
  });
  // An idle connection the server dropped is discarded by the pool; the next checkout reconnects.
  // Without a listener the 'error' event would crash the daemon.
  pool.on('error', () => undefined);
  return pool;
}

/** Keeps chatmem errors (and errors thrown by caller code) as they are; wraps database errors. */
export function wrapError(code: string, what: string, err: unknown): Error {
  if (isChatmemError(err)) return err;
  const message = redactSecrets(err instanceof Error ? err.message : String(err));
  return new StoreError(code, `PostgreSQL ${what} failed: ${message}`, { cause: err });
}

/** The error of a failed start, as `E_STORE_OPEN` naming `url` (already redacted); chatmem errors pass through. */
export function openError(err: unknown, url: string, connectionString: string | undefined): Error {
  if (isChatmemError(err)) return err;
  // A driver or URL-parse error may quote the connection string; the cause is kept, scrubbed.
  if (!(err instanceof Error)) {
    // Something thrown that is no Error (pg rejects with Errors): its text, scrubbed, stands for it.
    const text = redactSecrets(String(err), connectionString);
    return new StoreError('E_STORE_OPEN', `cannot open PostgreSQL store ${url}: ${text}`, { cause: text });
  }
  err.message = redactSecrets(err.message, connectionString);
  if (err.stack) err.stack = redactSecrets(err.stack, connectionString);
  if ('input' in err && typeof err.input === 'string') err.input = redactUrl(err.input);
  return new StoreError('E_STORE_OPEN', `cannot open PostgreSQL store ${url}: ${err.message}`, { cause: err });
}

/**
 * A client checked out of the pool. pg-pool removes its error listener from checked-out clients, so
 * a connection dropped between two queries would crash the process; the lease listens instead and
 * destroys such a client on release rather than handing it back to the pool.
 */
export class Lease {
  private error: Error | undefined;
  private readonly onError = (err: Error): void => {
    this.error = err;
  };

  constructor(readonly client: PoolClient) {
    client.on('error', this.onError);
  }

  /** Marks the connection unusable (e.g. a failed ROLLBACK left it in an unknown state). */
  poison(err: unknown): void {
    this.error ??= err instanceof Error ? err : new Error(String(err));
  }

  release(): void {
    this.client.removeListener('error', this.onError);
    this.client.release(this.error);
  }
}

/** Runs a transaction on `client`; errors from `body` that are not database errors pass through unchanged. */
export async function inTransaction<T>(client: PoolClient, what: string, body: () => Promise<T>): Promise<T> {
  try {
    await client.query('BEGIN');
    const result = await body();
    await client.query('COMMIT');
    return result;
  } catch (err) {
    // A failed ROLLBACK means a broken connection: the section's unlock then fails too and destroys it.
    await client.query('ROLLBACK').catch(() => undefined);
    throw wrapError('E_STORE_WRITE', what, err);
  }
}
