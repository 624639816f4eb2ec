import { randomBytes, randomFillSync } from 'node:crypto';
import { z } from 'zod';
import { RecordError } from './errors.js';

/** One chat turn. Fields beyond these are kept verbatim. */
export interface HistoryEntry {
  role: string;
  text: string;
  ts: string;
  /** Stable id: the client's (e.g. the WhatsApp message id), or one the server assigned. Entries from old files may lack it. */
  id?: string;
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
  /** A client-supplied id makes a repeated append of it a no-op; absent, the server assigns one. */
  id?: string;
  meta?: Record<string, unknown>;
  [extra: string]: unknown;
}

export const DEFAULT_HISTORY_CAP = 50;
export const MAX_USER_ID_LENGTH = 256;

/**
 * What a write may store (README, "Record limits"). They apply to new writes (API, CLI, import);
 * records already stored or in backups are read, backed up and restored whatever their shape.
 */
export const RECORD_LIMITS = Object.freeze({
  /** Objects and arrays nested inside each other, counting the record itself as level 1. */
  maxDepth: 64,
  /** Object keys plus array elements in one written value; also the most keys `flags` or `slots` may hold. */
  maxKeys: 10_000,
  /** UTF-8 bytes of one string (object keys included). */
  maxStringBytes: 64 * 1024,
});

const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$/;
// eslint-disable-next-line no-control-regex -- control characters are exactly what we reject
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;

const isoUtc = z.string().regex(ISO_UTC, 'must be a UTC ISO timestamp ending in Z, e.g. 2025-11-20T01:02:07Z');
const nullableString = z.string().nullable();
const freeObject = z.record(z.string(), z.unknown());

const historySchema = z
  .object({ role: z.string().min(1), text: z.string(), ts: isoUtc, id: z.string().min(1).max(256).optional(), meta: freeObject.optional() })
  .loose();
/** Exported for tests: the schema {@link isHistoryEntry} must agree with. */
export const historyEntrySchema: z.ZodType = historySchema;

/**
 * True exactly when `historyEntrySchema` accepts `entry`, without zod: parsing a fresh object through zod
 * took about 4 µs of an append's CPU, this takes a tenth of that. zod still runs on a refusal, for its
 * message. test/record.property.test.ts compares the two on arbitrary values.
 */
export function isHistoryEntry(entry: unknown): boolean {
  if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) return false;
  const { role, text, ts, id, meta } = entry as Record<string, unknown>;
  return (
    typeof role === 'string' &&
    role.length >= 1 &&
    typeof text === 'string' &&
    typeof ts === 'string' &&
    ISO_UTC.test(ts) &&
    (id === undefined || (typeof id === 'string' && id.length >= 1 && id.length <= 256)) &&
    (meta === undefined || isFreeObject(meta))
  );
}

/** What `freeObject` (a zod record of string keys) accepts: zod's "plain object", without enumerable symbol keys. */
function isFreeObject(value: unknown): boolean {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  // zod's isPlainObject, step by step: a missing or non-function constructor passes; otherwise its prototype
  // must be an object with its own isPrototypeOf (Object.prototype has one, class prototypes do not).
  const ctor = (value as { constructor?: unknown }).constructor;
  if (typeof ctor === 'function') {
    const proto: unknown = (ctor as { prototype?: unknown }).prototype;
    if (typeof proto !== 'object' || proto === null || Array.isArray(proto)) return false;
    if (!Object.prototype.hasOwnProperty.call(proto, 'isPrototypeOf')) return false;
  }
  // zod checks every enumerable own key against z.string(): a symbol key fails.
  for (const sym of Object.getOwnPropertySymbols(value)) if (Object.prototype.propertyIsEnumerable.call(value, sym)) return false;
  return true;
}

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
export function nowIso(date?: Date): string {
  if (date !== undefined) return date.toISOString().replace(/\.\d{3}Z$/, 'Z');
  // Every write asks for the time, often twice; at second precision one formatting serves a whole second.
  const second = Math.floor(Date.now() / 1000);
  if (second !== nowCache.second) {
    nowCache.second = second;
    nowCache.text = new Date(second * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
  }
  return nowCache.text;
}
const nowCache = { second: NaN, text: '' };

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

/**
 * Compare user ids in UTF-8 byte order (= Unicode code point order), the order SQLite BINARY and
 * Postgres COLLATE "C" use. JS `<` compares UTF-16 units and differs for astral chars.
 */
export function compareIds(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x === y) continue;
    // Code units only disagree with code points when one side is a surrogate: surrogates
    // (astral chars) must sort above U+E000..U+FFFF, so shift the ranges past each other.
    if (x >= 0xd800) x += x < 0xe000 ? 0x2000 : -0x800;
    if (y >= 0xd800) y += y < 0xe000 ? 0x2000 : -0x800;
    return x - y;
  }
  return a.length - b.length;
}

