// Test-side users of the src/fsio.ts seam: an injector of file-system errors at a chosen call, and a
// power-loss model that keeps only what was fsynced (file data) and directory-synced (entries).
import { createWriteStream, promises as fsp, readdirSync, readFileSync, statSync, type WriteStream } from 'node:fs';
import * as path from 'node:path';
import { defaultFsIo, setFsIo, type FsIo } from '../../src/fsio.js';

export type FaultKind = 'EIO' | 'ENOSPC' | 'short';

export function errnoError(code: 'EIO' | 'ENOSPC', what: string): NodeJS.ErrnoException {
  const err: NodeJS.ErrnoException = new Error(`${code}: injected failure, ${what}`);
  err.code = code;
  err.errno = code === 'EIO' ? -5 : -28;
  return err;
}

export interface FaultRule {
  /** The seam call, or 'stream-open' / 'stream-write' for the backup writer's stream. */
  call: keyof FsIo | 'stream-open' | 'stream-write';
  /** Which calls count (the file the call names; for link and rename the source). */
  match: (file: string, flags: string | number | undefined) => boolean;
  /** Fail the nth matching call (1-based); earlier ones go through. */
  nth?: number;
  kind: FaultKind;
}

/**
 * Installs `rule` on the seam. `hits` counts the failures injected: a test whose fault never fired
 * proves nothing, so every test checks it.
 */
export function injectFault(rule: FaultRule): { hits: () => number; restore: () => void } {
  let seen = 0;
  let hits = 0;
  const nth = rule.nth ?? 1;
  const due = (call: FaultRule['call'], file: string, flags?: string | number): boolean => {
    if (call !== rule.call || !rule.match(file, flags)) return false;
    seen++;
    if (seen !== nth) return false;
    hits++;
    return true;
  };
  const fail = (what: string): never => {
    throw errnoError(rule.kind === 'EIO' ? 'EIO' : 'ENOSPC', what);
  };
  const overrides: Partial<FsIo> = {
    open: async (file, flags, mode) => {
      if (due('open', file, flags)) fail(`open ${file}`);
      return defaultFsIo.open(file, flags, mode);
    },
    writeAll: async (fh, file, data) => {
      if (!due('writeAll', file)) return defaultFsIo.writeAll(fh, file, data);
      // A short write: part of the data reaches the file, then the disk is full.
      if (rule.kind === 'short') {
        const buf = typeof data === 'string' ? Buffer.from(data) : data;
        await fh.write(buf, 0, Math.floor(buf.length / 2));
        throw errnoError('ENOSPC', `after a short write to ${file}`);
      }
      return fail(`write ${file}`);
    },
    writeSome: async (fh, file, buf) => {
      if (!due('writeSome', file)) return defaultFsIo.writeSome(fh, file, buf);
      if (rule.kind === 'short') return fh.write(buf, 0, Math.floor(buf.length / 2));
      return fail(`write ${file}`);
    },
    sync: async (fh, file) => {
      if (due('sync', file)) fail(`fsync ${file}`);
      return defaultFsIo.sync(fh, file);
    },
    writeFile: async (file, data, options) => {
      if (!due('writeFile', file)) return defaultFsIo.writeFile(file, data, options);
      if (rule.kind === 'short') {
        const s = typeof data === 'string' ? data : Buffer.from(data).toString();
        await defaultFsIo.writeFile(file, s.slice(0, Math.floor(s.length / 2)), options);
        throw errnoError('ENOSPC', `after a short write to ${file}`);
      }
      return fail(`write ${file}`);
    },
    rename: async (from, to) => {
      if (due('rename', from)) fail(`rename ${from}`);
      return defaultFsIo.rename(from, to);
    },
    link: async (from, to) => {
      if (due('link', from)) fail(`link ${from}`);
      return defaultFsIo.link(from, to);
    },
    fsyncDir: async (dir) => {
      if (due('fsyncDir', dir)) fail(`fsync directory ${dir}`);
      return defaultFsIo.fsyncDir(dir);
    },
    createWriteStream: (file, options) => {
      const out = defaultFsIo.createWriteStream(file, options);
      if (due('stream-open', file)) {
        // The open itself fails: the stream errors before 'open'.
        process.nextTick(() => out.destroy(errnoError(rule.kind === 'EIO' ? 'EIO' : 'ENOSPC', `open ${file}`)));
        return out;
      }
      if (rule.call === 'stream-write' && rule.match(file, options.flags)) return failingStream(out, file, rule.kind, () => due('stream-write', file));
      return out;
    },
  };
  const restore = setFsIo(overrides);
  return { hits: () => hits, restore };
}

// The backup stream: the chosen chunk fails (after half of it is written, for 'short').
function failingStream(out: WriteStream, file: string, kind: FaultKind, due: () => boolean): WriteStream {
  const real = out._write.bind(out);
  const failing = (chunk: Buffer, enc: BufferEncoding, cb: (err?: Error | null) => void): void => {
    if (!due()) return real(chunk, enc, cb);
    if (kind === 'short') {
      real(chunk.subarray(0, Math.floor(chunk.length / 2)), enc, () => cb(errnoError('ENOSPC', `after a short write to ${file}`)));
      return;
    }
    cb(errnoError(kind, `write ${file}`));
  };
  out._write = failing;
  // Without _writev every chunk goes through _write, so the fault lands on exactly one call.
  (out as { _writev?: unknown })._writev = undefined;
  return out;
}

