import { nestedDeeperThan, PRETTY_MAX_DEPTH, stringifyJson } from '../json-safe.js';

// The seed's file format (Python's json.dump(indent=2, ensure_ascii=False)): the JSON store's file and the
// legacy backups are written in it.

/**
 * One `"id": record` member of the file, indented as the seed writes it. A record nested deeper than the
 * record limits allow (only data older than them) is written on one line: indenting it would take space
 * quadratic in its depth. Never recurses on the record (stringifyJson is iterative).
 */
export function partOf(id: string, record: unknown): string {
  const text = nestedDeeperThan(record, PRETTY_MAX_DEPTH) ? stringifyJson(record) : stringifyJson(record, 2).replace(/\n/g, '\n  ');
  return `  ${JSON.stringify(id)}: ${text}`;
}

/** The members, as one seed-format object. */
export function joinParts(parts: string[]): string {
  return parts.length === 0 ? '{}' : `{\n${parts.join(',\n')}\n}`;
}

/** Serialises like Python's `json.dump(indent=2, ensure_ascii=False)`, keeping the map's order. */
export function serializeSeed(records: Iterable<[string, unknown]>): string {
  const parts: string[] = [];
  for (const [id, record] of records) parts.push(partOf(id, record));
  return joinParts(parts);
}
