import { randomBytes } from 'node:crypto';
import pg from 'pg';
import type { Pool, PoolClient } from 'pg';
import { VERSION_TABLE, derivedName, quoteIdent } from './config.js';
import { Lease, wrapError } from './connection.js';
import { lockStage, tryStageXactLock, unlockStage, type LockKeys } from './locks.js';
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
/**
 * SQLSTATE insufficient_privilege: the daemon's role may write the table's rows but not replace the
 * table (it is not its owner, or may not create in the schema). The row path needs only the former.
 */
const INSUFFICIENT_PRIVILEGE = '42501';

/** Hex digits of the random part of a stage's or a set-aside table's name. */
const RANDOM_BYTES = 6;

/**
 * The unquoted name of a new table beside the users table: `<table>_stage_<random>` for a twin being
 * built, `<table>_old_<random>` for the table a swap set aside (hashed past 63 bytes, see derivedName).
 */
export function sideTableName(table: string, kind: 'stage' | 'old'): string {
  return derivedName(table, `${kind}_${randomBytes(RANDOM_BYTES).toString('hex')}`);
}

/** The qualified name of `name`, a table beside the users table. */
export function qualify(names: SwapNames, name: string): string {
  return `${names.schema}.${quoteIdent(name, 'table')}`;
}

/** A new stage's qualified name. */
export function stageTableName(names: SwapNames): string {
  return qualify(names, sideTableName(names.table, 'stage'));
}

/**
 * True when `name` is one of this store's side tables (a stage or a set-aside table), as
 * {@link sideTableName} makes them: the same name around exactly 12 lower-case hex digits.
 */
export function isSideTable(table: string, name: string): boolean {
  return (['stage', 'old'] as const).some((kind) => {
    const zeros = '0'.repeat(RANDOM_BYTES * 2);
    const model = derivedName(table, `${kind}_${zeros}`);
    const at = model.lastIndexOf(`${kind}_${zeros}`) + kind.length + 1;
    return (
      name.length === model.length &&
      name.startsWith(model.slice(0, at)) &&
      name.endsWith(model.slice(at + zeros.length)) &&
      /^[0-9a-f]+$/.test(name.slice(at, at + zeros.length))
    );
  });
}

/**
 * The empty twin of the users table: same columns, collations, defaults (the `version` column's
 * `pg_current_xact_id()`), constraints and indexes (primary key, version, trigram), under generated
 * names the swap renames to the live ones. Not copied by `LIKE`: owner, privileges, comment and
 * storage options, which the swap copies ({@link CARRY}); triggers, rules, policies and what depends
 * on the table, for which the swap is refused ({@link CARRY}'s reason).
 */
export function createStageSql(sql: Sql, stage: string): string {
  return `CREATE TABLE ${stage} (LIKE ${sql.users} INCLUDING ALL)`;
}

/**
 * Pairs each index of `stage` with the index of the users table it copies (same columns, operator
 * classes, predicate, uniqueness), so the swap can give it the live name: a start's
 * `CREATE INDEX IF NOT EXISTS <name>` must find it, not build a second trigram index. Rows without
 * `from` list every index of the users table, all of which the swap renames aside first.
 */
const INDEX_PAIRS = `WITH n AS (
    SELECT c.relname, i.indkey::text AS k, i.indclass::text AS cl, COALESCE(pg_get_expr(i.indpred, i.indrelid), '') AS p,
      i.indisunique AS u, i.indisprimary AS pk
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = $1::regclass),
  o AS (
    SELECT c.relname, i.indkey::text AS k, i.indclass::text AS cl, COALESCE(pg_get_expr(i.indpred, i.indrelid), '') AS p,
      i.indisunique AS u, i.indisprimary AS pk
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = $2::regclass)
  SELECT n.relname AS "from", o.relname AS "to" FROM n JOIN o USING (k, cl, p, u, pk)
  UNION ALL SELECT NULL, o.relname FROM o
  ORDER BY 1, 2`;

/** A string as an SQL literal (standard_conforming_strings, on since PostgreSQL 9.1). */
function literal(text: string): string {
  return `'${text.replace(/'/g, "''")}'`;
}

/**
 * Read under the swap's lock: why the users table cannot be swapped (null: it can), and the statements
 * that give the stage what `LIKE` does not copy. Refused, because the swap would silently lose them or
 * leave them on the set-aside table: objects that depend on the table or its row type (views, foreign
 * keys of other tables, functions, columns of that type; `DROP` refuses them with 2BP01), its own
 * foreign keys, triggers, rules, row-level security, a publication, column privileges. Copied: the
 * owner, the table's privileges (as grants by the current role, which owns the stage), its comment and
 * storage options.
 */
