import type { MemoryRecord } from '../record.js';

/**
 * Queries shorter than this match user ids by prefix only (case-sensitive, through the primary key):
 * a trigram index cannot answer a substring of one or two characters, and such a substring would
 * match most of the store anyway.
 */
export const MIN_SUBSTRING_QUERY = 3;

/** True when `query` (already trimmed) is answered by an id-prefix match rather than a substring search. */
export function isPrefixQuery(query: string): boolean {
  return [...query].length < MIN_SUBSTRING_QUERY;
}

/**
 * Who the user is: id, name, address, product and summary_context, one per line. Changes rarely, so
 * the SQLite index keeps it as one document per user and rewrites it only when it changes.
 */
export function profileText(r: MemoryRecord): string {
  const parts: string[] = [r.user_id];
  for (const v of [r.name, r.address, r.product]) if (typeof v === 'string' && v) parts.push(v);
  // Stored data from older versions may lack fields: index what is there.
  if (Array.isArray(r.summary_context)) for (const s of r.summary_context) if (typeof s === 'string' && s) parts.push(s);
  return parts.join('\n');
}

/**
 * Everything search looks in, lower-cased: the profile (id, name, address, product, summary) and the
 * text of every history entry. Kept beside the record by the PostgreSQL driver and scanned by the
 * JSON driver; the SQLite driver indexes the same text per document instead.
 */
export function searchText(r: MemoryRecord): string {
  const parts: string[] = [profileText(r)];
  if (Array.isArray(r.history)) for (const h of r.history) parts.push(typeof h?.text === 'string' ? h.text : '');
  return parts.join('\n').toLowerCase();
}

/** Escapes LIKE wildcards so a query such as `100%` matches literally (with `ESCAPE '\\'`). */
export function likeEscape(q: string): string {
  return q.replace(/[\\%_]/g, (c) => `\\${c}`);
}
