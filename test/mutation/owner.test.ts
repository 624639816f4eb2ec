// The promises of src/store/owner.ts: one process at a time writes a file store. A live owner (another
// process here, or any process on another host) refuses the claim and is named; a dead or unreadable
// owner file is taken over; the owner file is 0600 and says who holds the store; release removes only
// one's own claim. Real files and a real second process.
import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultFsIo, setFsIo } from '../../src/fsio.js';
import { acquireOwner, isProcessAlive, ownerFileFor, readOwner, type OwnerInfo } from '../../src/store/owner.js';
import { tempDir } from '../helpers/tmp.js';

describe('file store owner', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let other: ChildProcess;
  let otherPid: number;
  let deadPid: number;
  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir('chatmem-owner-'));
    other = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 600000)'], { stdio: 'ignore' });
    otherPid = other.pid ?? 0;
    const gone = spawn(process.execPath, ['-e', ''], { stdio: 'ignore' });
    deadPid = gone.pid ?? 0;
    await new Promise((resolve) => gone.on('exit', resolve));
  });
  afterAll(async () => {
    other.kill('SIGKILL');
    await cleanup();
  });

  let n = 0;
  const store = () => path.join(dir, `s${n++}.db`);
  const writeOwner = (file: string, info: Partial<OwnerInfo>) =>
    fsp.writeFile(ownerFileFor(file), JSON.stringify({ pid: otherPid, host: os.hostname(), role: 'cli', startedAt: '2026-11-30T00:00:00.000Z', ...info }) + '\n');

  it('isProcessAlive: a running process is, an exited one is not', () => {
    expect(isProcessAlive(process.pid)).toBe(true);
    expect(isProcessAlive(otherPid)).toBe(true);
    expect(isProcessAlive(deadPid)).toBe(false);
  });

  it('the claim is a 0600 file beside the store naming this process; release removes it', async () => {
    const file = store();
    expect(ownerFileFor(file)).toBe(`${file}.owner`);
    const before = Date.now();
    const lock = await acquireOwner(file, { role: 'daemon', api: 'http://127.0.0.1:8787' });
    expect(lock.file).toBe(`${file}.owner`);
    expect((await fsp.stat(lock.file)).mode & 0o777).toBe(0o600);
    const text = await fsp.readFile(lock.file, 'utf8');
    expect(text.endsWith('}\n')).toBe(true);
    const info = JSON.parse(text) as OwnerInfo;
    expect(info).toEqual({ pid: process.pid, host: os.hostname(), startedAt: expect.any(String), role: 'daemon', api: 'http://127.0.0.1:8787' });
    expect(Date.parse(info.startedAt)).toBeGreaterThanOrEqual(before - 1);
    expect(Date.parse(info.startedAt)).toBeLessThanOrEqual(Date.now());
    // This process's own claim is no other owner.
    expect(await readOwner(file)).toBeNull();
    await lock.release();
    await expect(fsp.stat(lock.file)).rejects.toMatchObject({ code: 'ENOENT' });
    // Twice, or after someone removed it: nothing to do.
    await lock.release();
  });

  it('release leaves a claim that is no longer its own', async () => {
    const file = store();
    const lock = await acquireOwner(file, { role: 'cli' });
    await writeOwner(file, { pid: otherPid });
    await lock.release();
    expect(await readOwner(file)).toMatchObject({ pid: otherPid });
    // A pid that merely starts with this one's digits is another process too.
    await writeOwner(file, { pid: Number(`${process.pid}1`) });
    await lock.release();
    expect(JSON.parse(await fsp.readFile(ownerFileFor(file), 'utf8'))).toMatchObject({ pid: Number(`${process.pid}1`) });
  });

  it('a live owner refuses the claim and is named: a daemon with its address, a command with its pid', async () => {
    const file = store();
    await writeOwner(file, { role: 'daemon', api: 'http://127.0.0.1:9999' });
    await expect(acquireOwner(file, { role: 'cli' })).rejects.toMatchObject({
      code: 'E_STORE_LOCKED',
      message: `${file} is in use by a chatmem daemon (pid ${otherPid}, http://127.0.0.1:9999); wait for it or run the command through the daemon`,
      details: { owner: { pid: otherPid, role: 'daemon', api: 'http://127.0.0.1:9999' } },
    });
    await writeOwner(file, { role: 'daemon' });
    await expect(acquireOwner(file, { role: 'cli' })).rejects.toMatchObject({ message: `${file} is in use by a chatmem daemon (pid ${otherPid}); wait for it or run the command through the daemon` });
    await writeOwner(file, { role: 'cli' });
    await expect(acquireOwner(file, { role: 'cli' })).rejects.toMatchObject({ message: `${file} is in use by another chatmem command (pid ${otherPid}); wait for it or run the command through the daemon` });
    // The owner file is left as it was.
    expect(await readOwner(file)).toMatchObject({ pid: otherPid, role: 'cli' });
  });

  it('an owner on another host is taken as live whatever its pid', async () => {
    const file = store();
    await writeOwner(file, { pid: deadPid, host: `${os.hostname()}-other` });
    expect(await readOwner(file)).toMatchObject({ pid: deadPid });
    await expect(acquireOwner(file, { role: 'cli' })).rejects.toMatchObject({ code: 'E_STORE_LOCKED' });
  });

  it('a dead owner, an unreadable owner file, or this process itself: the claim is taken over', async () => {
    for (const content of [JSON.stringify({ pid: deadPid, host: os.hostname(), role: 'daemon', startedAt: 'x' }), '{"pid":', '', JSON.stringify({ pid: process.pid, host: os.hostname(), role: 'cli', startedAt: 'x' })]) {
      const file = store();
      await fsp.writeFile(ownerFileFor(file), content);
      if (content !== '') expect(await readOwner(file)).toBeNull();
      const lock = await acquireOwner(file, { role: 'cli' });
      expect(JSON.parse(await fsp.readFile(lock.file, 'utf8'))).toMatchObject({ pid: process.pid, role: 'cli' });
      await lock.release();
    }
  });

  it('no owner file: no owner', async () => {
    expect(await readOwner(store())).toBeNull();
  });

  it('a missing directory or an unusable path is E_STORE_OPEN with the reason, the error kept as cause', async () => {
    const missing = path.join(dir, 'no-such-dir', 'x.db');
    await expect(acquireOwner(missing, { role: 'cli' })).rejects.toMatchObject({
      code: 'E_STORE_OPEN',
      message: `cannot create ${missing}.owner: directory missing`,
      cause: { code: 'ENOENT' },
    });
    const plain = path.join(dir, 'plain-file');
    await fsp.writeFile(plain, 'x');
    const under = path.join(plain, 'x.db');
    const err = (await acquireOwner(under, { role: 'cli' }).catch((e: unknown) => e)) as Error & { code: string; cause: { code: string } };
    expect(err.code).toBe('E_STORE_OPEN');
    expect(err.message).toMatch(new RegExp(`^cannot create ${under.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}\\.owner: ENOTDIR`));
    expect(err.cause.code).toBe('ENOTDIR');
  });

  it('an owner file that cannot be read is E_STORE_OPEN, never a bare file system error', async () => {
    const plain = path.join(dir, 'plain-file-2');
    await fsp.writeFile(plain, 'x');
    await expect(readOwner(path.join(plain, 'x.db'))).rejects.toMatchObject({
      code: 'E_STORE_OPEN',
      message: `cannot read ${path.join(plain, 'x.db')}.owner: ENOTDIR: not a directory, open '${path.join(plain, 'x.db')}.owner'`,
      cause: { code: 'ENOTDIR' },
    });
    // The owner file is a directory: the claim fails the same way (before the fix: a bare EISDIR).
    const file = store();
    await fsp.mkdir(ownerFileFor(file));
    await expect(acquireOwner(file, { role: 'cli' })).rejects.toMatchObject({ code: 'E_STORE_OPEN', cause: { code: 'EISDIR' } });
  });

  it('an owner file that reappears after each stale removal: three attempts, then E_STORE_LOCKED; a claim won on the third stands', async () => {
    for (const [races, wins] of [
      [Infinity, false],
      [2, true],
    ] as const) {
      const file = store();
      let attempts = 0;
      // Another starter's stale claim lands right before each exclusive create (a dead pid: it is removed).
      const restore = setFsIo({
        writeFile: async (f, data, options) => {
          if (f === ownerFileFor(file) && ++attempts <= races) await fsp.writeFile(f, JSON.stringify({ pid: deadPid, host: os.hostname(), role: 'cli', startedAt: 'x' }) + '\n');
          return defaultFsIo.writeFile(f, data, options);
        },
      });
      try {
        if (wins) {
          const lock = await acquireOwner(file, { role: 'cli' });
          expect(JSON.parse(await fsp.readFile(lock.file, 'utf8'))).toMatchObject({ pid: process.pid });
          await lock.release();
        } else {
          await expect(acquireOwner(file, { role: 'cli' })).rejects.toMatchObject({ code: 'E_STORE_LOCKED', message: `could not claim ${file}: its owner file keeps changing` });
        }
      } finally {
        restore();
      }
      expect(attempts).toBe(3);
    }
  });
});
