import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import { errnoCode, StoreError } from '../errors.js';
import { FILE_MODE } from '../fs-util.js';
import { io } from '../fsio.js';

/** Who holds a file store for writing. */
export interface OwnerInfo {
  pid: number;
  host: string;
  role: 'daemon' | 'cli';
  startedAt: string;
  /** Base URL of the daemon's HTTP API, for role 'daemon'. */
  api?: string;
}

export function ownerFileFor(storeFile: string): string {
  return `${storeFile}.owner`;
}

export function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return errnoCode(err) === 'EPERM';
  }
}

/** The live owner of a file store, or null when none (a stale owner file is ignored). */
export async function readOwner(storeFile: string): Promise<OwnerInfo | null> {
  let text: string;
  try {
    text = await fsp.readFile(ownerFileFor(storeFile), 'utf8');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return null;
    // Opening a store must fail with a catalogued code, not a bare EISDIR or EACCES.
    throw new StoreError('E_STORE_OPEN', `cannot read ${ownerFileFor(storeFile)}: ${(err as Error).message}`, { cause: err });
  }
  let info: OwnerInfo;
  try {
    info = JSON.parse(text) as OwnerInfo;
  } catch {
    return null;
  }
  if (info.host !== os.hostname()) return info;
  return isProcessAlive(info.pid) && info.pid !== process.pid ? info : null;
}

export interface OwnerLock {
  readonly file: string;
  release(): Promise<void>;
}

/**
 * Claims a SQLite or JSON store for this process. Only one process writes a file store:
 * the seed's bot and its scripts raced on memory.json, and its cache overwrote their edits.
 */
export async function acquireOwner(storeFile: string, info: Omit<OwnerInfo, 'pid' | 'host' | 'startedAt'>): Promise<OwnerLock> {
  const file = ownerFileFor(storeFile);
  const mine: OwnerInfo = { pid: process.pid, host: os.hostname(), startedAt: new Date().toISOString(), ...info };
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      // Through the seam: a test makes the owner file reappear before each exclusive create, the race
      // the three attempts are for.
      await io.writeFile(file, JSON.stringify(mine) + '\n', { flag: 'wx', mode: FILE_MODE });
      return {
        file,
        release: async () => {
          const current = await fsp.readFile(file, 'utf8').catch(() => '');
          if (current.includes(`"pid":${process.pid},`)) await fsp.rm(file, { force: true });
        },
      };
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') throw new StoreError('E_STORE_OPEN', `cannot create ${file}: directory missing`, { cause: err });
      if (errnoCode(err) !== 'EEXIST') throw new StoreError('E_STORE_OPEN', `cannot create ${file}: ${(err as Error).message}`, { cause: err });
    }
    const owner = await readOwner(storeFile);
    if (owner) {
      const what = owner.role === 'daemon' ? `a chatmem daemon (pid ${owner.pid}${owner.api ? `, ${owner.api}` : ''})` : `another chatmem command (pid ${owner.pid})`;
      throw new StoreError('E_STORE_LOCKED', `${storeFile} is in use by ${what}; wait for it or run the command through the daemon`, {
        details: { owner },
      });
    }
    // Stale: its process is gone.
    await fsp.rm(file, { force: true });
  }
  throw new StoreError('E_STORE_LOCKED', `could not claim ${storeFile}: its owner file keeps changing`);
}
