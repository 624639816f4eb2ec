import { promises as fsp, type BigIntStats } from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { errnoCode, RecordError, StoreError, isChatmemError } from '../errors.js';
import { ensurePrivateDir, fsyncDir, FILE_MODE, isTempName, tempNameFor } from '../fs-util.js';
import { io } from '../fsio.js';
import { compareIds, parseRecord, type MemoryRecord } from '../record.js';
import { readJsonEntries } from '../format/json-entries.js';
import { joinParts, partOf } from '../format/seed.js';
import { stringifyJson } from '../json-safe.js';
import { isProcessAlive } from './owner.js';
import { isPrefixQuery, searchText } from './search-text.js';
import { stringifyScan, summarize, type DriverContext, type ExclusiveScope, type ScanOptions, type StoreDriver, type StoreStats, type UserSummary } from './types.js';

/** What the driver saw of other programs writing its file (see {@link JsonFileDriver.report}). */
export interface OutsideChange {
  /** `before-write`: found when a flush started; `during-write`: landed while chatmem was writing the file. */
  when: 'before-write' | 'during-write';
  /** Users taken over from the other program's file (new users, and edits based on chatmem's latest version). */
  adopted: number;
  /** Users where the other program's version was not taken over (deletions, edits of an old version). */
  conflicts: number;
  /** The other program's file, kept beside the store (0600) because not all of it was taken over. */
  kept: string | null;
  /** The other program's file did not parse even after retries; it is kept, untouched. */
  unparsable: boolean;
}

export interface JsonFileOptions {
  /** Receives each outside change; the default writes one line to stderr (no user data). */
  onOutsideChange?: (change: OutsideChange, message: string) => void;
  /** Receives other warnings (leftovers removed at open); default stderr. */
  warn?: (message: string) => void;
}

type Fingerprint = { ino: bigint; size: bigint; mtimeNs: bigint; ctimeNs: bigint };

function fingerprint(st: BigIntStats): Fingerprint {
  return { ino: st.ino, size: st.size, mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs };
}

function sameFp(a: Fingerprint | null, b: Fingerprint | null): boolean {
  if (a === null || b === null) return a === b;
  return a.ino === b.ino && a.size === b.size && a.mtimeNs === b.mtimeNs && a.ctimeNs === b.ctimeNs;
}

// Linking, unlinking and renaming change an inode's ctime but not its content: for inodes chatmem itself
// just linked or renamed, only inode, size and mtime say whether someone wrote into it.
function sameContent(a: Fingerprint | null, b: Fingerprint | null): boolean {
  if (a === null || b === null) return a === b;
  return a.ino === b.ino && a.size === b.size && a.mtimeNs === b.mtimeNs;
}