/* ---------- power-loss model ---------- */

interface DurableFile {
  /** Bytes as of the last fsync of this inode; null: never synced (lost at a power cut). */
  data: Buffer | null;
}

/** The file system as a power cut would leave it: name -> content ('' for a file whose data was never synced). */
export type Survivors = Map<string, Buffer>;

/**
 * Models power loss over the directories in `dirs`: a file's data survives only as of its last fsync
 * (tracked per inode, so links and renames share it), a directory entry only as of the last fsync of
 * its directory. Fed by the seam; the real files are written as usual. `skip` makes the seam skip
 * chosen fsyncs (the call still succeeds), to show the checks catch a missing one.
 */
export class PowerLossModel {
  private readonly inodes = new Map<number, DurableFile>();
  /** Directory -> durable entries (name -> inode). */
  private readonly entries = new Map<string, Map<string, number>>();
  readonly events: string[] = [];
  private restoreSeam: (() => void) | null = null;

  constructor(
    private readonly dirs: string[],
    private readonly skip: { sync?: (file: string) => boolean; fsyncDir?: (dir: string) => boolean } = {},
  ) {
    // Whatever exists when the model starts is durable.
    for (const dir of dirs) this.takeDir(dir);
    for (const dir of dirs) for (const [name, ino] of this.entries.get(dir) ?? []) this.inodes.set(ino, { data: readFileSync(path.join(dir, name)) });
  }

  private takeDir(dir: string): void {
    const m = new Map<string, number>();
    let names: string[] = [];
    try {
      names = readdirSync(dir);
    } catch {
      // Not created yet: no durable entries.
    }
    for (const name of names) {
      const st = statSync(path.join(dir, name), { throwIfNoEntry: false });
      if (st?.isFile()) m.set(name, st.ino);
    }
    this.entries.set(dir, m);
  }

  /** Hooks the seam; `onStep` runs after every call, with the call's description (a power cut could come there). */
  install(onStep: (event: string) => Promise<void> | void): void {
    const step = async (event: string): Promise<void> => {
      this.events.push(event);
      await onStep(event);
    };
    const watched = (file: string) => this.dirs.includes(path.dirname(file));
    const overrides: Partial<FsIo> = {
      open: async (file, flags, mode) => {
        const fh = await defaultFsIo.open(file, flags, mode);
        if (watched(file)) await step(`open ${path.basename(file)}`);
        return fh;
      },
      writeAll: async (fh, file, data) => {
        await defaultFsIo.writeAll(fh, file, data);
        if (watched(file)) await step(`write ${path.basename(file)}`);
      },
      writeSome: async (fh, file, buf) => {
        const r = await defaultFsIo.writeSome(fh, file, buf);
        if (watched(file)) await step(`write ${path.basename(file)}`);
        return r;
      },
      sync: async (fh, file) => {
        if (this.skip.sync?.(file)) return;
        await defaultFsIo.sync(fh, file);
        if (!watched(file)) return;
        // Write-only handles cannot be read back: the file is read by name (nothing else writes it meanwhile).
        this.inodes.set((await fh.stat()).ino, { data: await fsp.readFile(file) });
        await step(`fsync ${path.basename(file)}`);
      },
      writeFile: async (file, data, options) => {
        await defaultFsIo.writeFile(file, data, options);
        if (watched(file)) await step(`write ${path.basename(file)}`);
      },
      rename: async (from, to) => {
        await defaultFsIo.rename(from, to);
        if (watched(to)) await step(`rename ${path.basename(from)} -> ${path.basename(to)}`);
      },
      link: async (from, to) => {
        await defaultFsIo.link(from, to);
        if (watched(to)) await step(`link ${path.basename(from)} -> ${path.basename(to)}`);
      },
      fsyncDir: async (dir) => {
        if (this.skip.fsyncDir?.(dir)) return;
        await defaultFsIo.fsyncDir(dir);
        if (!this.dirs.includes(dir)) return;
        this.takeDir(dir);
        await step(`fsync dir ${path.basename(dir)}`);
      },
      createWriteStream: (file, options) => {
        const out = createWriteStream(file, options);
        if (watched(file)) out.once('finish', () => this.events.push(`written ${path.basename(file)}`));
        return out;
      },
    };
    this.restoreSeam = setFsIo(overrides);
  }

  uninstall(): void {
    this.restoreSeam?.();
    this.restoreSeam = null;
  }

  /** What a power cut now would leave in `dir`. */
  survivors(dir: string): Survivors {
    const out: Survivors = new Map();
    for (const [name, ino] of this.entries.get(dir) ?? []) out.set(name, this.inodes.get(ino)?.data ?? Buffer.alloc(0));
    return out;
  }
}

/** Lists a directory's regular files, for before/after comparisons. */
export async function listFiles(dir: string): Promise<string[]> {
  return (await fsp.readdir(dir).catch(() => [] as string[])).sort();
}
