import { execFileSync } from 'node:child_process';
import { appendFileSync, closeSync, mkdirSync, openSync, readdirSync, statSync, writeSync } from 'node:fs';
import * as path from 'node:path';
import { isTempName } from '../../src/fs-util.js';

/**
 * Mounts a real tmpfs of `size` at `dir`/`name`. Needs root (CI runs as root); otherwise returns
 * why not, and the caller skips with that message.
 */
export function mountTmpfs(dir: string, name: string, size: string): { mnt: string; unmount: () => void } | { skip: string } {
  const mnt = path.join(dir, name);
  mkdirSync(mnt, { recursive: true });
  if (process.getuid?.() !== 0) return { skip: 'not root: cannot mount a tmpfs to fill the disk (CI runs as root)' };
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'tmpfs', mnt], { stdio: 'pipe' });
  } catch (err) {
    return { skip: `cannot mount a tmpfs at ${mnt}: ${(err as Error).message}` };
  }
  return { mnt, unmount: () => execFileSync('umount', ['-l', mnt], { stdio: 'ignore' }) };
}

/** Writes `file` until the filesystem says ENOSPC: after this, anything needing a new page fails. */
export function fillDisk(file: string): number {
  const fd = openSync(file, 'a');
  const chunk = Buffer.alloc(4096, 0x61);
  let written = 0;
  try {
    for (;;) written += writeSync(fd, chunk);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
  } finally {
    closeSync(fd);
  }
  return written;
}

/**
 * Appends one valid audit entry (action `test-padding`) sized so the log's length becomes
 * `want` modulo 4096: tmpfs allocates whole pages, so this sets how many bytes still fit in the
 * log's last page once the disk is full.
 */
export function padAuditLog(file: string, want: number): void {
  let size = 0;
  try {
    size = statSync(file).size;
  } catch {
    size = 0;
  }
  const head = { id: `pad-${Date.now()}`, op: `pad-${Date.now()}`, time: new Date().toISOString(), actor: { kind: 'os', name: 'test' }, action: 'test-padding', outcome: 'refused', details: { pad: '' } };
  const baseLen = Buffer.byteLength(JSON.stringify(head)) + 1;
  let need = (((want - size) % 4096) + 4096) % 4096;
  while (need < baseLen) need += 4096;
  head.details.pad = 'x'.repeat(need - baseLen);
  appendFileSync(file, JSON.stringify(head) + '\n');
}

/** Temp files (from tempNameFor) anywhere under `dir`. */
export function tempFilesUnder(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    let names: string[];
    try {
      names = readdirSync(d);
    } catch {
      return;
    }
    for (const n of names) {
      const p = path.join(d, n);
      if (isTempName(n)) out.push(p);
      try {
        if (statSync(p).isDirectory()) walk(p);
      } catch {
        // gone meanwhile
      }
    }
  };
  walk(dir);
  return out;
}
