import { createHash } from 'node:crypto';
import { createReadStream, promises as fsp } from 'node:fs';
import { once } from 'node:events';
import { finished } from 'node:stream/promises';
import { hostname } from 'node:os';
import * as path from 'node:path';
import { BackupError, errnoCode } from '../errors.js';
import { ensurePrivateDir, FILE_MODE, fsyncDir, writeFileAtomic } from '../fs-util.js';
import { io } from '../fsio.js';
import { compareIds } from '../record.js';
import type { BackupReason } from './manifest.js';
import { hasJsonBatches, type JsonByteBatch, type JsonByteScan } from '../store/types.js';

/*
 * A backup of the whole store taken for a change of the whole store (clear, full restore), in parts, so
 * that writes wait only for a short exclusive section:
 *
 *   1. a snapshot is copied while writes go on, fsynced, re-read and checked  (`.parts-<op>.snapshot`)
 *   2. rounds of "users changed since", also while writes go on              (`.parts-<op>.delta-<k>`)
 *   3. in the exclusive section: the users changed since the last round, written with a checksum,
 *      fsynced and renamed into place (`.parts-<op>.sealed`): from here the pre-image is on disk and
 *      checked, so the store's change may commit
 *   4. after the section: the final backup (parts merged, the usual format and manifest) is written,
 *      verified and published, then the parts go.
 *
 * The parts manifest (`.parts-<op>.json`) names the parts and their checksums. Start-up recovery
 * ({@link finishParts}) removes unsealed parts (the change never ran) and finishes sealed ones into the
 * final backup: a kill anywhere after the seal loses nothing.
 */

const PREFIX = '.parts-';

/** A part file: `JSON(user_id) TAB JSON(record) NL` lines in user_id order; `null` for a user gone since. */
export interface PartInfo {
  file: string;
  users: number;
  bytes: number;
  sha256: string;
}

export interface PartsManifest {
  format: 'chatmem-parts';
  formatVersion: 1;
  /** The audit operation the final backup belongs to. */
  op: string;
  reason: BackupReason;
  /** Store URL for the final backup's manifest. */
  source: string;
  created_at: string;
  writer: { pid: number; host: string };
  /** Null while the snapshot is being copied (the manifest comes first, so the writer is known). */
  snapshot: PartInfo | null;
  deltas: PartInfo[];
}

/** The seal's first line; the changed users' lines follow. */
interface SealHeader {
  format: 'chatmem-parts-seal';
  op: string;
  snapshotSha256: string;
  deltas: number;
  users: number;
  bytes: number;
  sha256: string;
}

const partName = (op: string, what: string) => `${PREFIX}${op}.${what}`;

/** The op id of a parts file name, or null. */
export function partsOp(name: string): string | null {
  const m = /^\.parts-([0-9A-Za-z-]+)\.(json|sealed|snapshot|delta-\d+)$/.exec(name);
  return m ? (m[1] as string) : null;
}

function line(id: string, text: string | null): string {
  return JSON.stringify(id) + '\t' + (text ?? 'null') + '\n';
}

// The part lines of a batch of stored bytes: what `line` makes of each, in one buffer.
function partLinesOf(b: JsonByteBatch): Buffer {
  const keys = b.ids.map((id) => JSON.stringify(id));
  let size = 0;
  for (let i = 0; i < keys.length; i++) size += Buffer.byteLength(keys[i] as string, 'utf8') + 2 + (b.data[i] as Buffer).length;
  const buf = Buffer.allocUnsafe(size);
  let off = 0;
  for (let i = 0; i < keys.length; i++) {
    off += buf.write(keys[i] as string, off, 'utf8');
    buf[off++] = 9;
    off += (b.data[i] as Buffer).copy(buf, off);
    buf[off++] = 10;
  }
  return buf;
}