function carrySql(live: string, stage: string): string {
  const o = literal(live);
  return `SELECT
    CASE
      WHEN EXISTS (SELECT 1 FROM pg_depend d WHERE d.deptype = 'n' AND ((d.refclassid = 'pg_class'::regclass AND d.refobjid = t.oid)
          OR (d.refclassid = 'pg_type'::regclass AND d.refobjid = t.reltype)))
        THEN 'other objects depend on it (a view, a foreign key, a function or a column of its row type)'
      WHEN EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = t.oid AND contype = 'f') THEN 'it has foreign keys'
      WHEN EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = t.oid AND NOT tgisinternal) THEN 'it has triggers'
      WHEN EXISTS (SELECT 1 FROM pg_rewrite WHERE ev_class = t.oid) THEN 'it has rules'
      WHEN t.relrowsecurity OR EXISTS (SELECT 1 FROM pg_policy WHERE polrelid = t.oid) THEN 'it has row-level security'
      WHEN EXISTS (SELECT 1 FROM pg_publication_rel WHERE prrelid = t.oid) THEN 'it is in a publication'
      WHEN EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = t.oid AND attacl IS NOT NULL) THEN 'it has column privileges'
    END AS reason,
    ARRAY(
      SELECT format('ALTER TABLE %s OWNER TO %s', ${literal(stage)}, t.relowner::regrole) WHERE t.relowner <> s.relowner
      UNION ALL
      SELECT x FROM (
        SELECT format('REVOKE ALL ON %s FROM PUBLIC', ${literal(stage)}) AS x, 0 AS k
        UNION ALL SELECT format('REVOKE ALL ON %s FROM %s', ${literal(stage)}, g::regrole), 1 FROM (
          SELECT a.grantee AS g FROM aclexplode(COALESCE(s.relacl, acldefault('r', s.relowner))) a WHERE a.grantee <> 0
          UNION SELECT t.relowner) r
        UNION ALL SELECT format('GRANT %s ON %s TO %s%s', string_agg(a.privilege_type, ', ' ORDER BY a.privilege_type), ${literal(stage)},
            CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END, CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END), 2
          FROM aclexplode(COALESCE(t.relacl, acldefault('r', t.relowner))) a GROUP BY a.grantee, a.is_grantable
        ORDER BY k, x) p
      WHERE COALESCE(t.relacl, acldefault('r', t.relowner))::text IS DISTINCT FROM COALESCE(s.relacl, acldefault('r', t.relowner))::text
      UNION ALL
      SELECT format('COMMENT ON TABLE %s IS %L', ${literal(stage)}, obj_description(t.oid, 'pg_class')) WHERE obj_description(t.oid, 'pg_class') IS NOT NULL
      UNION ALL
      SELECT format('ALTER TABLE %s SET (%s)', ${literal(stage)}, array_to_string(t.reloptions, ', ')) WHERE t.reloptions IS NOT NULL
    ) AS carry
    FROM pg_class t, pg_class s WHERE t.oid = ${o}::regclass AND s.oid = ${literal(stage)}::regclass`;
}

/** What a swap did: the set-aside table to drop once the section is over, or why the caller must take the row path. */
export type SwapResult = { swapped: true; old: string } | { swapped: false; why: string };

/**
 * Makes `stage` the users table, in one transaction on the section's connection (writers of every
 * daemon wait on the section's advisory lock and touch no table meanwhile): the live table is locked
 * (ACCESS EXCLUSIVE, at most {@link SWAP_LOCK_TIMEOUT_MS} per try), checked and renamed aside with its
 * indexes (`<table>_old_<random>`), `stage` is given what `LIKE` did not copy, takes the table's name and
 * its indexes theirs, and the deleted-users log notes a whole-store change (change feeds started
 * before overflow). Metadata only: O(1) in rows; the set-aside table is the caller's to drop after the
 * section (its rows are in the operation's verified backup; one left by a killed process is dropped by
 * {@link dropSideTables}). Other daemons resolve the name at each statement (no named prepared
 * statements), so their next query reads the new table. Changes nothing and says why when the lock
 * could not be had (a long reader holds the table), the table has what a swap would lose, or the role
 * may not replace it: the caller then takes the row-by-row path.
 */
