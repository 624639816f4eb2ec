import type { MemoryRecord } from '../record.js';

/** What keyword search looks in: product, summary_context and history text, lower-cased, kept beside the record. */
export function searchText(r: MemoryRecord): string {
  const parts: string[] = [];
  if (r.product) parts.push(r.product);
  for (const s of r.summary_context) parts.push(s);
  for (const h of r.history) parts.push(h.text);
  return parts.join('\n').toLowerCase();
}

/** Escapes LIKE wildcards so a query such as `100%` matches literally (with `ESCAPE '\\'`). */
export function likeEscape(q: string): string {
  return q.replace(/[\\%_]/g, (c) => `\\${c}`);
}