/** Writes a part file (`wx`), fsyncs it, re-reads it and checks the digest. */
async function writePart(
  dir: string,
  name: string,
  entries: AsyncIterable<[string, string | null]> | Iterable<[string, string | null]> | (AsyncIterable<[string, string]> & JsonByteScan),
): Promise<PartInfo> {
  const file = path.join(dir, name);
  const hash = createHash('sha256');
  let users = 0;
  let bytes = 0;
  const out = io.createWriteStream(file, { flags: 'wx', mode: FILE_MODE });
  out.on('error', () => undefined);
  try {
    await once(out, 'open');
    let batch = '';
    const flush = async (): Promise<void> => {
      const buf = Buffer.from(batch, 'utf8');
      batch = '';
      hash.update(buf);
      bytes += buf.length;
      if (!out.write(buf)) await once(out, 'drain');
    };
    if (hasJsonBatches(entries)) {
      // The store's stored bytes (the snapshot of a clear at 1M users: ~2 GB): lines built straight into
      // one buffer per ~1 MB batch, and written while the next batch is read.
      let writing: Promise<void> = Promise.resolve();
      for await (const b of entries.jsonBatches()) {
        const buf = partLinesOf(b);
        users += b.ids.length;
        hash.update(buf);
        bytes += buf.length;
        await writing;
        if (!out.write(buf)) writing = once(out, 'drain').then(() => undefined);
      }
      await writing;
    } else {
      for await (const [id, text] of entries) {
        batch += line(id, text);
        users++;
        if (batch.length >= 1 << 20) await flush();
      }
    }
    await flush();
    out.end();
    await finished(out);
    const fh = await io.open(file, 'r+');
    try {
      await io.sync(fh, file);
    } finally {
      await io.close(fh, file);
    }
    const info = { file: name, users, bytes, sha256: hash.digest('hex') };
    await checkPart(dir, info);
    return info;
  } catch (err) {
    out.destroy();
    await fsp.rm(file, { force: true }).catch(() => undefined);
    if (err instanceof BackupError) throw err;
    throw new BackupError('E_BACKUP_WRITE', `cannot write backup part ${file}: ${(err as Error).message}`, { cause: err });
  }
}

async function digestFile(file: string): Promise<{ sha256: string; bytes: number; lines: number }> {
  const hash = createHash('sha256');
  let bytes = 0;
  let lines = 0;
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) {
    hash.update(chunk);
    bytes += chunk.length;
    for (let i = chunk.indexOf(10); i !== -1; i = chunk.indexOf(10, i + 1)) lines++;
  }
  return { sha256: hash.digest('hex'), bytes, lines };
}

async function checkPart(dir: string, info: PartInfo): Promise<void> {
  const d = await digestFile(path.join(dir, info.file));
  if (d.sha256 !== info.sha256 || d.bytes !== info.bytes || d.lines !== info.users) {
    throw new BackupError('E_BACKUP_VERIFY', `backup part ${info.file} did not verify: wrote ${info.users} lines (sha256 ${info.sha256}), read back ${d.lines} (sha256 ${d.sha256})`);
  }
}

async function* partLines(file: string): AsyncGenerator<[string, string | null]> {
  let rest: Buffer = Buffer.alloc(0);
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) {
    const buf = rest.length > 0 ? Buffer.concat([rest, chunk]) : chunk;
    let start = 0;
    for (let nl = buf.indexOf(10, start); nl !== -1; nl = buf.indexOf(10, start)) {
      const tab = buf.indexOf(9, start);
      if (tab === -1 || tab > nl) throw new BackupError('E_BACKUP_READ', `backup part ${file} has a line without a user id`);
      const text = buf.toString('utf8', tab + 1, nl);
      yield [JSON.parse(buf.toString('utf8', start, tab)) as string, text === 'null' ? null : text];
      start = nl + 1;
    }
    rest = buf.subarray(start);
  }
  if (rest.length > 0) throw new BackupError('E_BACKUP_READ', `backup part ${file} ends in the middle of a line`);
}

/**
 * Merges sorted `[user_id, JSON | null]` streams; for an id in several, the last stream's value wins
 * (null: the user is gone). Yields the live users in user_id order: what `writeBackup` takes.
 */
export async function* mergeSorted(sources: AsyncIterable<[string, string | null]>[]): AsyncGenerator<[string, string]> {
  const its = sources.map((s) => s[Symbol.asyncIterator]());
  const heads: ([string, string | null] | null)[] = [];
  for (const it of its) {
    const r = await it.next();
    heads.push(r.done ? null : r.value);
  }
  for (;;) {
    let min: string | null = null;
    for (const h of heads) if (h && (min === null || compareIds(h[0], min) < 0)) min = h[0];
    if (min === null) return;
    let value: string | null = null;
    for (let i = 0; i < heads.length; i++) {
      const h = heads[i];
      if (!h || h[0] !== min) continue;
      value = h[1];
      const r = await (its[i] as AsyncIterator<[string, string | null]>).next();
      heads[i] = r.done ? null : r.value;
    }
    if (value !== null) yield [min, value];
  }
}

async function* fromSorted(entries: [string, string | null][]): AsyncGenerator<[string, string | null]> {
  yield* entries;
}

/** A sealed parts set, read back: the final backup's content is `entries()`. */
export interface SealedParts {
  manifest: PartsManifest;
  seal: SealHeader;
  entries(): AsyncGenerator<[string, string]>;
}

