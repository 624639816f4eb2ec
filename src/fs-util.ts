import { promises as fsp, constants as fsc } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';

/** Private modes: data files hold names, addresses and chats. */
export const FILE_MODE = 0o600;
export const DIR_MODE = 0o700;

/** Creates `dir` (and parents) with mode 0700 when missing. Existing directories keep their mode. */
export async function ensurePrivateDir(dir: string): Promise<void> {
  await fsp.mkdir(dir, { recursive: true, mode: DIR_MODE });
}

/**
 * The three calls whose order makes a write durable, behind one object so tests can observe them
 * (a SIGKILL cannot show a missing fsync). Defaults are plain node:fs; production never replaces them.
 */
export const durableIo = {
  /** fsync an open file; `file` names it for observers. */
  syncFile: (fh: FileHandle, _file: string): Promise<void> => fh.sync(),
  rename: (from: string, to: string): Promise<void> => fsp.rename(from, to),
  /** fsync an open directory; `dir` names it for observers. */
  syncDir: (fh: FileHandle, _dir: string): Promise<void> => fh.sync(),
};

/** fsync a directory so a rename inside it survives power loss. */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await fsp.open(dir, fsc.O_RDONLY);
  try {
    await durableIo.syncDir(fh, dir);
  } finally {
    await fh.close();
  }
}

/** A temp name beside `target`, unique per process and call, recognisable for start-up clean-up. */
export function tempNameFor(target: string): string {
  return path.join(path.dirname(target), `.${path.basename(target)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
}

/** True for names produced by {@link tempNameFor}. */
export function isTempName(name: string): boolean {
  return /^\..+\.\d+\.[0-9a-f]{8}\.tmp$/.test(name);
}

/**
 * Durable atomic replace: write a unique temp file, fsync it, rename over `target`, fsync the directory.
 * A crash leaves either the old or the new content, never a mix.
 */
export async function writeFileAtomic(target: string, data: string | Uint8Array): Promise<void> {
  const tmp = tempNameFor(target);
  const fh = await fsp.open(tmp, 'wx', FILE_MODE);
  try {
    await fh.writeFile(data);
    await durableIo.syncFile(fh, tmp);
  } catch (err) {
    await fh.close().catch(() => undefined);
    await fsp.rm(tmp, { force: true });
    throw err;
  }
  await fh.close();
  try {
    await durableIo.rename(tmp, target);
  } catch (err) {
    await fsp.rm(tmp, { force: true });
    throw err;
  }
  await fsyncDir(path.dirname(target));
}
