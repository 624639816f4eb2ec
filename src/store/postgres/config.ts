import { createHash } from 'node:crypto';
import type { Pool } from 'pg';
import { StoreError } from '../../errors.js';
import { redactUrl } from '../url.js';

/** How to reach the database: a URL (the driver owns its pool) or a pool the caller owns. */
export interface PostgresConnectOptions {
  /** `postgres://user:password@host:port/db`; the driver creates a pool and ends it in `close()`. */
  connectionString?: string;
  /**
   * A pool owned by the caller (kysely style); `close()` leaves it open. As pg requires, the caller
   * listens for the pool's 'error' events.
   */
  pool?: Pool;
  /**
   * Schema holding the tables; created if missing. Default: the connection's current schema, which
   * is `public` unless the URL sets a search_path (`?options=-c%20search_path%3Dname`).
   */
  schema?: string;
  /** Name of the users table. Default `chatmem_users`. */
  table?: string;
}

const DEFAULT_TABLE = 'chatmem_users';
/** One row per users table, so several stores can share a schema without sharing a version. */
export const VERSION_TABLE = 'chatmem_schema';

export function quoteIdent(name: string, what: string): string {
  if (name.length === 0 || name.includes('\0') || Buffer.byteLength(name) > 63) {
    // PostgreSQL silently truncates longer identifiers, which could make two names refer to one table.
    throw new StoreError('E_STORE_CONFIG', `invalid PostgreSQL ${what} name ${JSON.stringify(name)}: 1 to 63 bytes, no NUL`);
  }
  return `"${name.replace(/"/g, '""')}"`;
}

/** A name derived from the users table's, hashed when it would pass PostgreSQL's 63-byte limit. */
export function derivedName(table: string, suffix: string): string {
  const name = `${table}_${suffix}`;
  return Buffer.byteLength(name) <= 63 ? name : `chatmem_${suffix}_${createHash('sha256').update(table).digest().readUInt32BE(0)}`;
}

export function tableNames(schema: string, table: string): { schema: string; users: string; versions: string; deleted: string } {
  const qs = quoteIdent(schema, 'schema');
  return {
    schema: qs,
    users: `${qs}.${quoteIdent(table, 'table')}`,
    versions: `${qs}.${quoteIdent(VERSION_TABLE, 'table')}`,
    deleted: `${qs}.${quoteIdent(derivedName(table, 'deleted'), 'table')}`,
  };
}

/**
 * Checks the options before anything connects. Returns the users table's name and the store's URL as
 * shown in messages and logs: without its password.
 */
export function checkOptions(opts: PostgresConnectOptions): { table: string; url: string } {
  if (opts.pool && opts.connectionString) {
    throw new StoreError('E_STORE_CONFIG', 'pass either a PostgreSQL connection string or a pool, not both');
  }
  if (!opts.pool && !opts.connectionString) {
    throw new StoreError('E_STORE_CONFIG', 'a PostgreSQL connection string or pool is required');
  }
  const table = opts.table ?? DEFAULT_TABLE;
  quoteIdent(table, 'table');
  if (opts.schema !== undefined) quoteIdent(opts.schema, 'schema');
  if (table === VERSION_TABLE) throw new StoreError('E_STORE_CONFIG', `the table cannot be named ${VERSION_TABLE}`);
  const url = opts.connectionString ? redactUrl(opts.connectionString) : 'postgres://(pool)';
  return { table, url };
}