async function readSeal(dir: string, manifest: PartsManifest): Promise<{ header: SealHeader; lines: [string, string | null][] } | null> {
  let text: string;
  try {
    text = await fsp.readFile(path.join(dir, partName(manifest.op, 'sealed')), 'utf8');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return null;
    throw err;
  }
  const nl = text.indexOf('\n');
  const header = JSON.parse(text.slice(0, nl)) as SealHeader;
  const body = text.slice(nl + 1);
  const buf = Buffer.from(body, 'utf8');
  const sha = createHash('sha256').update(buf).digest('hex');
  const lines: [string, string | null][] = [];
  for (const l of body.split('\n')) {
    if (l === '') continue;
    const tab = l.indexOf('\t');
    const t = l.slice(tab + 1);
    lines.push([JSON.parse(l.slice(0, tab)) as string, t === 'null' ? null : t]);
  }
  if (
    header.format !== 'chatmem-parts-seal' ||
    header.op !== manifest.op ||
    header.snapshotSha256 !== manifest.snapshot?.sha256 ||
    header.deltas !== manifest.deltas.length ||
    header.sha256 !== sha ||
    header.bytes !== buf.length ||
    header.users !== lines.length
  ) {
    throw new BackupError('E_BACKUP_VERIFY', `backup parts of ${manifest.op}: the seal does not match its content or its parts`);
  }
  return { header, lines };
}

/**
 * One two-phase backup in progress, written by this process. Every part is durable and checked
 * before the next step; {@link seal} is the step after which the store's change may commit.
 */
export class PartsWriter {
  private manifest: PartsManifest | null = null;
  private sealLines: [string, string | null][] | null = null;
  private sealHeader: SealHeader | null = null;

  constructor(
    readonly dir: string,
    readonly op: string,
    private readonly meta: { reason: BackupReason; source: string },
  ) {}

  private async writeManifest(m: PartsManifest): Promise<void> {
    await durable(path.join(this.dir, partName(this.op, 'json')), JSON.stringify(m, null, 2) + '\n');
    this.manifest = m;
  }

  /** Phase 1: a snapshot of the whole store, `[user_id, JSON]` in user_id order, copied while writes go on. */
  async snapshot(entries: AsyncIterable<[string, string]>): Promise<void> {
    await ensurePrivateDir(this.dir);
    const m: PartsManifest = {
      format: 'chatmem-parts',
      formatVersion: 1,
      op: this.op,
      reason: this.meta.reason,
      source: this.meta.source,
      created_at: new Date().toISOString(),
      writer: { pid: process.pid, host: hostname() },
      snapshot: null,
      deltas: [],
    };
    await this.writeManifest(m);
    const snapshot = await writePart(this.dir, partName(this.op, 'snapshot'), entries);
    await this.writeManifest({ ...m, snapshot });
  }

  /** A round of changed users (current JSON, or null when gone), still while writes go on. */
  async delta(changes: Map<string, string | null>): Promise<void> {
    const m = this.need();
    const name = partName(this.op, `delta-${m.deltas.length + 1}`);
    const info = await writePart(this.dir, name, fromSorted(sortChanges(changes)));
    await this.writeManifest({ ...m, deltas: [...m.deltas, info] });
  }

  /**
   * In the exclusive section: the users changed since the last round, written with their checksum,
   * fsynced, renamed into place (directory fsynced) and read back. Once this returns the pre-image of
   * the change is on disk and checked: the change may commit, and a kill from here on is finished at
   * the next start.
   */
  async seal(changes: Map<string, string | null>): Promise<void> {
    const m = this.need();
    const lines = sortChanges(changes);
    const body = Buffer.from(lines.map(([id, t]) => line(id, t)).join(''), 'utf8');
    const header: SealHeader = {
      format: 'chatmem-parts-seal',
      op: this.op,
      snapshotSha256: m.snapshot?.sha256 ?? '',
      deltas: m.deltas.length,
      users: lines.length,
      bytes: body.length,
      sha256: createHash('sha256').update(body).digest('hex'),
    };
    await durable(path.join(this.dir, partName(this.op, 'sealed')), Buffer.concat([Buffer.from(JSON.stringify(header) + '\n'), body]));
    const back = await readSeal(this.dir, m);
    if (!back) throw new BackupError('E_BACKUP_VERIFY', `backup parts of ${this.op}: the seal is not on disk after writing it`);
    this.sealLines = back.lines;
    this.sealHeader = back.header;
  }

