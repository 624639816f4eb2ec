import { promises as fsp, type Stats } from 'node:fs';
import * as path from 'node:path';
import { errnoCode, StoreError, isChatmemError } from '../errors.js';
import { ensurePrivateDir, writeFileAtomic } from '../fs-util.js';
import { parseRecord, type MemoryRecord } from '../record.js';
import { readJsonEntries } from '../backup/json-entries.js';
import { compareIds } from '../backup/format.js';
import { searchText } from './search-text.js';
import { stringifyScan, summarize, type ExclusiveContext, type ExclusiveScope, type Page, type ScanOptions, type StoreDriver, type StoreStats, type UserSummary } from './types.js';

/** Serialises like Python's `json.dump(indent=2, ensure_ascii=False)`, keeping the map's order. */
export function serializeSeed(records: Iterable<[string, unknown]>): string {
  const parts: string[] = [];
  for (const [id, record] of records) {
    parts.push(`  ${JSON.stringify(id)}: ${JSON.stringify(record, null, 2).replace(/\n/g, '\n  ')}`);
  }
  return parts.length === 0 ? '{}' : `{\n${parts.join(',\n')}\n}`;
}

type Fingerprint = { ino: number; size: number; mtimeMs: number };

function fingerprint(st: Stats): Fingerprint {
  return { ino: st.ino, size: st.size, mtimeMs: st.mtimeMs };
}

/** Loads a seed-format file into an ordered map. Refuses (never resets) a file it cannot parse. */
async function load(file: string): Promise<{ map: Map<string, MemoryRecord>; fp: Fingerprint | null }> {
  let st: Stats;
  try {
    st = await fsp.stat(file);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return { map: new Map(), fp: null };
    throw new StoreError('E_STORE_OPEN', `cannot open ${file}: ${(err as Error).message}`, { cause: err });
  }
  const map = new Map<string, MemoryRecord>();
  try {
    for await (const entry of readJsonEntries(file)) {
      map.set(entry.key, parseRecord(entry.key, entry.value));
    }
  } catch (err) {
    const where = isChatmemError(err) ? err.message : String(err);
    throw new StoreError(
      'E_STORE_PARSE',
      `refusing to open ${file}: ${where}. The file was left untouched; fix it or restore a backup.`,
      { cause: err, details: { file, ...(isChatmemError(err) ? err.details : {}) } },
    );
  }
  return { map, fp: fingerprint(st) };
}

/**
 * The seed's memory.json: one object keyed by user id, `indent=2`, UTF-8. The whole file is
 * rewritten atomically on every flush, so concurrent updates are coalesced into one write
 * (as steno does). Outside edits are detected and never overwritten.
 */
export class JsonFileDriver implements StoreDriver {
  readonly kind = 'json' as const;
  readonly url: string;
  private writing: Promise<void> | null = null;
  private next: Promise<void> | null = null;

  private constructor(
    readonly file: string,
    private map: Map<string, MemoryRecord>,
    private fp: Fingerprint | null,
  ) {
    this.url = `json:${file}`;
  }

  static async open(file: string): Promise<JsonFileDriver> {
    const abs = path.resolve(file);
    const { map, fp } = await load(abs);
    return new JsonFileDriver(abs, map, fp);
  }

  /** Resolves when a write that started after this call is durable. */
  private persist(): Promise<void> {
    if (!this.writing) {
      this.writing = this.writeNow().finally(() => {
        this.writing = null;
      });
      return this.writing;
    }
    if (!this.next) {
      this.next = this.writing
        .catch(() => undefined)
        .then(() => {
          this.next = null;
          return this.persist();
        });
    }
    return this.next;
  }

  private async writeNow(): Promise<void> {
    let current: Fingerprint | null = null;
    try {
      current = fingerprint(await fsp.stat(this.file));
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw new StoreError('E_STORE_WRITE', `cannot stat ${this.file}`, { cause: err });
    }
    const changedOutside =
      (current === null) !== (this.fp === null) ||
      (current !== null && this.fp !== null && (current.ino !== this.fp.ino || current.size !== this.fp.size || current.mtimeMs !== this.fp.mtimeMs));
    if (changedOutside) {
      // Adopt the outside edit instead of overwriting it: the seed's cache silently clobbered such edits.
      await this.reload();
      throw new StoreError(
        'E_STORE_CONFLICT',
        `${this.file} was changed by another program; chatmem reloaded it and did not apply this write. Retry the write.`,
      );
    }
    const text = serializeSeed(this.map);
    try {
      await ensurePrivateDir(path.dirname(this.file));
      await writeFileAtomic(this.file, text);
      this.fp = fingerprint(await fsp.stat(this.file));
    } catch (err) {
      // What is in memory was never made durable: fall back to what is on disk so nothing unacknowledged survives.
      await this.reload().catch(() => undefined);
      throw new StoreError('E_STORE_WRITE', `cannot write ${this.file}: ${(err as Error).message}`, { cause: err });
    }
  }

