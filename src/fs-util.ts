import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { io } from './fsio.js';

/** Private modes: data files hold names, addresses and chats. */
export const FILE_MODE = 0o600;
export const DIR_MODE = 0o700;

/** Creates `dir` (and parents) with mode 0700 when missing. Existing directories keep their mode. */
export async function ensurePrivateDir(dir: string): Promise<void> {
  await fsp.mkdir(dir, { recursive: true, mode: DIR_MODE });
}

/** fsync a directory so a rename inside it survives power loss. */
export async function fsyncDir(dir: string): Promise<void> {
  await io.fsyncDir(dir);
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
  const fh = await io.open(tmp, 'wx', FILE_MODE);
  try {
    await io.writeAll(fh, tmp, data);
    await io.sync(fh, tmp);
  } catch (err) {
    await fh.close().catch(() => undefined);
    await fsp.rm(tmp, { force: true });
    throw err;
  }
  await io.close(fh, tmp);
  try {
    await io.rename(tmp, target);
  } catch (err) {
    await fsp.rm(tmp, { force: true });
    throw err;
  }
  await fsyncDir(path.dirname(target));
}
