import { z } from 'zod';
import { RecordError } from './errors.js';

/** One chat turn. Fields beyond these are kept verbatim. */
export interface HistoryEntry {
  role: string;
  text: string;
  ts: string;
  meta?: Record<string, unknown>;
  [extra: string]: unknown;
}

/**
 * The per-user record, exactly as the seed's memory.json stores it.
 * Fields the model does not know are kept verbatim (the seed dropped them on reload).
 */
export interface MemoryRecord {
  user_id: string;
  session_token: string | null;
  name: string | null;
  gender: string | null;
  is_company: boolean | null;
  product: string | null;
  serial: string | null;
  address: string | null;
  summary_context: string[];
  history: HistoryEntry[];
  last_answer: string | null;
  flags: Record<string, unknown>;
  slots: Record<string, unknown>;
  created_at: string;
  updated_at: string;
  [extra: string]: unknown;
}

/** A full record as a caller may supply it: every known field optional, unknown fields kept. */
export type RecordInput = Partial<MemoryRecord> & Record<string, unknown>;

/** A top-level merge; `flags` and `slots` merge key by key (a `null` value removes the key). */
export type RecordPatch = Partial<Omit<MemoryRecord, 'user_id' | 'created_at'>> & Record<string, unknown>;

/** What a caller appends; `ts` defaults to now. */
export interface HistoryInput {
  role: string;
  text: string;
  ts?: string;
  meta?: Record<string, unknown>;
  [extra: string]: unknown;
}

export const DEFAULT_HISTORY_CAP = 50;
export const MAX_USER_ID_LENGTH = 256;

const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$/;
// eslint-disable-next-line no-control-regex -- control characters are exactly what we reject
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;

const isoUtc = z.string().regex(ISO_UTC, 'must be a UTC ISO timestamp ending in Z, e.g. 2025-11-20T01:02:07Z');
const nullableString = z.string().nullable();
const freeObject = z.record(z.string(), z.unknown());

const historySchema = z
  .object({ role: z.string().min(1), text: z.string(), ts: isoUtc, meta: freeObject.optional() })
  .loose();

const recordSchema = z
  .object({
    user_id: z.string(),
    session_token: nullableString,
    name: nullableString,
    gender: nullableString,
    is_company: z.boolean().nullable(),
    product: nullableString,
    serial: nullableString,
    address: nullableString,
    summary_context: z.array(z.string()),
    history: z.array(historySchema),
    last_answer: nullableString,
    flags: freeObject,
    slots: freeObject,
    created_at: isoUtc,
    updated_at: isoUtc,
  })
  .loose();

const patchSchema = recordSchema.omit({ user_id: true, created_at: true }).partial().loose();

/** Current time in the seed's format: UTC, second precision, `Z`. */
export function nowIso(date: Date = new Date()): string {
  return date.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/**
 * Throws `E_USER_ID` unless `id` is a non-empty string of at most 256 characters without control characters.
 * Quotes, spaces and non-ASCII letters are valid.
 */
export function validateUserId(id: unknown): string {
  if (typeof id !== 'string') throw new RecordError('E_USER_ID', `user id must be a string, got ${typeof id}`);
  if (id.length === 0) throw new RecordError('E_USER_ID', 'user id must not be empty');
  if (id.length > MAX_USER_ID_LENGTH) {
    throw new RecordError('E_USER_ID', `user id is ${id.length} characters long; the limit is ${MAX_USER_ID_LENGTH}`);
  }
  const bad = CONTROL.exec(id);
  if (bad) {
    const code = bad[0].charCodeAt(0).toString(16).padStart(4, '0');
    throw new RecordError('E_USER_ID', `user id contains the control character U+${code} at index ${bad.index}`);
  }
  // Lone surrogates cannot be encoded as UTF-8: they would not survive a round trip through any store.
  if (!id.isWellFormed()) throw new RecordError('E_USER_ID', 'user id contains an unpaired UTF-16 surrogate');
  return id;
}

function describeIssues(error: z.ZodError, what: string): string {
  const parts = error.issues.slice(0, 5).map((i) => `${i.path.length ? i.path.join('.') : '(root)'}: ${i.message}`);
  const more = error.issues.length > 5 ? ` (and ${error.issues.length - 5} more)` : '';
  return `invalid ${what}: ${parts.join('; ')}${more}`;
}

/** A fresh, empty record for `userId`. */
export function newRecord(userId: string, now: string = nowIso()): MemoryRecord {
  return {
    user_id: userId,
    session_token: null,
    name: null,
    gender: null,
    is_company: null,
    product: null,
    serial: null,
    address: null,
    summary_context: [],
    history: [],
    last_answer: null,
    flags: {},
    slots: {},
    created_at: now,
    updated_at: now,
  };
}

/**
 * Validates a full record for `userId`. Missing known fields get their empty defaults;
 * unknown fields are kept verbatim. A `user_id` that disagrees with the key is an error.
 */
export function parseRecord(userId: string, input: unknown, now: string = nowIso()): MemoryRecord {
  validateUserId(userId);
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new RecordError('E_RECORD', `record of user ${JSON.stringify(userId)} must be a JSON object`);
  }
  const raw = input as Record<string, unknown>;
  if (raw.user_id !== undefined && raw.user_id !== userId) {
    throw new RecordError(
      'E_RECORD',
      `record's user_id ${JSON.stringify(raw.user_id)} does not match its key ${JSON.stringify(userId)}`,
    );
  }
  const base = newRecord(userId, typeof raw.created_at === 'string' ? raw.created_at : now);
  const merged: Record<string, unknown> = { ...base, ...raw, user_id: userId };
  if (raw.updated_at === undefined) merged.updated_at = merged.created_at;
  const result = recordSchema.safeParse(merged);
  if (!result.success) throw new RecordError('E_RECORD', describeIssues(result.error, `record of user ${JSON.stringify(userId)}`));
  // Return the merged object, not zod's output: zod rebuilds objects and we want unknown fields byte-for-byte in place.
  return merged as MemoryRecord;
}