function describeIssues(error: z.ZodError, what: string): string {
  const parts = error.issues.slice(0, 5).map((i) => `${i.path.length ? i.path.join('.') : '(root)'}: ${i.message}`);
  const more = error.issues.length > 5 ? ` (and ${error.issues.length - 5} more)` : '';
  return `invalid ${what}: ${parts.join('; ')}${more}`;
}

function stringTooLong(s: string): boolean {
  // UTF-8 takes at least one byte and at most three per UTF-16 unit: only the middle band needs counting.
  if (s.length * 3 <= RECORD_LIMITS.maxStringBytes) return false;
  return s.length > RECORD_LIMITS.maxStringBytes || Buffer.byteLength(s, 'utf8') > RECORD_LIMITS.maxStringBytes;
}

function limitError(what: string, where: string, problem: string, userId?: string): RecordError {
  return new RecordError('E_RECORD', `${what}: ${where ? `${where} ` : ''}${problem}`, {
    details: userId === undefined ? undefined : { userId },
  });
}

/**
 * Throws `E_RECORD` when `value` breaks {@link RECORD_LIMITS}. `depth` is the nesting level `value`
 * itself sits at in a record (1 for a record or a patch, 3 for a history entry or a flag value), so
 * every write is measured against the same record-wide depth. `nameFields`: the error names the
 * top-level key of `value` the problem is under (for records, patches and entries, whose keys are
 * fields). Iterative: any input, however deep, is refused without recursion, and the walk stops at
 * the first problem.
 */
export function checkLimits(value: unknown, what: string, options: { depth?: number; userId?: string; nameFields?: boolean } = {}): void {
  const { maxDepth, maxKeys, maxStringBytes } = RECORD_LIMITS;
  const { depth = 1, userId, nameFields = true } = options;
  // Each pending value carries the top-level field it sits under, so the error can name it.
  const pending: [unknown, number, string][] = [[value, depth, '']];
  let keys = 0;
  while (pending.length > 0) {
    const [v, d, field] = pending.pop()!;
    const where = field ? `field ${JSON.stringify(field.length > 64 ? `${field.slice(0, 64)}…` : field)}` : '';
    if (typeof v === 'string') {
      if (stringTooLong(v)) throw limitError(what, where, `has a string longer than ${maxStringBytes} bytes`, userId);
      continue;
    }
    if (typeof v !== 'object' || v === null) continue;
    if (d > maxDepth) throw limitError(what, where, `nests objects/arrays deeper than ${maxDepth} levels`, userId);
    if (Array.isArray(v)) {
      keys += v.length;
      if (keys > maxKeys) throw limitError(what, where, `has more than ${maxKeys} keys and array elements`, userId);
      for (const item of v) pending.push([item, d + 1, field]);
      continue;
    }
    const names = Object.keys(v);
    keys += names.length;
    if (keys > maxKeys) throw limitError(what, where, `has more than ${maxKeys} keys and array elements`, userId);
    for (const k of names) {
      if (stringTooLong(k)) throw limitError(what, where, `has a key longer than ${maxStringBytes} bytes`, userId);
      pending.push([(v as Record<string, unknown>)[k], d + 1, field || (nameFields ? k : '')]);
    }
  }
}