  /** The final backup's content: the snapshot with every round and the seal applied. */
  sealed(): SealedParts {
    const m = this.need();
    if (!this.sealLines || !this.sealHeader) throw new BackupError('E_BACKUP_WRITE', `backup parts of ${this.op} are not sealed`);
    return partsEntries(this.dir, m, this.sealHeader, this.sealLines);
  }

  /** Removes every part (after the final backup is published, or when the change did not commit). */
  async remove(): Promise<void> {
    await removeParts(this.dir, this.op);
  }

  private need(): PartsManifest & { snapshot: PartInfo } {
    if (!this.manifest?.snapshot) throw new BackupError('E_BACKUP_WRITE', `backup parts of ${this.op}: no snapshot yet`);
    return this.manifest as PartsManifest & { snapshot: PartInfo };
  }
}

async function durable(file: string, data: string | Buffer): Promise<void> {
  try {
    await writeFileAtomic(file, data);
  } catch (err) {
    throw new BackupError('E_BACKUP_WRITE', `cannot write backup part ${file}: ${(err as Error).message}`, { cause: err });
  }
}

function partsEntries(dir: string, m: PartsManifest & { snapshot: PartInfo }, seal: SealHeader, sealLines: [string, string | null][]): SealedParts {
  const files = [m.snapshot.file, ...m.deltas.map((d) => d.file)].map((f) => path.join(dir, f));
  return {
    manifest: m,
    seal,
    entries: () => {
      const rows = mergeSorted([...files.map((f) => partLines(f)), fromSorted(sealLines)]);
      // The final backup takes the parts' bytes as they are (BENCHMARKS.md, "Full backup at the disk's rate").
      return Object.assign(rows, { jsonBatches: () => mergeBatches([...files.map((f) => new FileCursor(f)), new ArrayCursor(sealLines)]) });
    },
  };
}

/** A position in sorted `[user_id, JSON bytes | null]` lines; `id` and `data` are the current line's. */
interface Cursor {
  id: string;
  data: Buffer | null;
  /** Moves to the next line; false at the end. */
  advance(): Promise<boolean>;
}

// A part file's lines, read in 1 MB chunks; `data` is a view of the chunk (no copy, no string).
class FileCursor implements Cursor {
  id = '';
  data: Buffer | null = null;
  private buf: Buffer = Buffer.alloc(0);
  private pos = 0;
  private it: AsyncIterator<Buffer> | null = null;

  constructor(private readonly file: string) {}

