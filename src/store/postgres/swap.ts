import { randomBytes } from 'node:crypto';
import type { PoolClient } from 'pg';
import { derivedName, quoteIdent } from './config.js';
import { wrapError } from './connection.js';
import { COLUMNS, type Sql } from './sql.js';

/** The names a whole-store swap works with. */
export interface SwapNames {
  /** Quoted schema. */
  schema: string;
  /** The users table's own name, unquoted. */
  table: string;
}

/**
 * How long the swap waits for the users table's ACCESS EXCLUSIVE lock, per try. Readers arriving
 * meanwhile queue behind the request, so this bounds their wait too; an open scan (a backup being
 * copied) holds the table for its whole run, and then the swap gives up and takes today's path.
 */
export const SWAP_LOCK_TIMEOUT_MS = 50;
/** Tries before the fallback: short readers (one query each) end within a try or two. */
export const SWAP_TRIES = 3;

/** SQLSTATE lock_not_available: the lock_timeout fired. */
const LOCK_NOT_AVAILABLE = '55P03';

/** A new table's qualified name beside the users table (`<table>_stage_<random>`). */
export function stageTableName(names: SwapNames): string {
  return `${names.schema}.${quoteIdent(derivedName(names.table, `stage_${randomBytes(6).toString('hex')}`), 'table')}`;
}

/**
 * The empty twin of the users table: same columns, collations, defaults (the `version` column's
 * `pg_current_xact_id()`) and indexes (primary key, version, trigram), under generated names the swap
 * renames to the live ones.
 */
export function createStageSql(sql: Sql, stage: string): string {
  return `CREATE TABLE ${stage} (LIKE ${sql.users} INCLUDING ALL)`;
}

/**
 * Pairs each index of `stage` with the index of the users table it copies (same columns, operator
 * classes, predicate, uniqueness), so the swap can give it the live name: a start's
 * `CREATE INDEX IF NOT EXISTS <name>` must find it, not build a second trigram index.
 */
const INDEX_PAIRS = `WITH n AS (
    SELECT c.relname, i.indkey::text AS k, i.indclass::text AS cl, COALESCE(pg_get_expr(i.indpred, i.indrelid), '') AS p,
      i.indisunique AS u, i.indisprimary AS pk
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = $1::regclass),
  o AS (
    SELECT c.relname, i.indkey::text AS k, i.indclass::text AS cl, COALESCE(pg_get_expr(i.indpred, i.indrelid), '') AS p,
      i.indisunique AS u, i.indisprimary AS pk
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = $2::regclass)
  SELECT n.relname AS "from", o.relname AS "to" FROM n JOIN o USING (k, cl, p, u, pk) ORDER BY n.relname, o.relname`;

/**
 * Makes `stage` the users table, in one transaction on the section's connection (writers of every
 * daemon wait on the section's advisory lock and touch no table meanwhile): the live table is locked
 * (ACCESS EXCLUSIVE, at most {@link SWAP_LOCK_TIMEOUT_MS} per try) and dropped, `stage` takes its name
 * and its indexes theirs, and the deleted-users log notes a whole-store change (change feeds started
 * before overflow). Metadata only: O(1) in rows. Other daemons resolve the name at each statement
 * (no named prepared statements), so their next query reads the new table. Returns false, changing
 * nothing, when the lock could not be had (a long reader holds the table): the caller takes the
 * row-by-row path.
 */
export async function swapTable(client: PoolClient, sql: Sql, names: SwapNames, stage: string, create: boolean, what: 'clear' | 'restore'): Promise<boolean> {
  for (let attempt = 0; attempt < SWAP_TRIES; attempt++) {
    try {
      // Few round trips: each one is time every writer waits.
      await client.query(`BEGIN; SET LOCAL lock_timeout = '${SWAP_LOCK_TIMEOUT_MS}ms'${create ? `; ${createStageSql(sql, stage)}` : ''}`);
      const pairs = (await client.query<{ from: string; to: string }>(INDEX_PAIRS, [stage, sql.users])).rows;
      const renames: string[] = [];
      const used = new Set<string>();
      for (const { from, to } of pairs) {
        if (used.has(from) || used.has(`\0${to}`)) continue;
        used.add(from).add(`\0${to}`);
        renames.push(`ALTER INDEX ${names.schema}.${quoteIdent(from, 'index')} RENAME TO ${quoteIdent(to, 'index')}`);
      }
      // The pairs are read before the lock: only a start's CREATE INDEX IF NOT EXISTS changes the indexes,
      // and an index it adds meanwhile is dropped with the table and built again at the next start.
      await client.query(
        [
          `LOCK TABLE ${sql.users} IN ACCESS EXCLUSIVE MODE`,
          `DROP TABLE ${sql.users}`,
          `ALTER TABLE ${stage} RENAME TO ${quoteIdent(names.table, 'table')}`,
          ...renames,
          sql.markAll,
          sql.pruneDeleted,
          'COMMIT',
        ].join('; '),
      );
      return true;
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      if ((err as { code?: unknown }).code !== LOCK_NOT_AVAILABLE) throw wrapError('E_STORE_WRITE', what, err);
    }
  }
  return false;
}

/** The row-by-row fallback of a staged replace: the live table's rows replaced by the stage's, in one transaction. */
export function copyFromStageSql(sql: Sql, stage: string): string {
  return `${sql.clear}; INSERT INTO ${sql.users} (${COLUMNS}) SELECT ${COLUMNS} FROM ${stage}`;
}