function validatePatch(patch: unknown): RecordPatch {
  if (typeof patch !== 'object' || patch === null || Array.isArray(patch)) {
    throw new RecordError('E_RECORD', 'patch must be a JSON object');
  }
  const p = patch as Record<string, unknown>;
  if ('user_id' in p) throw new RecordError('E_RECORD', 'patch cannot change user_id');
  if ('created_at' in p) throw new RecordError('E_RECORD', 'patch cannot change created_at');
  // flags/slots in a patch are partial maps where null deletes; validate their shape only.
  const { flags, slots, ...rest } = p;
  const result = patchSchema.safeParse(rest);
  if (!result.success) throw new RecordError('E_RECORD', describeIssues(result.error, 'patch'));
  for (const [name, value] of [['flags', flags], ['slots', slots]] as const) {
    if (value !== undefined && (typeof value !== 'object' || value === null || Array.isArray(value))) {
      throw new RecordError('E_RECORD', `invalid patch: ${name} must be an object`);
    }
  }
  return p as RecordPatch;
}

function mergeMap(target: Record<string, unknown>, changes: Record<string, unknown>): Record<string, unknown> {
  const out = { ...target };
  for (const [k, v] of Object.entries(changes)) {
    if (v === null) delete out[k];
    else out[k] = v;
  }
  return out;
}

/** Applies a validated patch: top-level merge, `flags`/`slots` key by key. Creates the record when missing. */
export function applyPatch(current: MemoryRecord | null, userId: string, patch: unknown, now: string = nowIso()): MemoryRecord {
  const p = validatePatch(patch);
  const base = current ?? newRecord(userId, now);
  const { flags, slots, ...rest } = p as Record<string, unknown>;
  const next: MemoryRecord = { ...base, ...rest, user_id: base.user_id, created_at: base.created_at, updated_at: now };
  if (flags) next.flags = mergeMap(base.flags, flags as Record<string, unknown>);
  if (slots) next.slots = mergeMap(base.slots, slots as Record<string, unknown>);
  if (typeof rest.updated_at === 'string') next.updated_at = rest.updated_at;
  return next;
}

/** Validates a history entry to append; `ts` defaults to `now`. */
export function parseHistoryInput(input: unknown, now: string = nowIso()): HistoryEntry {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new RecordError('E_RECORD', 'history entry must be a JSON object with role and text');
  }
  const entry = { ...(input as Record<string, unknown>) };
  if (entry.ts === undefined) entry.ts = now;
  const result = historySchema.safeParse(entry);
  if (!result.success) throw new RecordError('E_RECORD', describeIssues(result.error, 'history entry'));
  return entry as HistoryEntry;
}

/**
 * Appends to history, keeping only the newest `cap` entries, as the seed did.
 * A user message also becomes `last_answer`.
 */
export function applyAppend(
  current: MemoryRecord | null,
  userId: string,
  entry: HistoryEntry,
  cap: number = DEFAULT_HISTORY_CAP,
  now: string = nowIso(),
): MemoryRecord {
  const base = current ?? newRecord(userId, now);
  const history = [...base.history, entry];
  const capped = cap > 0 && history.length > cap ? history.slice(history.length - cap) : history;
  const next: MemoryRecord = { ...base, history: capped, updated_at: now };
  if (entry.role === 'user') next.last_answer = entry.text;
  return next;
}

/** Sets one flag (or slot) key. */
export function applySetKey(
  current: MemoryRecord | null,
  userId: string,
  field: 'flags' | 'slots',
  key: string,
  value: unknown,
  now: string = nowIso(),
): MemoryRecord {
  if (typeof key !== 'string' || key.length === 0) throw new RecordError('E_RECORD', `${field} key must be a non-empty string`);
  if (value === undefined) throw new RecordError('E_RECORD', `${field}.${key}: a value is required`);
  const base = current ?? newRecord(userId, now);
  return { ...base, [field]: { ...base[field], [key]: value }, updated_at: now };
}

/** Removes one flag; a missing flag is not an error. */
export function applyClearFlag(current: MemoryRecord | null, userId: string, key: string, now: string = nowIso()): MemoryRecord {
  const base = current ?? newRecord(userId, now);
  if (!(key in base.flags)) return base;
  const flags = { ...base.flags };
  delete flags[key];
  return { ...base, flags, updated_at: now };
}

/** Number of history entries, used by listings. */
export function messageCount(record: MemoryRecord): number {
  return record.history.length;
}