  async advance(): Promise<boolean> {
    for (;;) {
      const nl = this.buf.indexOf(10, this.pos);
      if (nl !== -1) {
        const tab = this.buf.indexOf(9, this.pos);
        if (tab === -1 || tab > nl) throw new BackupError('E_BACKUP_READ', `backup part ${this.file} has a line without a user id`);
        this.id = JSON.parse(this.buf.toString('utf8', this.pos, tab)) as string;
        const isNull = nl - tab - 1 === 4 && this.buf.toString('latin1', tab + 1, nl) === 'null';
        this.data = isNull ? null : this.buf.subarray(tab + 1, nl);
        this.pos = nl + 1;
        return true;
      }
      this.it ??= (createReadStream(this.file, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
      const r = await this.it.next();
      if (r.done) {
        if (this.pos < this.buf.length) throw new BackupError('E_BACKUP_READ', `backup part ${this.file} ends in the middle of a line`);
        return false;
      }
      this.buf = this.pos < this.buf.length ? Buffer.concat([this.buf.subarray(this.pos), r.value]) : r.value;
      this.pos = 0;
    }
  }
}

class ArrayCursor implements Cursor {
  id = '';
  data: Buffer | null = null;
  private i = 0;
  constructor(private readonly lines: [string, string | null][]) {}
  async advance(): Promise<boolean> {
    const l = this.lines[this.i++];
    if (!l) return false;
    this.id = l[0];
    this.data = l[1] === null ? null : Buffer.from(l[1], 'utf8');
    return true;
  }
}

/** {@link mergeSorted} over byte cursors, as batches of about 1 MB: the last cursor's line wins, null drops the user. */
async function* mergeBatches(cursors: Cursor[]): AsyncGenerator<JsonByteBatch> {
  let live: Cursor[] = [];
  for (const c of cursors) if (await c.advance()) live.push(c);
  let batch: JsonByteBatch = { ids: [], data: [], bytes: 0 };
  while (live.length > 0) {
    let min = (live[0] as Cursor).id;
    for (let i = 1; i < live.length; i++) if (compareIds((live[i] as Cursor).id, min) < 0) min = (live[i] as Cursor).id;
    let value: Buffer | null = null;
    let ended: Cursor[] | null = null;
    // `live` keeps the cursors' order, so the last one holding `min` wins.
    for (const c of live) {
      if (c.id !== min) continue;
      value = c.data;
      if (!(await c.advance())) (ended ??= []).push(c);
    }
    if (ended) live = live.filter((c) => !ended.includes(c));
    if (value !== null) {
      batch.ids.push(min);
      batch.data.push(value);
      batch.bytes += value.length;
      if (batch.bytes >= 1 << 20) {
        yield batch;
        batch = { ids: [], data: [], bytes: 0 };
      }
    }
  }
  if (batch.ids.length > 0) yield batch;
}

function sortChanges(changes: Map<string, string | null>): [string, string | null][] {
  return [...changes.entries()].sort((a, b) => compareIds(a[0], b[0]));
}

/** The seal first: without it the rest reads as "never committed"; then the manifest, then the data. */
async function removeParts(dir: string, op: string): Promise<void> {
  await fsp.rm(path.join(dir, partName(op, 'sealed')), { force: true });
  await fsp.rm(path.join(dir, partName(op, 'json')), { force: true });
  const names = await fsp.readdir(dir).catch(() => [] as string[]);
  for (const n of names) if (partsOp(n) === op) await fsp.rm(path.join(dir, n), { force: true });
  await fsyncDir(dir).catch(() => undefined);
}

export interface PartsReport {
  /** Unsealed parts of a dead writer (its change never committed): removed. */
  removedUnsealed: string[];
  /** Sealed parts whose final backup was already published: removed. */
  removedPublished: string[];
  /** Sealed parts finished into their final backup now (backup ids). */
  finished: string[];
  /** Sealed parts that could not be finished (a part fails its checksum): kept, never removed. */
  kept: { op: string; code: string; message: string }[];
}

/**
 * Start-up recovery of two-phase backups whose writer is gone. Sealed parts (the change may have
 * committed) become the final backup through `write` (unless `published(op)` says it exists), then go;
 * unsealed ones go. Parts that do not verify are kept for an operator: they may be the only copy.
 * `listed` is the directory's listing when the caller has one.
 */
export async function finishParts(
  dir: string,
  alive: (pid: number, host: string) => boolean,
  published: (op: string) => Promise<boolean>,
  write: (parts: SealedParts) => Promise<string>,
  listed?: string[],
): Promise<PartsReport> {
  const report: PartsReport = { removedUnsealed: [], removedPublished: [], finished: [], kept: [] };
  let names: string[];
  try {
    // Start-up passes the listing it has just made (nothing before this step renames parts files).
    names = listed ?? (await fsp.readdir(dir));
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return report;
    throw err;
  }
  const ops = new Set(names.map(partsOp).filter((o): o is string => o !== null));
  for (const op of ops) {
    let manifest: PartsManifest | null = null;
    try {
      manifest = JSON.parse(await fsp.readFile(path.join(dir, partName(op, 'json')), 'utf8')) as PartsManifest;
    } catch {
      // None or unreadable (a removal killed half-way; the manifest's own write is atomic).
    }
    if (manifest && alive(manifest.writer.pid, manifest.writer.host)) continue;
    // The manifest is written before any part and removed before them: parts without one are the rest
    // of a removal; a manifest without a snapshot was never sealed.
    const sealExists = await fsp.lstat(path.join(dir, partName(op, 'sealed'))).then(() => true, () => false);
    if (!manifest && sealExists) {
      // The seal goes first on removal, so this manifest was damaged: the parts may be the only pre-image.
      report.kept.push({ op, code: 'E_BACKUP_MANIFEST', message: `backup parts of ${op}: sealed, but the parts manifest is missing or unreadable` });
      continue;
    }
    if (!manifest || !manifest.snapshot) {
      await removeParts(dir, op);
      report.removedUnsealed.push(op);
      continue;
    }
    try {
      const seal = await readSeal(dir, manifest);
      if (!seal) {
        await removeParts(dir, op);
        report.removedUnsealed.push(op);
        continue;
      }
      if (await published(op)) {
        await removeParts(dir, op);
        report.removedPublished.push(op);
        continue;
      }
      const m = manifest as PartsManifest & { snapshot: PartInfo };
      await checkPart(dir, m.snapshot);
      for (const d of m.deltas) await checkPart(dir, d);
      report.finished.push(await write(partsEntries(dir, m, seal.header, seal.lines)));
      await removeParts(dir, op);
    } catch (err) {
      report.kept.push({ op, code: err instanceof BackupError ? err.code : 'E_BACKUP_READ', message: (err as Error).message });
    }
  }
  return report;
}
