import { createWriteStream, promises as fsp, constants as fsc, type WriteStream } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';

/**
 * The file-system calls of the durable write paths (atomic replace, the JSON store's swap, backup
 * writer, manifests, audit append, forget's backup rewrites, the file store's owner claim), in one
 * replaceable object so tests can inject failures at each step or model power loss.
 * Every call names the file it acts on. The defaults are node:fs; nothing else changes behaviour.
 */
export interface FsIo {
  open(file: string, flags: string | number, mode?: number): Promise<FileHandle>;
  /** Writes all of `data` through `fh` (opened on `file`). */
  writeAll(fh: FileHandle, file: string, data: string | Uint8Array): Promise<void>;
  /** One `write()` call; may write fewer bytes than asked. */
  writeSome(fh: FileHandle, file: string, buf: Uint8Array): Promise<{ bytesWritten: number }>;
  sync(fh: FileHandle, file: string): Promise<void>;
  close(fh: FileHandle, file: string): Promise<void>;
  /** Creates `file` with `data` (flags and mode as fs.writeFile). */
  writeFile(file: string, data: string | Uint8Array, options: { flag: string; mode: number }): Promise<void>;
  createWriteStream(file: string, options: { flags: string; mode: number }): WriteStream;
  rename(from: string, to: string): Promise<void>;
  link(existing: string, to: string): Promise<void>;
  /** fsync of a directory, so entries created, renamed or removed in it survive power loss. */
  fsyncDir(dir: string): Promise<void>;
}

/** node:fs, unchanged. */
export const defaultFsIo: Readonly<FsIo> = Object.freeze({
  open: (file: string, flags: string | number, mode?: number) => fsp.open(file, flags, mode),
  writeAll: (fh: FileHandle, _file: string, data: string | Uint8Array) => fh.writeFile(data),
  writeSome: (fh: FileHandle, _file: string, buf: Uint8Array) => fh.write(buf, 0, buf.length),
  sync: (fh: FileHandle) => fh.sync(),
  close: (fh: FileHandle) => fh.close(),
  writeFile: (file: string, data: string | Uint8Array, options: { flag: string; mode: number }) => fsp.writeFile(file, data, options),
  createWriteStream: (file: string, options: { flags: string; mode: number }) => createWriteStream(file, options),
  rename: (from: string, to: string) => fsp.rename(from, to),
  link: (existing: string, to: string) => fsp.link(existing, to),
  fsyncDir: async (dir: string) => {
    const fh = await fsp.open(dir, fsc.O_RDONLY);
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  },
});

/** The calls in use; read at each call, so {@link setFsIo} takes effect at once. */
export const io: FsIo = { ...defaultFsIo };

/** Replaces some calls (tests only); returns a function that puts the previous ones back. */
export function setFsIo(overrides: Partial<FsIo>): () => void {
  const previous = { ...io };
  Object.assign(io, overrides);
  return () => {
    Object.assign(io, previous);
  };
}

/** Back to node:fs. */
export function resetFsIo(): void {
  Object.assign(io, defaultFsIo);
}