  private async reload(): Promise<void> {
    const { map, fp } = await load(this.file);
    this.map = map;
    this.fp = fp;
  }

  async get(id: string): Promise<MemoryRecord | null> {
    return this.map.get(id) ?? null;
  }

  async update(id: string, fn: (current: MemoryRecord | null) => MemoryRecord): Promise<MemoryRecord> {
    const next = fn(this.map.get(id) ?? null);
    this.map.set(id, next);
    await this.persist();
    return next;
  }

  async count(): Promise<number> {
    return this.map.size;
  }

  private sortedIds(): string[] {
    return [...this.map.keys()].sort(compareIds);
  }

  async list(options: { cursor: string | null; limit: number }): Promise<Page<UserSummary>> {
    const ids = this.sortedIds().filter((id) => options.cursor === null || compareIds(id, options.cursor) > 0);
    const page = ids.slice(0, options.limit);
    const items = page.map((id) => this.map.get(id)).filter((r): r is MemoryRecord => r !== undefined).map(summarize);
    return { items, next: ids.length > options.limit ? (page[page.length - 1] ?? null) : null };
  }

  /** Records are replaced, never mutated, so holding the references taken here is a snapshot. */
  async *scan(options: ScanOptions = {}): AsyncGenerator<MemoryRecord> {
    const after = options.after;
    const snapshot = [...this.map.entries()]
      .filter(([id]) => after === undefined || compareIds(id, after) > 0)
      .sort((a, b) => compareIds(a[0], b[0]));
    for (const [, record] of snapshot) yield record;
  }

  async stats(): Promise<StoreStats> {
    let messages = 0;
    let bytes = 0;
    let last: string | null = null;
    for (const r of this.map.values()) {
      messages += r.history.length;
      bytes += Buffer.byteLength(JSON.stringify(r));
      if (last === null || r.updated_at > last) last = r.updated_at;
    }
    return { users: this.map.size, messages, bytes, lastUpdate: last };
  }

  async search(query: string, limit: number): Promise<UserSummary[]> {
    const out: UserSummary[] = [];
    for (const id of this.sortedIds()) {
      const r = this.map.get(id);
      if (!r) continue;
      if (searchText(r).includes(query)) out.push(summarize(r));
      if (out.length >= limit) break;
    }
    return out;
  }

  async exclusive<T>(_scope: ExclusiveScope, fn: (ctx: ExclusiveContext) => Promise<T>): Promise<T> {
    const mutate = async (change: (map: Map<string, MemoryRecord>) => number): Promise<number> => {
      const copy = new Map(this.map);
      const n = change(copy);
      this.map = copy;
      await this.persist();
      return n;
    };
    const ctx: ExclusiveContext = {
      getMany: async (ids) => ids.map((id) => this.map.get(id)).filter((r): r is MemoryRecord => r !== undefined),
      scan: (options) => this.scan(options),
      scanJson: (options) => stringifyScan(this.scan(options)),
      count: () => this.count(),
      delete: (ids) => mutate((m) => ids.reduce((n, id) => n + (m.delete(id) ? 1 : 0), 0)),
      clear: () =>
        mutate((m) => {
          const n = m.size;
          m.clear();
          return n;
        }),
      putMany: async (records) => {
        await mutate((m) => {
          for (const r of records) m.set(r.user_id, r);
          return records.length;
        });
      },
      // The whole store lives in memory already; one atomic file write makes the change all-or-nothing.
      putAll: async (records) => {
        const fresh = new Map<string, MemoryRecord>();
        let read = 0;
        for await (const r of records) {
          fresh.set(r.user_id, r);
          read++;
        }
        await mutate((m) => {
          for (const [k, v] of fresh) m.set(k, v);
          return fresh.size;
        });
        return read;
      },
      replaceAll: async (records) => {
        const fresh = new Map<string, MemoryRecord>();
        for await (const r of records) fresh.set(r.user_id, r);
        return mutate((m) => {
          m.clear();
          for (const [k, v] of fresh) m.set(k, v);
          return fresh.size;
        });
      },
    };
    return fn(ctx);
  }

  async close(): Promise<void> {
    await (this.next ?? this.writing)?.catch(() => undefined);
  }
}