/** Refuses a merge that grows `flags` or `slots` past the key limit (a map already past it may shrink). */
function checkMapSize(field: 'flags' | 'slots', before: Record<string, unknown>, after: Record<string, unknown>): void {
  const n = Object.keys(after).length;
  if (n > RECORD_LIMITS.maxKeys && n > Object.keys(before).length) {
    throw new RecordError('E_RECORD', `${field} would hold ${n} keys; the limit is ${RECORD_LIMITS.maxKeys}`);
  }
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
 * {@link RECORD_LIMITS} are checked unless `options.limits` is false (reading what is already stored
 * or backed up, which must stay readable and restorable).
 */
export function parseRecord(userId: string, input: unknown, now: string = nowIso(), options: { limits?: boolean } = {}): MemoryRecord {
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
  if (options.limits !== false) checkLimits(raw, `record of user ${JSON.stringify(userId)}`, { userId });
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
  checkLimits(p, 'patch');
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
  if (flags) checkMapSize('flags', base.flags, (next.flags = mergeMap(base.flags, flags as Record<string, unknown>)));
  if (slots) checkMapSize('slots', base.slots, (next.slots = mergeMap(base.slots, slots as Record<string, unknown>)));
  if (typeof rest.updated_at === 'string') next.updated_at = rest.updated_at;
  return next;
}

/** Validates a history entry to append; `ts` defaults to `now`. */
export function parseHistoryInput(input: unknown, now: string = nowIso()): HistoryEntry {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new RecordError('E_RECORD', 'history entry must be a JSON object with role and text');
  }
  // An entry sits at level 3 of a record (record, history, entry).
  checkLimits(input, 'history entry', { depth: 3 });
  const entry = { ...(input as Record<string, unknown>) };
  if (entry.ts === undefined) entry.ts = now;
  if (entry.id === undefined) entry.id = newEntryId();
  if (isHistoryEntry(entry)) return entry as HistoryEntry;
  const result = historySchema.safeParse(entry);
  if (!result.success) throw new RecordError('E_RECORD', describeIssues(result.error, 'history entry'));
  return entry as HistoryEntry;
}

/** A fresh history entry id: 72 random bits, URL-safe, 12 characters. */
export function newEntryId(): string {
  // One randomFillSync per 512 ids: a call per id cost more than the rest of an append's validation.
  if (idPool.used >= idPool.bytes.length) {
    randomFillSync(idPool.bytes);
    idPool.used = 0;
  }
  const id = idPool.bytes.toString('base64url', idPool.used, idPool.used + 9);
  idPool.used += 9;
  return id;
}
const idPool = { bytes: Buffer.alloc(9 * 512), used: 9 * 512 };

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
  return applyAppendMany(current, userId, [entry], cap, now);
}

/**
 * Appends entries in order. An entry whose `id` is already in the (capped) history, or earlier in the
 * same batch, is skipped: a retried request must not duplicate a turn. When every entry is skipped the
 * record comes back unchanged, `updated_at` included.
 */
export function applyAppendMany(
  current: MemoryRecord | null,
  userId: string,
  entries: HistoryEntry[],
  cap: number = DEFAULT_HISTORY_CAP,
  now: string = nowIso(),
): MemoryRecord {
  const base = current ?? newRecord(userId, now);
  const fresh = entries.length <= 8 ? freshByScan(base.history, entries) : freshBySet(base.history, entries);
  if (fresh.length === 0) return base;
  const history = [...base.history, ...fresh];
  const capped = cap > 0 && history.length > cap ? history.slice(history.length - cap) : history;
  const next: MemoryRecord = { ...base, history: capped, updated_at: now };
  for (const e of fresh) if (e.role === 'user') next.last_answer = e.text;
  return next;
}

// The entries of `entries` whose id neither `history` nor an earlier entry has. A bot appends one turn at a
// time: a scan of the (capped) history is cheaper than building a set of its ids; a batch uses the set.
function freshByScan(history: HistoryEntry[], entries: HistoryEntry[]): HistoryEntry[] {
  return entries.filter((e, i) => {
    if (e.id === undefined) return true;
    for (const h of history) if (typeof h.id === 'string' && h.id === e.id) return false;
    for (let j = 0; j < i; j++) if (entries[j]!.id === e.id) return false;
    return true;
  });
}

