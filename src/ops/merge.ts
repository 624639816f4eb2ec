/**
 * Merging the two ids of one person (WhatsApp gives one person an `…@lid` id and a phone id): FROM's
 * record folds into INTO's, then FROM goes.
 */
import type { HistoryEntry, MemoryRecord } from '../record.js';

const IDENTITY = ['session_token', 'name', 'gender', 'is_company', 'product', 'serial', 'address', 'last_answer'] as const;

const empty = (v: unknown): boolean => v === null || v === undefined || v === '';

function entryKey(e: HistoryEntry): string {
  const id = (e as { id?: unknown }).id;
  return typeof id === 'string' ? `id:${id}` : JSON.stringify([e.role, e.text, e.ts]);
}

/**
 * INTO after taking FROM in: histories merged by timestamp (a turn both hold, same id or same role,
 * text and time, once; on equal times INTO's first), the newest `historyCap` kept; flags and slots
 * merged key by key with INTO winning; INTO's empty identity fields (name, gender, product, serial,
 * address, …) and unknown top-level fields filled from FROM; summary lines of both, distinct, INTO's
 * first; `created_at` the earlier of the two. Pure: `now` becomes `updated_at`.
 */
export function mergeRecords(from: MemoryRecord, into: MemoryRecord, historyCap: number, now: string): MemoryRecord {
  const out: MemoryRecord = { ...from, ...into };
  for (const k of IDENTITY) if (empty(into[k]) && !empty(from[k])) (out as Record<string, unknown>)[k] = from[k];
  for (const [k, v] of Object.entries(from)) if (!(k in into) || (empty(into[k]) && !empty(v) && !(IDENTITY as readonly string[]).includes(k))) out[k] = v;
  out.user_id = into.user_id;
  out.flags = { ...from.flags, ...into.flags };
  out.slots = { ...from.slots, ...into.slots };
  out.summary_context = [...new Set([...into.summary_context, ...from.summary_context])];
  const seen = new Set<string>();
  const tagged = [...into.history.map((e, i) => ({ e, src: 0, i })), ...from.history.map((e, i) => ({ e, src: 1, i }))];
  tagged.sort((a, b) => Date.parse(a.e.ts) - Date.parse(b.e.ts) || a.src - b.src || a.i - b.i);
  const history: HistoryEntry[] = [];
  for (const { e } of tagged) {
    const key = entryKey(e);
    if (seen.has(key)) continue;
    seen.add(key);
    history.push(e);
  }
  out.history = history.slice(-historyCap);
  out.created_at = Date.parse(from.created_at) < Date.parse(into.created_at) ? from.created_at : into.created_at;
  out.updated_at = now;
  return out;
}