export async function swapTable(client: PoolClient, sql: Sql, names: SwapNames, stage: string, create: boolean, what: 'clear' | 'restore'): Promise<SwapResult> {
  const old = sideTableName(names.table, 'old');
  for (let attempt = 0; attempt < SWAP_TRIES; attempt++) {
    try {
      // Few round trips: each one is time every writer waits.
      await client.query(`BEGIN; SET LOCAL lock_timeout = '${SWAP_LOCK_TIMEOUT_MS}ms'${create ? `; ${createStageSql(sql, stage)}` : ''}`);
      const rows = (await client.query<{ from: string | null; to: string }>(INDEX_PAIRS, [stage, sql.users])).rows;
      // Every live index is renamed aside first, so its name is free for the stage's and the set-aside
      // table keeps none a start would take for the live one.
      const renames: string[] = rows
        .filter((r) => r.from === null)
        .map(({ to }, i) => `ALTER INDEX ${names.schema}.${quoteIdent(to, 'index')} RENAME TO ${quoteIdent(derivedName(old, `i${i}`), 'index')}`);
      const used = new Set<string>();
      for (const { from, to } of rows) {
        if (from === null || used.has(from) || used.has(`\0${to}`)) continue;
        used.add(from).add(`\0${to}`);
        renames.push(`ALTER INDEX ${names.schema}.${quoteIdent(from, 'index')} RENAME TO ${quoteIdent(to, 'index')}`);
      }
      // The pairs are read before the lock: only a start's CREATE INDEX IF NOT EXISTS changes the indexes,
      // and an index it adds meanwhile goes aside with the table and is built again at the next start.
      // Two statements in one round trip: pg resolves such a query to one result per statement, though
      // its types say one result.
      const results = (await client.query(`LOCK TABLE ${sql.users} IN ACCESS EXCLUSIVE MODE; ${carrySql(sql.users, stage)}`)) as unknown as { rows: { reason: string | null; carry: string[] }[] }[];
      // One row always: both tables exist (the casts to regclass would have failed otherwise).
      const check = results[1]?.rows[0] ?? { reason: 'the users table could not be read', carry: [] };
      if (check.reason !== null) {
        await client.query('ROLLBACK');
        return { swapped: false, why: check.reason };
      }
      await client.query(
        [
          ...check.carry,
          `ALTER TABLE ${sql.users} RENAME TO ${quoteIdent(old, 'table')}`,
          ...renames,
          `ALTER TABLE ${stage} RENAME TO ${quoteIdent(names.table, 'table')}`,
          sql.markAll,
          sql.pruneDeleted,
          'COMMIT',
        ].join('; '),
      );
      return { swapped: true, old: qualify(names, old) };
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      const code = (err as { code?: unknown }).code;
      if (code === INSUFFICIENT_PRIVILEGE) return { swapped: false, why: `this role may not replace the table (${err instanceof Error ? err.message : String(err)})` };
      if (code !== LOCK_NOT_AVAILABLE) throw wrapError('E_STORE_WRITE', what, err);
    }
  }
  return { swapped: false, why: `another session held the table for ${SWAP_TRIES} tries of ${SWAP_LOCK_TIMEOUT_MS} ms` };
}

/** The row-by-row fallback of a staged replace: the live table's rows replaced by the stage's, in one transaction. */
export function copyFromStageSql(sql: Sql, stage: string): string {
  return `${sql.clear}; INSERT INTO ${sql.users} (${COLUMNS}) SELECT ${COLUMNS} FROM ${stage}`;
}

/**
 * Marks the stage `name` (unquoted) as this daemon's while it lives: its advisory key, taken before
 * the table is created and held for the session of a connection of its own. Not a pooled connection:
 * held through a clear's whole backup copy, it must not take the one the section's scan needs, and a
 * section's unlock-all must not free it. A killed daemon's connection dies with it and frees the key,
 * so {@link dropSideTables} knows the stage is nobody's. Returns the release (unlocks and disconnects,
 * once; never throws).
 */
export async function keepStage(pool: Pool, keys: LockKeys, name: string): Promise<() => Promise<void>> {
  // The pool's own client class and settings (a caller's pool may bring either).
  const Client = (pool as unknown as { Client?: typeof pg.Client }).Client ?? pg.Client;
  const client = new Client(pool.options);
  // A dropped connection only frees the key; the swap or the drop that follows reports any real problem.
  client.on('error', () => undefined);
  try {
    await client.connect();
    await lockStage(client, keys, name);
  } catch (err) {
    await client.end().catch(() => undefined);
    throw err;
  }
  let done = false;
  return async () => {
    if (done) return;
    done = true;
    // Unlocked before disconnecting: a disconnect frees the key only when the server notices.
    await unlockStage(client, keys, name).catch(() => undefined);
    await client.end().catch(() => undefined);
  };
}

/**
 * Drops this store's side tables that no live daemon holds: stages left by a daemon killed while
 * building or holding one (its key died with its session), and tables a swap set aside whose drop did
 * not happen (the process died after the section, or the drop failed). A stage another daemon is
 * building right now is skipped: its key is held. The users table of any store sharing the schema
 * (listed in the version table) is never a candidate.
 */
export async function dropSideTables(pool: Pool, names: SwapNames, keys: LockKeys): Promise<void> {
  const { rows } = await pool.query<{ t: string }>(
    `SELECT c.relname AS t FROM pg_class c WHERE c.relnamespace = $1::regnamespace AND c.relkind = 'r'
       AND c.relname NOT IN (SELECT table_name FROM ${names.schema}.${quoteIdent(VERSION_TABLE, 'table')}) ORDER BY 1`,
    [names.schema],
  );
  for (const { t } of rows) {
    if (!isSideTable(names.table, t)) continue;
    const lease = new Lease(await pool.connect());
    try {
      // The key is held until the drop commits.
      await lease.client.query('BEGIN');
      if (await tryStageXactLock(lease.client, keys, t)) await lease.client.query(`DROP TABLE IF EXISTS ${qualify(names, t)}`);
      await lease.client.query('COMMIT');
    } catch (err) {
      await lease.client.query('ROLLBACK').catch((e: unknown) => lease.poison(e));
      throw err;
    } finally {
      lease.release();
    }
  }
}