function freshBySet(history: HistoryEntry[], entries: HistoryEntry[]): HistoryEntry[] {
  const seen = new Set<string>();
  for (const e of history) if (typeof e.id === 'string') seen.add(e.id);
  return entries.filter((e) => {
    if (e.id === undefined) return true;
    if (seen.has(e.id)) return false;
    seen.add(e.id);
    return true;
  });
}

/** The seed's get-or-create: a new user starts with a session token and `flags.last_activity`. */
export function newSeedRecord(userId: string, sessionToken: string, now: string = nowIso()): MemoryRecord {
  return { ...newRecord(userId, now), session_token: sessionToken, flags: { last_activity: now } };
}

/** A new session token as the seed made them: 16 hex characters. */
export function newSessionToken(): string {
  return randomBytes(8).toString('hex');
}

/** What one context call changes: a summary entry and/or what was recognised in the text. */
export interface ContextInput {
  text?: string;
  /** Entries kept in `summary_context`, newest last; default 15 as the seed. */
  maxItems?: number;
  product?: string;
  /** Serial numbers to merge into `serial` (a comma-separated, sorted set). */
  serials?: string[];
}

export const DEFAULT_CONTEXT_ITEMS = 15;

/** The seed's `add_context_entry` + `ensure_product_from_text`, as one atomic change. */
export function applyContext(current: MemoryRecord | null, userId: string, input: ContextInput, now: string = nowIso()): MemoryRecord {
  const max = input.maxItems ?? DEFAULT_CONTEXT_ITEMS;
  if (!Number.isInteger(max) || max < 1 || max > 1000) throw new RecordError('E_RECORD', `maxItems must be an integer from 1 to 1000, got ${String(input.maxItems)}`);
  if (input.text !== undefined && typeof input.text !== 'string') throw new RecordError('E_RECORD', 'text must be a string');
  if (input.product !== undefined && typeof input.product !== 'string') throw new RecordError('E_RECORD', 'product must be a string');
  if (input.serials !== undefined && !(Array.isArray(input.serials) && input.serials.every((x) => typeof x === 'string' && x.trim() !== ''))) {
    throw new RecordError('E_RECORD', 'serials must be a list of non-empty strings');
  }
  const base = current ?? newRecord(userId, now);
  const next: MemoryRecord = { ...base, updated_at: now };
  const text = input.text?.trim() ?? '';
  if (text !== '') {
    const summary = base.summary_context.includes(text) ? [...base.summary_context] : [...base.summary_context, text];
    next.summary_context = summary.slice(-max);
  }
  if (input.product !== undefined && input.product.trim() !== '') next.product = input.product.trim();
  if (input.serials !== undefined && input.serials.length > 0) {
    // The seed split on "," without trimming and so grew duplicates such as "F57A" and " F57A".
    const merged = new Set((base.serial ?? '').split(',').map((s) => s.trim()).filter((s) => s !== ''));
    for (const s of input.serials) merged.add(s.trim());
    next.serial = [...merged].sort().join(', ');
  }
  return next;
}

/** Sets several slot keys verbatim (a `null` value is stored as null, unlike a patch where null removes). */
export function applyFillSlots(current: MemoryRecord | null, userId: string, values: unknown, now: string = nowIso()): MemoryRecord {
  if (typeof values !== 'object' || values === null || Array.isArray(values)) throw new RecordError('E_RECORD', 'slots must be a JSON object');
  const base = current ?? newRecord(userId, now);
  return { ...base, slots: { ...base.slots, ...(values as Record<string, unknown>) }, updated_at: now };
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
  if (stringTooLong(key)) throw new RecordError('E_RECORD', `${field} key is longer than ${RECORD_LIMITS.maxStringBytes} bytes`);
  // The value sits at level 3 of a record (record, flags, value).
  checkLimits(value, `${field}.${key.length > 64 ? `${key.slice(0, 64)}…` : key}`, { depth: 3, nameFields: false });
  const base = current ?? newRecord(userId, now);
  const map = { ...base[field], [key]: value };
  checkMapSize(field, base[field], map);
  return { ...base, [field]: map, updated_at: now };
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
