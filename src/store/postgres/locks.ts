import { createHash } from 'node:crypto';
import type { ClientBase, PoolClient } from 'pg';
import type { ExclusiveScope } from '../types.js';

/*
 * Advisory lock keys use the two-int4 form, whose key space is separate from the one-bigint form,
 * and a chatmem-specific first int so other applications' advisory locks do not collide with ours.
 * The second int hashes the qualified table name, so two stores in one database never block each other.
 */
const NS_CTRL = 0x63686d63; // 'chmc': store-wide keys
const NS_USER = 0x63686d75; // 'chmu': one key per user
const NS_STAGE = 0x63686d73; // 'chms': one key per table staged beside the users table
/** Serialises migrations of every chatmem store in the database (schema creation races otherwise). */
const MIGRATE_KEY = 0;
/**
 * A scoped section takes one lock per user. Advisory locks live in the shared lock table
 * (max_locks_per_transaction × max_connections slots, 6400 by default), so a larger scope takes the
 * store-wide key instead: correct, only less concurrent.
 */
const MAX_SCOPED_LOCKS = 256;

export function hashKey(text: string): number {
  return createHash('sha256').update(text).digest().readInt32BE(0);
}

/** The advisory lock keys of one store, from its lock scope (`schema\0table`). */
export class LockKeys {
  /** Store-wide: hot-path writes hold it SHARED, a section of scope `all` EXCLUSIVE. */
  readonly global: number;
  /** Held by every exclusive section, so guarded operations on different daemons never interleave. */
  readonly ops: number;
  /** Held by the leader among the daemons sharing the store. */
  readonly leader: number;
  private readonly userPrefix: string;
  private readonly stagePrefix: string;

  constructor(lockScope: string) {
    this.global = hashKey(`${lockScope}\0global`);
    this.ops = hashKey(`${lockScope}\0ops`);
    this.leader = hashKey(`${lockScope}\0leader`);
    this.userPrefix = `${lockScope}\0user\0`;
    this.stagePrefix = `${lockScope}\0stage\0`;
  }

  user(id: string): number {
    return hashKey(this.userPrefix + id);
  }

  /** Held by the daemon building or holding the stage table `name` (unquoted), as long as it lives. */
  stage(name: string): number {
    return hashKey(this.stagePrefix + name);
  }
}

/** The statements taking a hot-path write's locks, transaction-scoped: the store-wide key SHARED, the user's EXCLUSIVE. */
export function writeLocksSql(keys: LockKeys, id: string): string {
  // The keys are integers computed here, so inlining them is safe and saves round trips.
  return `SELECT pg_advisory_xact_lock_shared(${NS_CTRL}, ${keys.global}); SELECT pg_advisory_xact_lock(${NS_USER}, ${keys.user(id)})`;
}

/**
 * The locks of a batch of hot-path writes (one transaction for several users): the store-wide key
 * SHARED, then each user's key EXCLUSIVE in ascending order, as sections take them, so two batches, or a
 * batch and a section, never wait on each other in a cycle.
 */
export function batchLocksSql(keys: LockKeys, ids: readonly string[]): string {
  const userKeys = [...new Set(ids.map((id) => keys.user(id)))].sort((a, b) => a - b);
  // unnest yields in array order and the function runs once per row, in that order (lockSection relies on it too).
  return `SELECT pg_advisory_xact_lock_shared(${NS_CTRL}, ${keys.global}); SELECT pg_advisory_xact_lock(${NS_USER}, k) FROM unnest(ARRAY[${userKeys.join(',')}]::int4[]) AS k`;
}

/**
 * Takes a section's locks, session-scoped on `client`: the operations key, then the store-wide key
 * (scope `all`, or too many users) or each user's key in ascending order. Waits without a timeout.
 */
export async function lockSection(client: PoolClient, keys: LockKeys, scope: ExclusiveScope): Promise<void> {
  await client.query('SELECT pg_advisory_lock($1, $2)', [NS_CTRL, keys.ops]);
  const userKeys = scope === 'all' ? [] : [...new Set(scope.ids.map((id) => keys.user(id)))].sort((a, b) => a - b);
  if (scope === 'all' || userKeys.length > MAX_SCOPED_LOCKS) {
    await client.query('SELECT pg_advisory_lock($1, $2)', [NS_CTRL, keys.global]);
  } else {
    await client.query('SELECT pg_advisory_lock($1, k) FROM unnest($2::int4[]) AS k', [NS_USER, userKeys]);
  }
}

/** Releases every session-scoped advisory lock `client` holds. */
export async function unlockAll(client: PoolClient): Promise<void> {
  await client.query('SELECT pg_advisory_unlock_all()');
}

/** Tries, without waiting, to take the leader key on `client` (session-scoped); true when it did. */
export async function tryLeaderLock(client: PoolClient, keys: LockKeys): Promise<boolean> {
  const { rows } = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1, $2) AS ok', [NS_CTRL, keys.leader]);
  return Boolean(rows[0]?.ok);
}

export async function unlockLeader(client: PoolClient, keys: LockKeys): Promise<void> {
  await client.query('SELECT pg_advisory_unlock($1, $2)', [NS_CTRL, keys.leader]);
}

/** Takes the migration key for the current transaction. */
export async function lockMigrations(client: PoolClient): Promise<void> {
  await client.query('SELECT pg_advisory_xact_lock($1, $2)', [NS_CTRL, MIGRATE_KEY]);
}

/** Takes the key of the stage table `name` for `client`'s session; waits (a key is only ever taken for a new random name). */
export async function lockStage(client: ClientBase, keys: LockKeys, name: string): Promise<void> {
  await client.query('SELECT pg_advisory_lock($1, $2)', [NS_STAGE, keys.stage(name)]);
}

export async function unlockStage(client: ClientBase, keys: LockKeys, name: string): Promise<void> {
  await client.query('SELECT pg_advisory_unlock($1, $2)', [NS_STAGE, keys.stage(name)]);
}

/** Tries, without waiting, to take the key of the side table `name` for the current transaction; true when no live daemon holds it. */
export async function tryStageXactLock(client: ClientBase, keys: LockKeys, name: string): Promise<boolean> {
  const { rows } = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_xact_lock($1, $2) AS ok', [NS_STAGE, keys.stage(name)]);
  return Boolean(rows[0]?.ok);
}