async function statFp(file: string): Promise<Fingerprint | null> {
  try {
    return fingerprint(await fsp.stat(file, { bigint: true }));
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return null;
    throw new StoreError('E_STORE_READ', `cannot stat ${file}: ${(err as Error).message}`, { cause: err });
  }
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * Internal, for tests only (not part of the driver's API): `onChunk` runs after each chunk a read of a
 * store file takes, so a test can write the file between two chunks of one read, where no fs call of
 * chatmem's (the src/fsio.ts seam) falls. Unset, it costs one property read per chunk.
 */
export const readHooks: { onChunk?: (file: string) => void } = {};

/** Serialised form of each record, computed once when the record enters the store: records are never mutated. */
const serialized = new WeakMap<MemoryRecord, { part: string; bytes: number }>();

/**
 * Serialises a record that is about to enter the store. A record JSON.stringify cannot handle (nesting
 * deep enough to overflow the stack, say) is refused here, for its own write only, instead of making
 * every later flush, stats call and backup of the whole store throw.
 */
function admit(id: string, input: MemoryRecord, options: { detach?: boolean } = {}): MemoryRecord {
  if (serialized.has(input)) return input;
  let record = input;
  let part: string;
  let bytes: number;
  try {
    const compact = stringifyJson(record);
    // A written record is held as the file will hold it: JSON's own copy, so a caller that later
    // mutates an object it passed in (a history entry's meta, say) cannot change the store unseen,
    // and values JSON does not keep (-0) read back as they will after a restart.
    if (options.detach) record = JSON.parse(compact) as MemoryRecord;
    part = partOf(id, record);
    bytes = Buffer.byteLength(compact);
  } catch (err) {
    throw new RecordError('E_RECORD', `record of user ${JSON.stringify(id)} cannot be serialised: ${(err as Error).message}`, { cause: err });
  }
  serialized.set(record, { part, bytes });
  return record;
}

function partFor(id: string, record: MemoryRecord): string {
  return serialized.get(record)?.part ?? partOf(id, record);
}

function sameRecord(a: MemoryRecord | null, b: MemoryRecord | null): boolean {
  if (a === b) return true;
  if (a === null || b === null) return false;
  return partFor(a.user_id, a) === partFor(b.user_id, b);
}

/**
 * Whether `k` is the record `o` read from a file, where `missing` are the timestamps `o` lacked in the file
 * (filled in with the time of each reading): compared with `k`'s own values for those.
 */
function sameAsRead(k: MemoryRecord | null, o: MemoryRecord | null, missing: readonly string[] | undefined): boolean {
  if (sameRecord(k, o)) return true;
  if (k === null || o === null || missing === undefined) return false;
  const filled: Record<string, unknown> = { ...o };
  for (const f of missing) filled[f] = k[f as keyof MemoryRecord];
  return JSON.stringify(filled) === JSON.stringify(k);
}

const PARSE_RETRIES_MS = [10, 20, 40, 80, 160, 320, 640];

class Unsettled extends Error {}

/** The file write itself failed (disk full, I/O error): the batch may be split to find the write that cannot fit. */
class WriteFailure extends Error {
  constructor(cause: unknown) {
    super('write failed', { cause });
  }
}

interface Parsed {
  map: Map<string, MemoryRecord>;
  fp: Fingerprint | null;
  bytes: Buffer | null;
  /** Users whose record in the file has no `created_at`/`updated_at`: parsing filled them in with the time of reading. */
  untimed: Map<string, ('created_at' | 'updated_at')[]>;
}

/** Another chatmem process is in the instant of its swap (see {@link JsonFileDriver}): the file is about to reappear. */
async function swapInProgress(file: string): Promise<boolean> {
  const names = await fsp.readdir(path.dirname(file)).catch(() => [] as string[]);
  return names.some((name) => {
    const pid = leftoverPid(file, name, 'prev');
    return pid !== null && pid !== process.pid && isProcessAlive(pid);
  });
}

/**
 * One read of `file`. With `pin`, the inode is first hard-linked to a private temp name and read through
 * it: a rename-writer replacing the file mid-read then does not spoil the read (that inode is complete and
 * nobody writes it any more), and only in-place writes into the very inode read make it start over.
 */
async function parseOnce(file: string, pin: boolean): Promise<Parsed> {
  let source = file;
  if (pin) {
    source = tempNameFor(file);
    try {
      await io.link(file, source);
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw new StoreError('E_STORE_READ', `cannot read ${file}: ${(err as Error).message}`, { cause: err });
      source = file;
    }
  }
  try {
    const before = await statFp(source);
    if (before === null) {
      if (await swapInProgress(file)) throw new Unsettled(`${file} is being replaced by another chatmem process`);
      return { map: new Map(), fp: null, bytes: null, untimed: new Map() };
    }
    const chunks: Buffer[] = [];
    const map = new Map<string, MemoryRecord>();
    const untimed = new Map<string, ('created_at' | 'updated_at')[]>();
    try {
      const onChunk = (c: Buffer) => {
        chunks.push(c);
        readHooks.onChunk?.(file);
      };
      for await (const entry of readJsonEntries(source, { onChunk })) {
        // Limits apply to new writes: a file written before them (or by the seed bot) must still open.
        map.set(entry.key, admit(entry.key, parseRecord(entry.key, entry.value, undefined, { limits: false })));
        const raw = entry.value;
        if (typeof raw === 'object' && raw !== null) {
          const missing = (['created_at', 'updated_at'] as const).filter((k) => !(k in raw));
          if (missing.length > 0) untimed.set(entry.key, missing);
        }
      }
    } catch (err) {
      const where = (isChatmemError(err) ? err.message : String(err)).split(source).join(file);
      throw new StoreError('E_STORE_PARSE', `${file} does not parse: ${where}`, { cause: err, details: { ...(isChatmemError(err) ? err.details : {}), file } });
    }
    const after = await statFp(source);
    // Bytes from two different versions would look like one file: only a read bracketed by two equal stats counts.
    if (!(source === file ? sameFp(before, after) : sameContent(before, after))) throw new Unsettled(`${file} changed while being read`);
    if (source === file) return { map, fp: after, bytes: Buffer.concat(chunks), untimed };
    await fsp.rm(source, { force: true });
    source = file;
    // The link and unlink changed the inode's ctime; take the file's fingerprint now, unless it is no longer what was read.
    const now = await statFp(file);
    const fp = now !== null && sameContent(now, before) ? now : { ...before, ctimeNs: -1n };
    return { map, fp, bytes: Buffer.concat(chunks), untimed };
  } finally {
    if (source !== file) await fsp.rm(source, { force: true });
  }
}

/**
 * Reads a seed-format file. A file that does not parse, or changes while read, is taken to be in the
 * middle of another program's write (json.dump truncates, then writes): it is read again with backoff,
 * and only then refused with E_STORE_PARSE. The file is never written here.
 */
async function parseSettled(file: string, pin = false): Promise<Parsed> {
  let last: unknown;
  for (let attempt = 0; attempt <= PARSE_RETRIES_MS.length; attempt++) {
    try {
      return await parseOnce(file, pin);
    } catch (err) {
      if (!(err instanceof Unsettled) && !(isChatmemError(err) && err.code === 'E_STORE_PARSE')) throw err;
      last = err;
    }
    const wait = PARSE_RETRIES_MS[attempt];
    if (wait !== undefined) await sleep(wait);
  }
  if (last instanceof Unsettled) throw new StoreError('E_STORE_PARSE', `${file} keeps changing; another program is writing it`, { cause: last, details: { file } });
  throw last;
}

function stamp(): string {
  return new Date().toISOString().replace(/[-:.]/g, '');
}

/** `memory.json.outside-<time>`: where another program's version of the file is kept when it cannot all be taken over. */
function outsideNameFor(file: string, n: number): string {
  return `${file}.outside-${stamp()}${n === 0 ? '' : `-${n}`}`;
}

/** The name chatmem moves the current file to for the instant of the swap (see `swapIn`). */
function prevNameFor(file: string): string {
  return path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.prev`);
}

function leftoverPid(file: string, name: string, suffix: 'tmp' | 'prev'): number | null {
  const prefix = `.${path.basename(file)}.`;
  if (!name.startsWith(prefix)) return null;
  const m = /^(\d+)\.[0-9a-f]{8}\.(tmp|prev)$/.exec(name.slice(prefix.length));
  if (!m || m[2] !== suffix) return null;
  if (suffix === 'tmp' && !isTempName(name)) return null;
  return Number(m[1]);
}

/** Keeps `source` (an inode chatmem must not lose) under a fresh outside name, without ever replacing a file. */
async function keepAside(file: string, source: string): Promise<string> {
  for (let n = 0; ; n++) {
    const target = outsideNameFor(file, n);
    try {
      await io.link(source, target);
    } catch (err) {
      if (errnoCode(err) === 'EEXIST' && n < 100) continue;
      throw err;
    }
    await fsp.rm(source, { force: true });
    await fsp.chmod(target, FILE_MODE);
    await fsyncDir(path.dirname(file));
    return target;
  }
}

async function writeAside(file: string, bytes: Buffer): Promise<string> {
  for (let n = 0; ; n++) {
    const target = outsideNameFor(file, n);
    let fh;
    try {
      fh = await io.open(target, 'wx', FILE_MODE);
    } catch (err) {
      if (errnoCode(err) === 'EEXIST' && n < 100) continue;
      throw err;
    }
    try {
      await io.writeAll(fh, target, bytes);
      await io.sync(fh, target);
    } finally {
      await io.close(fh, target);
    }
    await fsyncDir(path.dirname(file));
    return target;
  }
}

/**
 * Start-up clean-up of what an interrupted chatmem left beside `file`: temp copies (full copies of the
 * store: names, addresses, chats) are removed; a swap leftover is put back when the file itself is
 * missing, else kept under an outside name (it may hold an edit another program made at that instant).
 * Only names this module produces, and only those of processes that are gone.
 */
async function cleanLeftovers(file: string, warn: (message: string) => void): Promise<void> {
  const dir = path.dirname(file);
  let names: string[];
  try {
    names = await fsp.readdir(dir);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return;
    throw new StoreError('E_STORE_OPEN', `cannot list ${dir}: ${(err as Error).message}`, { cause: err });
  }
  const dead = (pid: number | null): pid is number => pid !== null && pid !== process.pid && !isProcessAlive(pid);
  let removed = 0;
  for (const name of names) {
    if (dead(leftoverPid(file, name, 'tmp'))) {
      await fsp.rm(path.join(dir, name), { force: true });
      removed++;
    }
  }
  if (removed > 0) warn(`removed ${removed} temp file(s) an interrupted chatmem left beside ${file}`);
  const prevs = names.filter((name) => dead(leftoverPid(file, name, 'prev'))).map((name) => path.join(dir, name));
  if (prevs.length === 0) return;
  if ((await statFp(file)) === null) {
    // Interrupted between moving the file away and linking the new one in: the moved file is the last durable state.
    const newest = (await Promise.all(prevs.map(async (p) => ({ p, fp: await statFp(p) })))).sort((a, b) => Number((b.fp?.mtimeNs ?? 0n) - (a.fp?.mtimeNs ?? 0n)))[0];
    if (newest) {
      await io.link(newest.p, file);
      await fsp.rm(newest.p, { force: true });
      await fsyncDir(dir);
      warn(`restored ${file} from the copy an interrupted chatmem left`);
    }
  }
  for (const p of prevs) {
    if ((await statFp(p)) === null) continue;
    const kept = await keepAside(file, p);
    warn(`an interrupted chatmem left an older copy of ${file}; kept at ${kept} (0600) in case another program edited it then; remove it once checked`);
  }
}

/** A change not yet durable: applied to the in-memory view now, re-applied on a new base after a failed flush. */
interface Mutation {
  reapply(map: Map<string, MemoryRecord>): void;
  done(): void;
  fail(err: unknown): void;
}

// Enough versions of each user to recognise the stale copies a read-modify-write by another program carries.
const VERSIONS_KEPT = 8;

/**
 * The seed's memory.json: one object keyed by user id, `indent=2`, UTF-8. The whole file is rewritten
 * on every flush, so concurrent updates are coalesced into one write (as steno does).
 *
 * State: `durable` is what the file holds; `pending` are acknowledged-to-nobody changes, applied to
 * `view` (what reads see). A failed flush rejects only the changes it carried; the view is rebuilt as
 * durable + the changes still queued, so a failure never drops a write queued behind it.
 *
 * Other programs (the seed's scripts) write the file without a lock. How chatmem never overwrites them:
 *
 * - Before each flush the file's fingerprint (inode, size, mtime, ctime in ns) is compared with the one
 *   chatmem left. A difference means another program wrote: the file is read (retrying while it does
 *   not parse: an in-place writer truncates first), merged (see `merge`), and the flush's changes are
 *   refused with E_STORE_CONFLICT, as before.
 * - The window between that check and the replace is closed by how the replace is done. The current
 *   file is renamed away to a private name, then the new file is hard-linked in, which fails with EEXIST
 *   instead of replacing anything. So: an in-place writer (json.dump over the file, cp) that wrote before
 *   or during the swap wrote into the old inode, now at the private name, whose inode/size/mtime are
 *   compared with what chatmem left; a rename-writer (temp + os.replace) whose rename landed before the
 *   swap moved a different inode there (caught the same way); one that landed after it replaced
 *   chatmem's new file (caught by the next flush's check: inode changed); one that landed in between,
 *   or any writer that created the file in that gap, makes the link fail with EEXIST. No path replaces
 *   a file chatmem has not seen. A caught file is merged and kept aside when not all of it was taken over.
 * - The cost: for the microseconds between the two calls the file does not exist. A reader then gets
 *   "file not found" (python's json.load raises; nothing is written). A crash in that gap leaves the old
 *   file under its private name; the next open puts it back.
 * - Not covered (README): a program that keeps the file open and writes into it later than the swap
 *   (the old inode is then already compared and removed); and a write that leaves size and mtime equal
 *   (same size within one clock tick, or a writer that restores mtime) between the check and the swap.
 */
export class JsonFileDriver implements StoreDriver {
  readonly kind = 'json' as const;
  readonly url: string;
  /** The last 1,000 outside changes seen since open (tests and operators observe these). */
  readonly report: OutsideChange[] = [];
  private view: Map<string, MemoryRecord>;
  private pending: Mutation[] = [];
  private needsSync = false;
  // How many queued changes the next flush takes: all of them, except while a failed batch is being split.
  private batchLimit = Infinity;
  private pumping: Promise<void> | null = null;
  private readonly versions = new Map<string, (MemoryRecord | null)[]>();
  // Kept outside files whose content was fully taken over: removed once the merged state is durable.
  private removeWhenSynced: string[] = [];
  private readonly onOutsideChange: (change: OutsideChange, message: string) => void;

  private constructor(
    readonly file: string,
    private durable: Map<string, MemoryRecord>,
    private fp: Fingerprint | null,
    options: JsonFileOptions,
  ) {
    this.url = `json:${file}`;
    this.view = new Map(durable);
    this.onOutsideChange = options.onOutsideChange ?? ((_c, message) => void process.stderr.write(`chatmem: warning: ${message}\n`));
  }

  static async open(file: string, options: JsonFileOptions = {}): Promise<JsonFileDriver> {
    const abs = path.resolve(file);
    try {
      await cleanLeftovers(abs, options.warn ?? ((message) => void process.stderr.write(`chatmem: warning: ${message}\n`)));
    } catch (err) {
      // A leftover that cannot be put back or kept aside (every outside name taken, EIO) refuses the open with
      // a catalogued code, as every other open failure does; the leftover stays where it is.
      if (isChatmemError(err)) throw err;
      throw new StoreError('E_STORE_OPEN', `cannot open ${abs}: ${(err as Error).message}`, { cause: err });
    }
    let parsed: Parsed;
    try {
      parsed = await parseSettled(abs);
    } catch (err) {
      if (isChatmemError(err) && err.code === 'E_STORE_PARSE') {
        const cause = err.cause;
        const where = isChatmemError(cause) ? cause.message : err.message;
        throw new StoreError('E_STORE_PARSE', `refusing to open ${abs}: ${where}. The file was left untouched; fix it or restore a backup.`, {
          cause,
          details: err.details,
        });
      }
      if (isChatmemError(err)) throw err;
      throw new StoreError('E_STORE_OPEN', `cannot open ${abs}: ${(err as Error).message}`, { cause: err });
    }
    return new JsonFileDriver(abs, parsed.map, parsed.fp, options);
  }

  /** Queues a change; resolves when the file holding it is durable, rejects with this change's own error. */
  private enqueue<T>(apply: (map: Map<string, MemoryRecord>) => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      let result = apply(this.view);
      this.pending.push({
        reapply: (map) => {
          result = apply(map);
        },
        done: () => resolve(result),
        fail: reject,
      });
      this.kick();
    });
  }

  private kick(): void {
    if (this.pumping) return;
    this.pumping = this.pump().finally(() => {
      this.pumping = null;
    });
  }

  private async pump(): Promise<void> {
    while (this.pending.length > 0 || this.needsSync) {
      const partial = this.pending.length > this.batchLimit;
      const batch = this.pending.splice(0, this.batchLimit);
      let target: Map<string, MemoryRecord>;
      if (!partial) {
        // Taken in the same tick as the batch: the view is exactly durable + batch here.
        target = new Map(this.view);
      } else {
        target = new Map(this.durable);
        for (const m of [...batch]) {
          try {
            m.reapply(target);
          } catch (err) {
            m.fail(err);
            batch.splice(batch.indexOf(m), 1);
          }
        }
      }
      const progressed = await this.flush(batch, target);
      // The view still holds the whole queue as computed before the split: recompute it on what is now durable.
      if (partial) this.rebuildView();
      // A flush carrying no change (re-writing a merge) that failed is retried with the next write, not in a loop.
      if (!progressed && batch.length === 0) break;
    }
  }

  /** Rebuilds the view as durable + still-queued changes; a change that no longer applies gets its own error. */
  private rebuildView(): void {
    const view = new Map(this.durable);
    this.pending = this.pending.filter((m) => {
      try {
        m.reapply(view);
        return true;
      } catch (err) {
        m.fail(err);
        return false;
      }
    });
    this.view = view;
  }

  private commitDurable(next: Map<string, MemoryRecord>): void {
    const prev = this.durable;
    const touch = (id: string) => {
      const before = prev.get(id) ?? null;
      const after = next.get(id) ?? null;
      if (before === after) return;
      const ring = this.versions.get(id) ?? [before];
      ring.push(after);
      if (ring.length > VERSIONS_KEPT) ring.splice(0, ring.length - VERSIONS_KEPT);
      this.versions.set(id, ring);
    };
    for (const id of prev.keys()) touch(id);
    for (const id of next.keys()) if (!prev.has(id)) touch(id);
    this.durable = next;
  }

  /** Returns whether anything changed on disk or in durable state (false: a failure with nothing done). */
  private async flush(batch: Mutation[], target: Map<string, MemoryRecord>): Promise<boolean> {
    try {
      const current = await statFp(this.file);
      if (!sameFp(current, this.fp)) {
        const changed = await this.absorbMain('before-write');
        if (changed) {
          for (const m of batch) m.fail(changed);
          this.rebuildView();
          return true;
        }
        // The file was touched but holds what chatmem has: write as planned.
      }
      const oldFp = this.fp;
      const outcome = await this.swapIn(serializeParts(target));
      if (outcome.kind === 'raced') {
        // Another program created the file in the instant it did not exist: nothing of ours was written.
        await this.checkPrev(outcome.prev, oldFp);
        const changed = await this.absorbMain('during-write');
        const err =
          changed ??
          new StoreError('E_STORE_CONFLICT', `${this.file} was replaced by another program while chatmem wrote it; this write was not applied. Retry the write.`);
        for (const m of batch) m.fail(err);
        this.rebuildView();
        return true;
      }
      this.fp = outcome.fp;
      this.commitDurable(target);
      for (const m of batch) m.done();
      this.batchLimit = Infinity;
      // The file now holds every merge taken over so far: outside files kept only until then can go.
      this.needsSync = false;
      for (const f of this.removeWhenSynced.splice(0)) await fsp.rm(f, { force: true });
      await this.checkPrev(outcome.prev, oldFp);
      return true;
    } catch (caught) {
      if (caught instanceof WriteFailure && batch.length > 1) {
        // Writes coalesced into one file write share its failure only as long as needed: one write too large
        // for the disk must not take the others down. Halve the batch until the failing write is alone.
        this.pending.unshift(...batch);
        this.batchLimit = Math.ceil(batch.length / 2);
        return true;
      }
      const err = caught instanceof WriteFailure ? caught.cause : caught;
      const e = isChatmemError(err) ? err : new StoreError('E_STORE_WRITE', `cannot write ${this.file}: ${(err as Error).message}`, { cause: err });
      for (const m of batch) m.fail(e);
      this.batchLimit = Infinity;
      this.rebuildView();
      return false;
    }
  }

  /**
   * Replaces the file with `text` without ever replacing a file chatmem has not seen (see the class comment).
   * `prev` is where the old file went (null when there was none): the caller checks it.
   */
  private async swapIn(text: string): Promise<{ kind: 'done'; fp: Fingerprint; prev: string | null } | { kind: 'raced'; prev: string | null }> {
    const dir = path.dirname(this.file);
    await ensurePrivateDir(dir);
    const tmp = tempNameFor(this.file);
    let written: Fingerprint;
    const fh = await io.open(tmp, 'wx', FILE_MODE);
    try {
      await io.writeAll(fh, tmp, text);
      await io.sync(fh, tmp);
      written = fingerprint(await fh.stat({ bigint: true }));
    } catch (err) {
      await fh.close().catch(() => undefined);
      await fsp.rm(tmp, { force: true });
      // Only a failure before the file is touched may be retried in parts (see flush).
      throw new WriteFailure(err);
    }
    await io.close(fh, tmp);
    let prev: string | null = null;
    try {
      if (this.fp !== null) {
        prev = prevNameFor(this.file);
        try {
          await io.rename(this.file, prev);
        } catch (err) {
          // Deleted by another program since the check: there is nothing to move away.
          if (errnoCode(err) !== 'ENOENT') throw err;
          prev = null;
        }
      }
      try {
        await io.link(tmp, this.file);
      } catch (err) {
        if (errnoCode(err) === 'EEXIST') return { kind: 'raced', prev };
        // Put the old file back the same careful way (link, not rename), so a file created meanwhile survives.
        if (prev !== null) {
          await io.link(prev, this.file).then(
            () => fsp.rm(prev ?? '', { force: true }),
            () => undefined,
          );
          prev = null;
        }
        throw err;
      }
    } finally {
      await fsp.rm(tmp, { force: true });
    }
    await fsyncDir(dir);
    const now = await statFp(this.file);
    // Another program may already have written the new file between the link and this stat: then keep a
    // fingerprint that cannot match, so the next flush reads the file instead of taking that write as ours.
    const fp = now !== null && sameContent(now, written) ? now : { ...written, ctimeNs: -1n };
    return { kind: 'done', fp, prev };
  }

  /** The moved-away old file: removed when nobody wrote into it, else kept aside and merged. */
  private async checkPrev(prev: string | null, expected: Fingerprint | null): Promise<void> {
    if (prev === null) return;
    const st = await statFp(prev);
    if (st === null) return;
    if (sameContent(st, expected)) {
      await fsp.rm(prev, { force: true });
      return;
    }
    const kept = await keepAside(this.file, prev);
    let parsed: Parsed;
    try {
      parsed = await parseSettled(kept);
    } catch (err) {
      // The write is acknowledged already (or refused as raced, whatever this says): no caller would see an
      // error thrown from here, so the kept copy is reported either way, never left behind unmentioned.
      const unparsable = isChatmemError(err) && err.code === 'E_STORE_PARSE';
      const what = unparsable ? 'what it wrote does not parse' : `its file could not be read (${(err as Error).message})`;
      this.tell(
        { when: 'during-write', adopted: 0, conflicts: 0, kept, unparsable },
        `another program wrote ${this.file} while chatmem replaced it, and ${what}; kept untouched at ${kept}`,
      );
      return;
    }
    const r = this.merge(parsed);
    this.commitDurable(r.merged);
    this.rebuildView();
    if (r.changedDurable) this.needsSync = true;
    const all = r.conflicts === 0;
    if (all && this.needsSync) this.removeWhenSynced.push(kept);
    else if (all) await fsp.rm(kept, { force: true });
    this.tell(
      { when: 'during-write', adopted: r.adopted, conflicts: r.conflicts, kept: all ? null : kept, unparsable: false },
      all
        ? `another program wrote ${this.file} while chatmem replaced it; its changes were taken over (${r.adopted} user(s))`
        : `another program wrote ${this.file} while chatmem replaced it; ${r.adopted} user(s) taken over, ${r.conflicts} not (chatmem's version kept); its file is kept at ${kept}`,
    );
  }

  /**
   * Reads the file another program changed and merges it into durable state. Returns the error for the
   * changes of the current flush (E_STORE_CONFLICT), or null when the file holds what chatmem has.
   * Throws E_STORE_PARSE (file untouched) when it stays unparsable.
   */
  private async absorbMain(when: OutsideChange['when']): Promise<StoreError | null> {
    const parsed = await parseSettled(this.file, true);
    const r = this.merge(parsed);
    if (!r.changedDurable && !r.differsFromFile) {
      this.fp = parsed.fp;
      return null;
    }
    let kept: string | null = null;
    if (r.conflicts > 0 && parsed.bytes !== null) kept = await writeAside(this.file, parsed.bytes);
    this.commitDurable(r.merged);
    this.fp = parsed.fp;
    if (r.differsFromFile) this.needsSync = true;
    const what = parsed.fp === null ? 'deleted' : 'changed';
    const message =
      r.conflicts === 0
        ? `${this.file} was ${what} by another program; chatmem took over its changes (${r.adopted} user(s)) and did not apply this write. Retry the write.`
        : `${this.file} was ${what} by another program; ${r.adopted} user(s) taken over, ${r.conflicts} not (chatmem's version kept)${kept ? `; its version is kept at ${kept}` : ''}. This write was not applied. Retry the write.`;
    this.tell({ when, adopted: r.adopted, conflicts: r.conflicts, kept, unparsable: false }, message);
    return new StoreError('E_STORE_CONFLICT', message, { details: { file: this.file, kept, adopted: r.adopted, conflicts: r.conflicts } });
  }

  private tell(change: OutsideChange, message: string): void {
    this.report.push(change);
    // One in, at most one out: the report never holds more than 1,000.
    if (this.report.length > 1000) this.report.shift();
    try {
      this.onOutsideChange(change, message);
    } catch {
      // A failing observer must not turn a handled outside change into a failed write.
    }
  }

  private knownVersions(id: string): (MemoryRecord | null)[] {
    return this.versions.get(id) ?? [this.durable.get(id) ?? null];
  }

  /**
   * Merges another program's version of the file into durable state, user by user, never losing a
   * version chatmem made durable (acknowledged writes):
   * - equal to chatmem's, or equal to an older version chatmem wrote (a stale copy carried by a
   *   read-modify-write that started before chatmem's last flush): chatmem's stays;
   * - a user chatmem never had: taken over;
   * - changed, with the same `updated_at` as exactly one version chatmem wrote (the version it was
   *   edited from): taken over if that base is chatmem's latest, else merged field by field when the
   *   fields chatmem changed since and the fields the other program changed do not overlap;
   * - anything else (a user missing from the file, an edit whose base is unknown or overlapping) is a
   *   conflict: chatmem's version stays, and the caller keeps the other program's file aside.
   *   Deletions go through chatmem's guarded operations, which back up first.
   */
  private merge(parsed: Parsed): { merged: Map<string, MemoryRecord>; adopted: number; conflicts: number; changedDurable: boolean; differsFromFile: boolean } {
    const merged = new Map<string, MemoryRecord>();
    let adopted = 0;
    let conflicts = 0;
    let changedDurable = false;
    let differsFromFile = false;
    const outside = parsed.map;
    const decide = (id: string): MemoryRecord | null => {
      const d = this.durable.get(id) ?? null;
      const o = outside.get(id) ?? null;
      // A record written without timestamps (a script adding a user) got the time of each reading: compare it
      // with the timestamps of the version it is compared to, or it would never look equal to itself.
      const matches = (k: MemoryRecord | null): boolean => sameAsRead(k, o, parsed.untimed.get(id));
      if (matches(d)) return d;
      const known = this.knownVersions(id);
      if (known.some(matches)) return d;
      if (o === null) {
        conflicts++;
        return d;
      }
      if (d === null) {
        if (known.every((k) => k === null)) {
          adopted++;
          return o;
        }
        conflicts++;
        return d;
      }
      const bases = known.filter((k): k is MemoryRecord => k !== null && k.updated_at === o.updated_at);
      const base = bases.length > 0 && bases.every((b) => sameRecord(b, bases[0] ?? null)) ? bases[0] : undefined;
      if (base === undefined) {
        conflicts++;
        return d;
      }
      if (sameRecord(base, d)) {
        adopted++;
        return o;
      }
      const m = threeWay(id, base, d, o);
      if (m === null) {
        conflicts++;
        return d;
      }
      adopted++;
      return m;
    };
    const ids = [...this.durable.keys(), ...[...outside.keys()].filter((id) => !this.durable.has(id))];
    for (const id of ids) {
      const r = decide(id);
      if (r !== null) merged.set(id, r);
      if (r !== (this.durable.get(id) ?? null)) changedDurable = true;
      // Up to the timestamps filled in at reading: else a file still without them would differ from chatmem at
      // every later reading (a second on), and a mere touch of it would refuse the next write as a conflict.
      if (!sameAsRead(r, outside.get(id) ?? null, parsed.untimed.get(id))) differsFromFile = true;
    }
    return { merged, adopted, conflicts, changedDurable, differsFromFile };
  }

  async get(id: string): Promise<MemoryRecord | null> {
    return this.view.get(id) ?? null;
  }

  async update(id: string, fn: (current: MemoryRecord | null) => MemoryRecord): Promise<MemoryRecord> {
    return this.enqueue((map) => {
      const next = admit(id, fn(map.get(id) ?? null), { detach: true });
      map.set(id, next);
      return next;
    });
  }

  async count(): Promise<number> {
    return this.view.size;
  }

  private sortedIds(): string[] {
    return [...this.view.keys()].sort(compareIds);
  }

  async list(options: { cursor: string | null; limit: number }): Promise<UserSummary[]> {
    const ids = this.sortedIds().filter((id) => options.cursor === null || compareIds(id, options.cursor) > 0);
    return ids.slice(0, options.limit).map((id) => this.view.get(id)).filter((r): r is MemoryRecord => r !== undefined).map(summarize);
  }

  /**
   * Records are replaced, never mutated, so holding the references taken here is a snapshot. Kept beside
   * scanJson as the core's fast path: the records are in memory already, parsed (see BENCHMARKS.md).
   */
  async *scan(options: ScanOptions = {}): AsyncGenerator<MemoryRecord> {
    const after = options.after;
    const snapshot = [...this.view.entries()]
      .filter(([id]) => after === undefined || compareIds(id, after) > 0)
      .sort((a, b) => compareIds(a[0], b[0]));
    for (const [, record] of snapshot) yield record;
  }

  scanJson(options: ScanOptions = {}): AsyncIterable<[string, string]> {
    return stringifyScan(this.scan(options));
  }

  async stats(): Promise<StoreStats> {
    let messages = 0;
    let bytes = 0;
    let last: string | null = null;
    for (const r of this.view.values()) {
      messages += r.history.length;
      bytes += serialized.get(r)?.bytes ?? 0;
      if (last === null || r.updated_at > last) last = r.updated_at;
    }
    return { users: this.view.size, messages, bytes, lastUpdate: last };
  }

  /** A plain scan: the JSON store is for small stores. */
  async search(query: string, limit: number): Promise<UserSummary[]> {
    const prefix = isPrefixQuery(query);
    const needle = query.toLowerCase();
    const out: UserSummary[] = [];
    for (const id of this.sortedIds()) {
      const r = this.view.get(id);
      if (!r) continue;
      if (prefix ? id.startsWith(query) : searchText(r).includes(needle)) out.push(summarize(r));
      if (out.length >= limit) break;
    }
    return out;
  }

  async exclusive<T>(_scope: ExclusiveScope, fn: (ctx: DriverContext) => Promise<T>): Promise<T> {
    // One transaction: computed on a copy, so a change that throws (or a record that cannot be serialised) leaves nothing behind.
    const mutate = (change: (map: Map<string, MemoryRecord>) => number): Promise<number> =>
      this.enqueue((map) => {
        const copy = new Map(map);
        const n = change(copy);
        map.clear();
        for (const [k, v] of copy) map.set(k, v);
        return n;
      });
    const ctx: DriverContext = {
      getMany: async (ids) => ids.map((id) => this.view.get(id)).filter((r): r is MemoryRecord => r !== undefined),
      scan: (options) => this.scan(options),
      scanJson: (options) => this.scanJson(options),
      count: () => this.count(),
      delete: (ids) => mutate((m) => ids.reduce((n, id) => n + (m.delete(id) ? 1 : 0), 0)),
      clear: () =>
        mutate((m) => {
          const n = m.size;
          m.clear();
          return n;
        }),
      // Detached like update's records: what a read returns is what the file holds (-0 reads back 0).
      putMany: async (records) => {
        await mutate((m) => {
          for (const r of records) m.set(r.user_id, admit(r.user_id, r, { detach: true }));
          return records.length;
        });
      },
      // The whole store lives in memory already; one atomic file write makes the change all-or-nothing.
      putAll: async (records) => {
        const fresh = new Map<string, MemoryRecord>();
        let read = 0;
        for await (const r of records) {
          // Admitted here too: unadmitted records counted 0 bytes in stats until a restart, and one that
          // cannot be serialised failed the file write as E_STORE_WRITE instead of being refused as itself.
          fresh.set(r.user_id, admit(r.user_id, r, { detach: true }));
          read++;
        }
        await mutate((m) => {
          for (const [k, v] of fresh) m.set(k, v);
          return fresh.size;
        });
        return read;
      },
      putAndDelete: async (records, ids) => {
        await mutate((m) => {
          for (const r of records) m.set(r.user_id, admit(r.user_id, r, { detach: true }));
          for (const id of ids) m.delete(id);
          return records.length;
        });
      },
      replaceAll: async (records) => {
        const fresh = new Map<string, MemoryRecord>();
        for await (const r of records) fresh.set(r.user_id, admit(r.user_id, r, { detach: true }));
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
    while (this.pumping) await this.pumping;
    // A merge that restored chatmem's versions over another program's stale copies is only in memory until written.
    if (this.needsSync) {
      this.kick();
      while (this.pumping) await this.pumping;
    }
  }
}

function serializeParts(map: Map<string, MemoryRecord>): string {
  const parts: string[] = [];
  for (const [id, record] of map) parts.push(partFor(id, record));
  return joinParts(parts);
}

/** Top-level three-way merge of one user; null when both sides changed the same field differently. */
function threeWay(id: string, base: MemoryRecord, ours: MemoryRecord, theirs: MemoryRecord): MemoryRecord | null {
  const keys = new Set([...Object.keys(base), ...Object.keys(ours), ...Object.keys(theirs)]);
  const out: Record<string, unknown> = { ...ours };
  for (const k of keys) {
    const b = JSON.stringify(base[k]);
    const o = JSON.stringify(ours[k]);
    const t = JSON.stringify(theirs[k]);
    if (t === b) continue;
    if (o !== b && o !== t) return null;
    if (k in theirs) out[k] = theirs[k];
    else delete out[k];
  }
  try {
    return admit(id, parseRecord(id, out, undefined, { limits: false }));
  } catch {
    return null;
  }
}
