// The last of src/store/json-file.ts's promises that the first four files did not reach (RELIABILITY.md,
// "Mutants left, and why", json-file.ts, "Not killed yet"): a writer between two chunks of one read (an
// in-place edit that puts the mtime back, a rename-writer during the pinned read, a file that never holds
// still), the report's cap of 1,000 outside changes, a moved-away copy that cannot be read back, a
// fully taken-over copy kept until the merge is durable, a queued change that no longer applies after
// an outside change, and one that throws when re-applied after a split. Real files in a temp dir; the
// steps between two chunks through the store's internal `readHooks`, the others through the src/fsio.ts
// seam; each injected step checked to have run.
import { existsSync, readdirSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { serializeSeed } from '../../src/format/seed.js';
import { defaultFsIo, resetFsIo, setFsIo } from '../../src/fsio.js';
import type { MemoryRecord } from '../../src/record.js';
import { readHooks, type OutsideChange } from '../../src/store/json-file.js';
import { isTmp, jsonFileRoot, openJson, readData, rec, T0, refuseWritesHolding, writeInPlace } from '../helpers/json-file.js';

const { freshFile } = jsonFileRoot('chatmem-jsonrare-');
const open = openJson;

afterEach(() => {
  resetFsIo();
  delete readHooks.onChunk;
});

const errOf = async (p: Promise<unknown>) =>
  p.then(
    () => null,
    (e: unknown) => e as { code: string; message: string; cause?: { message?: string }; details: { kept: string | null; adopted: number; conflicts: number } },
  );

const names = (file: string) => readdirSync(path.dirname(file)).sort();
const isPrev = (p: string) => p.endsWith('.prev');
const isOutside = (name: string) => name.startsWith('memory.json.outside-');

/** A user whose record alone is larger than one read chunk (64 KiB), so a read of the file takes several. */
const bulky = (id: string) => rec(id, { history: Array.from({ length: 80 }, (_, i) => ({ role: 'user', text: `${i} ${'x'.repeat(2_000)}`, ts: T0 })) });

// A whole second: utimes with it restores an mtime exactly (a Date keeps only milliseconds).
const SECOND = 1_700_000_000;

/**
 * Waits (busy, at most a second) until the file system's clock has moved past `ctimeNs`: ctimes come from
 * a coarse clock (a few ms a tick), and a change within the same tick as the stat before it would leave
 * the ctime equal, so the test would not be about the ctime at all.
 */
function pastCtime(dir: string, ctimeNs: bigint): void {
  const probe = path.join(dir, 'clock-probe');
  const deadline = Date.now() + 1_000;
  for (;;) {
    writeFileSync(probe, '');
    if (statSync(probe, { bigint: true }).ctimeNs > ctimeNs) break;
    if (Date.now() > deadline) throw new Error('the file system clock did not move for a second');
  }
}

/** A rename-writer (temp + os.replace): a new inode at the file's name. */
function writeByRename(file: string, text: string): void {
  const tmp = `${file}.script-tmp`;
  writeFileSync(tmp, text);
  renameSync(tmp, file);
}

describe('a writer between two chunks of one read', () => {
  it('open: a same-size edit whose writer put the mtime back (only the ctime moved) is read again, not taken as read', async () => {
    const file = freshFile([['a', rec('a')], ['big', bulky('big')]]);
    utimesSync(file, SECOND, SECOND);
    const before = statSync(file, { bigint: true });
    expect(before.size).toBeGreaterThan(2n * 65_536n);
    const edited = readFileSync(file, 'utf8').replace('"name": "A"', '"name": "Q"');
    expect(edited.length).toBe(Number(before.size));
    let chunks = 0;
    let hits = 0;
    readHooks.onChunk = (f) => {
      if (f !== file) return;
      // After the first chunk of the first read: the rest of the file is still to be read.
      if (chunks++ === 0) {
        hits++;
        pastCtime(path.dirname(file), before.ctimeNs);
        writeFileSync(file, edited);
        utimesSync(file, SECOND, SECOND);
      }
    };
    const o = await open(file);
    expect(hits).toBe(1);
    const now = statSync(file, { bigint: true });
    // Inode, size and mtime as before: the ctime alone tells that the file changed during the read.
    expect([now.ino, now.size, now.mtimeNs]).toEqual([before.ino, before.size, before.mtimeNs]);
    expect(now.ctimeNs).not.toBe(before.ctimeNs);
    // Read twice, whole (64 KiB chunks): what the file holds now, not what the first read saw.
    expect(chunks).toBe(2 * Math.ceil(Number(before.size) / 65_536));
    expect((await o.store.get('a'))?.name).toBe('Q');
    // And taken as the file's state: the next write keeps the edit and reports no outside change.
    await o.store.put('b', { name: 'B' });
    expect(readData(file).a?.name).toBe('Q');
    expect(o.changes).toEqual([]);
    await o.store.close();
  });

  it("a rename-writer replacing the file during the pinned read: what was read is the pinned inode's, the replacement is found by the next write", async () => {
    const file = freshFile([['a', rec('a')]]);
    const o = await open(file);
    writeInPlace(file, serializeSeed([['a', rec('a')], ['big', bulky('big')], ['n', rec('n')]]));
    let pinnedReads = 0;
    setFsIo({
      link: async (from, to) => {
        if (from === file && isTmp(to)) pinnedReads++;
        return defaultFsIo.link(from, to);
      },
    });
    let hits = 0;
    readHooks.onChunk = (f) => {
      if (f !== file || hits > 0) return;
      hits++;
      // The replacement unlinks the pinned inode's name, which moves that inode's ctime (not its content):
      // the clock must have moved past the link's ctime for that to show.
      pastCtime(path.dirname(file), statSync(file, { bigint: true }).ctimeNs);
      writeByRename(file, serializeSeed([['a', rec('a')], ['big', bulky('big')], ['n', rec('n')], ['m', rec('m')]]));
    };
    const first = await errOf(o.store.put('b', { name: 'B' }));
    expect(hits).toBe(1);
    // One read: the pinned inode did not change while read (only its ctime did, by the replacement's unlink).
    expect(pinnedReads).toBe(1);
    expect(first).toMatchObject({ code: 'E_STORE_CONFLICT', details: { adopted: 2, conflicts: 0 } });
    expect(await o.store.get('m')).toBeNull();
    // m arrived after the read: found by the next write, not overwritten.
    const second = await errOf(o.store.put('b', { name: 'B' }));
    expect(second).toMatchObject({ code: 'E_STORE_CONFLICT', details: { adopted: 1, conflicts: 0 } });
    await o.store.put('b', { name: 'B' });
    expect(Object.keys(readData(file)).sort()).toEqual(['a', 'b', 'big', 'm', 'n']);
    await o.store.close();
  });

  it('a file written during every read is refused with "keeps changing", the cause naming the change during the read', async () => {
    const file = freshFile([['a', rec('a')]]);
    const o = await open(file);
    const versions = [serializeSeed([['a', rec('a', { name: 'A1' })]]), serializeSeed([['a', rec('a', { name: 'A2' })]])];
    writeInPlace(file, versions[0] ?? '');
    let reads = 0;
    readHooks.onChunk = (f) => {
      if (f !== file) return;
      // Same length each time, so no read mixes into something unparsable: only the change itself is seen.
      writeInPlace(file, versions[++reads % 2] ?? '');
    };
    const err = await errOf(o.store.put('b', { name: 'B' }));
    expect(reads).toBe(8);
    expect(err).toMatchObject({ code: 'E_STORE_PARSE', message: `${file} keeps changing; another program is writing it` });
    expect(err?.cause?.message).toBe(`${file} changed while being read`);
    expect(readFileSync(file, 'utf8')).toBe(versions[0]);
    expect(await o.store.get('b')).toBeNull();
    await o.store.close();
  });
});

describe("the report's cap", () => {
  it('keeps the last 1,000 outside changes: the 1,001st pushes out the first', async () => {
    const file = freshFile([['a', rec('a')]]);
    const o = await open(file);
    for (let i = 0; i < 1_001; i++) {
      // A script deleting the file: a missing from it, a conflict each time; chatmem writes the file back.
      rmSync(file);
      const err = await errOf(o.store.put('b', { name: 'B' }));
      if (err?.code !== 'E_STORE_CONFLICT') throw new Error(`change ${i}: ${err?.code ?? 'written'}`);
      // The driver's close only waits for its queue (here: that write-back); the driver stays usable.
      await o.driver.close();
    }
    expect(o.changes).toHaveLength(1_001);
    expect(o.driver.report).toHaveLength(1_000);
    expect(Object.keys(readData(file))).toEqual(['a']);
    // The oldest went, in order; the same objects as reported to the observer.
    expect(o.driver.report[0]).toBe(o.changes[1]?.change);
    expect(o.driver.report[999]).toBe(o.changes[1_000]?.change);
    await o.store.close();
  }, 60_000);
});

describe('a moved-away copy another program wrote into that cannot be read back', () => {
  it('the acknowledged write stands, and the kept copy is reported with the read error (not as unparsable, not silently)', async () => {
    const file = freshFile([['a', rec('a')]]);
    const o = await open(file);
    let wrote = 0;
    let broke = '';
    setFsIo({
      rename: async (from, to) => {
        if (from === file && isPrev(to) && wrote++ === 0) writeInPlace(file, serializeSeed([['a', rec('a')], ['n', rec('n')]]));
        return defaultFsIo.rename(from, to);
      },
      fsyncDir: async (dir) => {
        await defaultFsIo.fsyncDir(dir);
        // The copy was just kept aside; before chatmem reads it, its name becomes a symlink loop (ELOOP).
        const kept = readdirSync(dir).find(isOutside);
        if (kept !== undefined && broke === '') {
          broke = path.join(dir, kept);
          renameSync(broke, `${broke}.saved`);
          symlinkSync(path.basename(broke), broke);
        }
      },
    });
    await o.store.put('b', { name: 'B' });
    await o.driver.close();
    expect(wrote).toBe(1);
    expect(broke).not.toBe('');
    const change: OutsideChange = { when: 'during-write', adopted: 0, conflicts: 0, kept: broke, unparsable: false };
    expect(o.changes.map((c) => c.change)).toEqual([change]);
    expect(o.changes[0]?.message).toMatch(new RegExp(`^another program wrote ${file} while chatmem replaced it, and its file could not be read \\(.*ELOOP.*\\); kept untouched at ${broke}$`));
    expect(o.driver.report).toEqual([change]);
    // Nothing of it was taken over (it was not read); chatmem's acknowledged write is in the file.
    expect(Object.keys(readData(file)).sort()).toEqual(['a', 'b']);
    expect(Object.keys(readData(`${broke}.saved`)).sort()).toEqual(['a', 'n']);
  });
});

describe('an outside copy fully taken over during the swap', () => {
  it('stays on disk until chatmem\'s file holds the merge: a write-back that fails leaves it, the next one removes it', async () => {
    const file = freshFile([['a', rec('a')]]);
    const o = await open(file);
    let wrote = 0;
    let refused = 0;
    setFsIo({
      rename: async (from, to) => {
        if (from === file && isPrev(to) && wrote++ === 0) writeInPlace(file, serializeSeed([['a', rec('a')], ['n', rec('n')]]));
        return defaultFsIo.rename(from, to);
      },
      writeAll: async (fh, f, data) => {
        // The write-back of the merge (the only write holding n) finds the disk full.
        if (isTmp(f) && String(data).includes('"n"')) {
          refused++;
          throw Object.assign(new Error('ENOSPC: injected'), { code: 'ENOSPC' });
        }
        return defaultFsIo.writeAll(fh, f, data);
      },
    });
    await o.store.put('b', { name: 'B' });
    // close waits for the write-back, and tries it once more: both refused.
    await o.driver.close();
    expect(wrote).toBe(1);
    expect(refused).toBe(2);
    expect(o.changes.map((c) => c.change)).toEqual([{ when: 'during-write', adopted: 1, conflicts: 0, kept: null, unparsable: false }]);
    expect(Object.keys(readData(file)).sort()).toEqual(['a', 'b']);
    // n is in memory only: its one copy on disk is the kept one.
    expect((await o.store.get('n'))?.name).toBe('N');
    const kept = names(file).filter(isOutside);
    expect(kept).toHaveLength(1);
    expect(Object.keys(readData(path.join(path.dirname(file), kept[0] ?? ''))).sort()).toEqual(['a', 'n']);
    resetFsIo();
    await o.driver.close();
    expect(Object.keys(readData(file)).sort()).toEqual(['a', 'b', 'n']);
    expect(names(file)).toEqual(['memory.json']);
  });
});

describe('a change queued during a flush that no longer applies once an outside change is taken over', () => {
  it('fails with its own error and leaves the queue: no file write for it', async () => {
    const file = freshFile([['a', rec('a')], ['x', rec('x')]]);
    const o = await open(file);
    writeInPlace(file, serializeSeed([['a', rec('a')], ['x', rec('x', { name: 'Outside' })]]));
    let writes = 0;
    // Assigned inside the hook: an object, so the compiler does not take it for null after the call.
    const queued: { p?: ReturnType<typeof errOf> } = {};
    setFsIo({
      open: async (f, flags, mode) => {
        if (isTmp(f)) writes++;
        return defaultFsIo.open(f, flags, mode);
      },
      link: async (from, to) => {
        // The pinned read of the outside edit: a change to x queued now, computed on chatmem's x.
        if (from === file && isTmp(to) && queued.p === undefined) {
          queued.p = errOf(
            o.driver.update('x', (cur) => {
              if (cur?.name === 'Outside') throw new Error('x was renamed by someone else');
              return { ...(cur as MemoryRecord), note: 'mine' };
            }),
          );
        }
        return defaultFsIo.link(from, to);
      },
    });
    const first = await errOf(o.store.put('b', { name: 'B' }));
    expect(first).toMatchObject({ code: 'E_STORE_CONFLICT', details: { adopted: 1 } });
    expect(queued.p).toBeDefined();
    expect((await queued.p)?.message).toBe('x was renamed by someone else');
    await o.driver.close();
    // The file already holds the merge: neither the refused put nor the failed change costs a write.
    expect(writes).toBe(0);
    expect(readData(file).x?.name).toBe('Outside');
    expect(readData(file).x?.note).toBeUndefined();
  });
});

describe('a change that throws when re-applied after a full disk split its batch', () => {
  it('fails with its own error, never acknowledged; the others land', async () => {
    const file = freshFile([['a', rec('a')]]);
    const o = await open(file);
    let refused = 0;
    const held: { release?: () => void } = {};
    const gate = new Promise<void>((resolve) => {
      held.release = resolve;
    });
    let opens = 0;
    setFsIo({
      open: async (f, flags, mode) => {
        // Hold the first write, so the next four are queued behind it and coalesced into one batch.
        if (isTmp(f) && opens++ === 0) await gate;
        return defaultFsIo.open(f, flags, mode);
      },
      writeAll: refuseWritesHolding('TOO BIG', () => refused++),
    });
    const warm = o.store.put('w', { name: 'warm' });
    // Depends on something outside the store (a one-time token, say): applying it a second time throws.
    let calls = 0;
    const once = errOf(
      o.driver.update('t', () => {
        if (++calls > 1) throw new Error('token already spent');
        return rec('t', { name: 'token' }) as unknown as MemoryRecord;
      }),
    );
    const s1 = o.store.put('s1', { name: 'small 1' });
    const big = errOf(o.store.put('big', { name: 'TOO BIG' }));
    const s2 = o.store.put('s2', { name: 'small 2' });
    held.release?.();
    await warm;
    expect((await once)?.message).toBe('token already spent');
    expect(calls).toBe(2);
    expect((await big)?.code).toBe('E_STORE_WRITE');
    expect([(await s1).name, (await s2).name]).toEqual(['small 1', 'small 2']);
    expect(refused).toBeGreaterThan(0);
    expect(Object.keys(readData(file))).toEqual(['a', 'w', 's1', 's2']);
    expect(await o.store.get('t')).toBeNull();
    await o.store.close();
    expect(existsSync(file)).toBe(true);
  });
});
