// More of src/store/json-file.ts's promises, for the survivors the first three files left (RELIABILITY.md,
// json-file.ts): the field-by-field merge (an edit both sides made, a stored record over the write
// limits, a user chatmem deleted), that a fully taken-over outside file is neither rewritten nor left
// behind, that the queue keeps running when a write-back meets a further outside change, that close
// waits for the write in flight, how an outside copy is written aside (one try on an I/O error, its
// file closed), and which leftovers open leaves alone. Real files in a temp dir; injected steps through
// the src/fsio.ts seam, each checked to have run.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { serializeSeed } from '../../src/format/seed.js';
import { defaultFsIo, resetFsIo, setFsIo } from '../../src/fsio.js';
import type { MemoryRecord } from '../../src/record.js';
import { JsonFileDriver, type OutsideChange } from '../../src/store/json-file.js';
import { createStore } from '../../src/store/store.js';
import { jsonFileRoot, openJson, readData, rec, T0, writeInPlace } from '../helpers/json-file.js';

const { freshFile } = jsonFileRoot('chatmem-jsonmerge-');
const open = openJson;

afterEach(() => {
  resetFsIo();
  vi.useRealTimers();
});

const errOf = async (p: Promise<unknown>) =>
  p.then(
    () => null,
    (e: unknown) => e as { code: string; message: string; cause?: { code?: string }; details: { kept: string | null; adopted: number; conflicts: number } },
  );

function errno(code: string): NodeJS.ErrnoException {
  const err: NodeJS.ErrnoException = new Error(`${code}: injected`);
  err.code = code;
  return err;
}

const names = (file: string) => readdirSync(path.dirname(file)).sort();
const isTmp = (p: string) => p.endsWith('.tmp');
const isOutside = (p: string) => path.basename(p).startsWith('memory.json.outside-');

/** Resolves with `p`'s value, or with 'stuck' when `p` has not settled within `ms`. */
const within = <T>(p: Promise<T>, ms: number): Promise<T | 'stuck'> =>
  Promise.race([p, new Promise<'stuck'>((resolve) => setTimeout(() => resolve('stuck'), ms))]);

/** Counts the temp files chatmem opens: one per file write. */
function countWrites(): { n: number } {
  const count = { n: 0 };
  setFsIo({
    open: async (f, flags, mode) => {
      if (isTmp(f)) count.n++;
      return defaultFsIo.open(f, flags, mode);
    },
  });
  return count;
}

describe('the field-by-field merge of an edit of an older version', () => {
  it('a field both sides changed to the same value is no overlap: merged, chatmem\'s own changes kept', async () => {
    const file = freshFile([['c', rec('c')]]);
    const o = await open(file);
    const old = readData(file);
    // chatmem: renamed and a turn appended (updated_at moves on from T0).
    await o.driver.update('c', (cur) => ({ ...(cur as MemoryRecord), name: 'Same', history: [{ role: 'user', text: 'turn 1', ts: T0 }], updated_at: '2026-02-01T00:00:00.000Z' }) as MemoryRecord);
    // The script edited the version it read before that (updated_at T0): the same rename, and a field of its own.
    writeInPlace(file, serializeSeed([['c', { ...old.c, name: 'Same', note: 'by script' }]]));
    const err = await errOf(o.store.put('z', { name: 'Z' }));
    expect(err?.code).toBe('E_STORE_CONFLICT');
    expect(err?.details).toMatchObject({ adopted: 1, conflicts: 0, kept: null });
    const c = await o.store.get('c');
    expect(c).toMatchObject({ name: 'Same', note: 'by script', updated_at: '2026-02-01T00:00:00.000Z' });
    expect(c?.history.map((h) => h.text)).toEqual(['turn 1']);
    await o.store.close();
    expect(readData(file).c).toMatchObject({ name: 'Same', note: 'by script' });
  });

  it('a stored record over the write limits (nested deeper than a write may be) is still merged', async () => {
    let deep: Record<string, unknown> = { end: true };
    for (let i = 0; i < 70; i++) deep = { d: deep };
    const file = freshFile([['c', rec('c', { flags: deep })]]);
    const o = await open(file);
    const old = readData(file);
    await o.driver.update('c', (cur) => ({ ...(cur as MemoryRecord), name: 'renamed', updated_at: '2026-02-01T00:00:00.000Z' }) as MemoryRecord);
    writeInPlace(file, serializeSeed([['c', { ...old.c, note: 'by script' }]]));
    const err = await errOf(o.store.put('z', { name: 'Z' }));
    expect(err?.details).toMatchObject({ adopted: 1, conflicts: 0, kept: null });
    expect(await o.store.get('c')).toMatchObject({ name: 'renamed', note: 'by script', flags: deep });
    await o.store.close();
  });
});

describe('a user chatmem deleted, in an edit of an older copy (a conflict)', () => {
  it('stays deleted: not counted, listed or written back, not even as null', async () => {
    const file = freshFile([['a', rec('a')], ['b', rec('b')]]);
    const o = await open(file);
    const before = readData(file);
    await o.driver.exclusive({ ids: ['a'] } as never, (ctx) => ctx.delete(['a']));
    writeInPlace(file, serializeSeed(Object.entries({ ...before, a: { ...before.a, name: 'edited' } })));
    const err = await errOf(o.store.put('c', { name: 'C' }));
    expect(err?.details).toMatchObject({ adopted: 0, conflicts: 1 });
    expect(await o.store.count()).toBe(1);
    expect((await o.store.list({ limit: 10 })).items.map((u) => u.user_id)).toEqual(['b']);
    expect((await o.store.stats()).users).toBe(1);
    await o.store.put('c', { name: 'C' });
    expect(Object.keys(readData(file))).toEqual(['b', 'c']);
    await o.store.close();
  });
});

describe('an outside file that holds everything chatmem has', () => {
  it('found before a write and all taken over: the file is left as the other program wrote it (no write-back)', async () => {
    const file = freshFile([['a', rec('a')]]);
    const o = await open(file);
    // Compact JSON, as a script without indent=2 writes it: a write-back would change its bytes.
    const theirs = JSON.stringify({ ...readData(file), n: rec('n') });
    writeInPlace(file, theirs);
    const writes = countWrites();
    const err = await errOf(o.store.put('b', { name: 'B' }));
    expect(err?.details).toMatchObject({ adopted: 1, conflicts: 0 });
    await o.driver.close();
    expect(writes.n).toBe(0);
    expect(readFileSync(file, 'utf8')).toBe(theirs);
    expect(names(file)).toEqual(['memory.json']);
  });

  it('rewritten unchanged in place at the instant of the swap: reported, its copy removed at once, no second write', async () => {
    const file = freshFile([['a', rec('a')]]);
    const o = await open(file);
    let hits = 0;
    const writes = countWrites();
    setFsIo({
      rename: async (from, to) => {
        // Same bytes, a new mtime: the old inode no longer looks like what chatmem left.
        if (from === file && to.endsWith('.prev') && hits++ === 0) writeInPlace(file, readFileSync(file, 'utf8'));
        return defaultFsIo.rename(from, to);
      },
    });
    await o.store.put('b', { name: 'B' });
    await o.driver.close();
    expect(hits).toBe(1);
    expect(writes.n).toBe(1);
    expect(o.changes.map((c) => c.change)).toEqual([{ when: 'during-write', adopted: 0, conflicts: 0, kept: null, unparsable: false }]);
    expect(names(file)).toEqual(['memory.json']);
    expect(Object.keys(readData(file))).toEqual(['a', 'b']);
  });
});

/**
 * A store whose stale copy of user a forces a write-back with no write of its own (a merge-only write),
 * and, when that first outside change is reported, another program adding user m: the write-back then
 * meets a further outside change.
 */
async function writeBackMeetsAnotherChange(file: string) {
  const changes: OutsideChange[] = [];
  let driver: JsonFileDriver | null = null;
  driver = await JsonFileDriver.open(file, {
    warn: () => undefined,
    onOutsideChange: (change) => {
      changes.push(change);
      if (changes.length === 1 && driver) writeInPlace(file, serializeSeed([...Object.entries(readData(file)), ['m', rec('m')]]));
    },
  });
  const store = createStore(driver);
  const stale = readFileSync(file, 'utf8');
  await store.put('a', { name: 'A2' });
  writeInPlace(file, stale);
  return { driver, store, changes };
}

describe('a write queued while a write-back meets a further outside change', () => {
  it('found before the write-back: the queue keeps running, the queued write lands', async () => {
    const file = freshFile([['a', rec('a')]]);
    const { driver, store, changes } = await writeBackMeetsAnotherChange(file);
    let late: Promise<MemoryRecord> | null = null;
    let pinned = 0;
    setFsIo({
      link: async (from, to) => {
        // The second pinned read is the write-back's: its (empty) batch is taken; a write arrives now.
        if (from === file && isTmp(to) && ++pinned === 2) late = driver.update('late', () => rec('late') as unknown as MemoryRecord);
        return defaultFsIo.link(from, to);
      },
    });
    expect((await errOf(store.put('b', { name: 'B' })))?.code).toBe('E_STORE_CONFLICT');
    while (late === null) await new Promise((resolve) => setTimeout(resolve, 5));
    const landed = await within(late as Promise<MemoryRecord>, 3_000);
    expect(landed === 'stuck' ? 'stuck' : landed.user_id).toBe('late');
    expect(pinned).toBe(2);
    expect(changes.map((c) => [c.when, c.adopted])).toEqual([
      ['before-write', 0],
      ['before-write', 1],
    ]);
    expect(Object.keys(readData(file)).sort()).toEqual(['a', 'late', 'm']);
    expect(readData(file).a?.name).toBe('A2');
    await driver.close();
  });

  it('created in the instant of the write-back\'s swap: the queue keeps running, the queued write lands', async () => {
    const file = freshFile([['a', rec('a')]]);
    const changes: OutsideChange[] = [];
    const driver = await JsonFileDriver.open(file, { warn: () => undefined, onOutsideChange: (c) => changes.push(c) });
    const store = createStore(driver);
    const stale = readFileSync(file, 'utf8');
    await store.put('a', { name: 'A2' });
    writeInPlace(file, stale);
    let late: Promise<MemoryRecord> | null = null;
    let links = 0;
    setFsIo({
      link: async (from, to) => {
        // The write-back moved the file away; another program creates it now, and a write arrives.
        if (to === file && isTmp(from) && links++ === 0) {
          writeFileSync(file, serializeSeed([['a', rec('a', { name: 'A2' })], ['m', rec('m')]]));
          late = driver.update('late', () => rec('late') as unknown as MemoryRecord);
        }
        return defaultFsIo.link(from, to);
      },
    });
    expect((await errOf(store.put('b', { name: 'B' })))?.code).toBe('E_STORE_CONFLICT');
    while (late === null) await new Promise((resolve) => setTimeout(resolve, 5));
    const landed = await within(late as Promise<MemoryRecord>, 3_000);
    expect(links).toBeGreaterThanOrEqual(2);
    expect(landed === 'stuck' ? 'stuck' : landed.user_id).toBe('late');
    expect(changes.map((c) => c.when)).toEqual(['before-write', 'during-write']);
    expect(Object.keys(readData(file)).sort()).toEqual(['a', 'late', 'm']);
    await driver.close();
  });
});

describe('close', () => {
  it('waits for the write in flight: the file holds it when close resolves', async () => {
    const file = freshFile([['a', rec('a')]]);
    const o = await open(file);
    const put = o.store.put('b', { name: 'B' });
    await o.driver.close();
    expect(Object.keys(readData(file))).toEqual(['a', 'b']);
    await put;
  });

  it('a write-back that failed is done by close, and close waits for it', async () => {
    const file = freshFile([['a', rec('a')]]);
    const o = await open(file);
    const stale = readFileSync(file, 'utf8');
    await o.store.put('a', { name: 'A2' });
    writeInPlace(file, stale);
    let refused = 0;
    setFsIo({
      writeAll: async (fh, f, data) => {
        if (isTmp(f) && refused++ === 0) throw errno('EIO');
        return defaultFsIo.writeAll(fh, f, data);
      },
    });
    expect((await errOf(o.store.put('b', { name: 'B' })))?.code).toBe('E_STORE_CONFLICT');
    // Let the failed write-back finish: the queue gives up until the next write.
    while (readdirSync(path.dirname(file)).some(isTmp)) await new Promise((resolve) => setTimeout(resolve, 5));
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(refused).toBe(1);
    expect(readFileSync(file, 'utf8')).toBe(stale);
    await o.driver.close();
    expect(readData(file).a?.name).toBe('A2');
  });
});

describe('an outside copy written aside', () => {
  const conflictSetup = async () => {
    const file = freshFile([['a', rec('a')], ['b', rec('b')]]);
    const o = await open(file);
    const d = readData(file);
    delete d.a;
    const theirs = serializeSeed(Object.entries(d));
    writeInPlace(file, theirs);
    return { file, o, theirs };
  };

  it('is closed once written (its file handle released)', async () => {
    const { o, theirs } = await conflictSetup();
    const closed: string[] = [];
    setFsIo({
      close: async (fh, f) => {
        if (isOutside(f)) closed.push(f);
        return defaultFsIo.close(fh, f);
      },
    });
    const err = await errOf(o.store.put('c', { name: 'C' }));
    expect(err?.details).toMatchObject({ conflicts: 1 });
    expect(closed).toEqual([err?.details.kept]);
    expect(readFileSync(err?.details.kept ?? '', 'utf8')).toBe(theirs);
    await o.store.close();
  });

  it('an I/O error opening its name is not taken for a name in use: one try, the write refused, the file untouched', async () => {
    const { file, o, theirs } = await conflictSetup();
    let opens = 0;
    setFsIo({
      open: async (f, flags, mode) => {
        if (isOutside(f)) {
          opens++;
          throw errno('EIO');
        }
        return defaultFsIo.open(f, flags, mode);
      },
    });
    const err = await errOf(o.store.put('c', { name: 'C' }));
    expect(opens).toBe(1);
    expect(err).toMatchObject({ code: 'E_STORE_WRITE', cause: { code: 'EIO' } });
    expect(readFileSync(file, 'utf8')).toBe(theirs);
    expect(names(file)).toEqual(['memory.json']);
    resetFsIo();
    await o.store.close();
  });

  it('a failed write of it still closes it', async () => {
    const { o } = await conflictSetup();
    const closed: string[] = [];
    let refused = 0;
    setFsIo({
      writeAll: async (fh, f, data) => {
        if (isOutside(f)) {
          refused++;
          throw errno('ENOSPC');
        }
        return defaultFsIo.writeAll(fh, f, data);
      },
      close: async (fh, f) => {
        if (isOutside(f)) closed.push(f);
        return defaultFsIo.close(fh, f);
      },
    });
    const err = await errOf(o.store.put('c', { name: 'C' }));
    expect(refused).toBe(1);
    expect(err).toMatchObject({ code: 'E_STORE_WRITE', cause: { code: 'ENOSPC' } });
    expect(closed).toHaveLength(1);
    resetFsIo();
    await o.store.close();
  });
});

describe('leftovers open leaves alone', () => {
  it('names that only look like a dead chatmem\'s swap leftover: another prefix of the same length, text around the pid or after the suffix', async () => {
    const file = freshFile([['a', rec('a', { name: 'current' })]]);
    const dir = path.dirname(file);
    const dead = spawnSync('true').pid;
    const decoys = [`.memorx.json.${dead}.0123abcd.prev`, `.memory.json.x${dead}.0123abcd.prev`, `.memory.json.${dead}.0123abcd.prev.bak`];
    for (const d of decoys) writeFileSync(path.join(dir, d), serializeSeed([['a', rec('a', { name: d })]]));
    const o = await open(file);
    expect(o.warnings).toEqual([]);
    for (const d of decoys) expect(readData(path.join(dir, d)).a?.name, d).toBe(d);
    expect(names(file)).toEqual([...decoys, 'memory.json'].sort());
    expect((await o.store.get('a'))?.name).toBe('current');
    await o.store.close();
    expect(existsSync(file)).toBe(true);
  });
});

describe('an edit of the latest version, written with its fields in another order', () => {
  it('is taken over as the other program wrote it: no write-back, the file keeps its bytes', async () => {
    const file = freshFile([['a', rec('a', { x: 1, y: 2 })]]);
    const o = await open(file);
    // A script that sorts keys (json.dump(sort_keys=True)) and changes x: chatmem's order of x and y is not its.
    const a = readData(file).a ?? {};
    const sorted = Object.fromEntries(Object.entries({ ...a, x: 10 }).sort(([k1], [k2]) => (k1 < k2 ? -1 : 1)));
    const theirs = serializeSeed([['a', { ...sorted, y: 2 }]]).replace('"x": 10,\n    "y": 2', '"y": 2,\n    "x": 10');
    expect(theirs.indexOf('"y"')).toBeLessThan(theirs.indexOf('"x"'));
    writeInPlace(file, theirs);
    const writes = countWrites();
    const err = await errOf(o.store.put('b', { name: 'B' }));
    expect(err?.details).toMatchObject({ adopted: 1, conflicts: 0 });
    await o.driver.close();
    expect(writes.n).toBe(0);
    expect(readFileSync(file, 'utf8')).toBe(theirs);
    expect((await o.store.get('a'))?.x).toBe(10);
  });
});

describe('the moved-away old file removed by someone else right after the link', () => {
  it('is nothing to check: a write queued meanwhile still lands in the same run of the queue', async () => {
    const file = freshFile([['a', rec('a')]]);
    const o = await open(file);
    const stale = readFileSync(file, 'utf8');
    await o.store.put('a', { name: 'A2' });
    // A stale copy: chatmem's A2 is written back by a write of its own (an empty batch).
    writeInPlace(file, stale);
    let late: Promise<MemoryRecord> | null = null;
    let removed = 0;
    setFsIo({
      link: async (from, to) => {
        await defaultFsIo.link(from, to);
        if (to === file && isTmp(from) && removed === 0) {
          for (const n of readdirSync(path.dirname(file)).filter((x) => x.endsWith('.prev'))) {
            rmSync(path.join(path.dirname(file), n));
            removed++;
          }
          late = o.driver.update('late', () => rec('late') as unknown as MemoryRecord);
        }
      },
    });
    expect((await errOf(o.store.put('b', { name: 'B' })))?.code).toBe('E_STORE_CONFLICT');
    while (late === null) await new Promise((resolve) => setTimeout(resolve, 5));
    expect(removed).toBe(1);
    const landed = await within(late as Promise<MemoryRecord>, 3_000);
    expect(landed === 'stuck' ? 'stuck' : landed.user_id).toBe('late');
    expect(o.changes).toHaveLength(1);
    expect(Object.keys(readData(file))).toEqual(['a', 'late']);
    // The late write's own moved-away file is checked after it resolves: close waits for that.
    await o.driver.close();
    expect(names(file)).toEqual(['memory.json']);
  });
});

describe('what counts as an edit of a user', () => {
  it('a user added without timestamps and edited again later, still without them: the edit is not lost', async () => {
    // The timestamps filled in at reading are the time of each reading: the second reading is a second on.
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(new Date('2026-03-04T05:06:07.000Z'));
    const file = freshFile([['a', rec('a')]]);
    const o = await open(file);
    const data = { ...readData(file), n: { user_id: 'n', name: 'N' } };
    writeInPlace(file, serializeSeed(Object.entries(data)));
    expect((await errOf(o.store.put('b', { name: 'B' })))?.details).toMatchObject({ adopted: 1, conflicts: 0 });
    vi.setSystemTime(new Date('2026-03-04T05:06:09.000Z'));
    const theirs = serializeSeed(Object.entries({ ...data, n: { user_id: 'n', name: 'N2' } }));
    writeInPlace(file, theirs);
    // No version chatmem wrote has the edit's updated_at (it has none): not taken over, but kept aside, never overwritten.
    const err = await errOf(o.store.put('b', { name: 'B' }));
    expect(err?.code).toBe('E_STORE_CONFLICT');
    const taken = (await o.store.get('n'))?.name === 'N2';
    const kept = err?.details.kept ? readFileSync(err.details.kept, 'utf8') === theirs : false;
    expect(taken || kept).toBe(true);
    await o.store.close();
  });

  it('a change of updated_at alone (a script marking a user as touched) is seen: no known base, so a conflict, its file kept aside', async () => {
    const file = freshFile([['a', rec('a')]]);
    const o = await open(file);
    const touched = '2026-05-05T05:05:05.000Z';
    const theirs = serializeSeed([['a', { ...readData(file).a, updated_at: touched }]]);
    writeInPlace(file, theirs);
    const err = await errOf(o.store.put('b', { name: 'B' }));
    expect(err).toMatchObject({ code: 'E_STORE_CONFLICT', details: { adopted: 0, conflicts: 1 } });
    expect(readFileSync(err?.details.kept ?? '', 'utf8')).toBe(theirs);
    expect((await o.store.get('a'))?.updated_at).toBe(T0);
    await o.store.close();
  });
});

describe("an interrupted chatmem's older copy that cannot be kept aside", () => {
  it('an I/O error linking it to an outside name: one try, open refused with E_STORE_OPEN and the error as cause, nothing moved', async () => {
    const file = freshFile([['a', rec('a', { name: 'current' })]]);
    const dir = path.dirname(file);
    const dead = spawnSync('true').pid;
    const prev = path.join(dir, `.memory.json.${dead}.0000000e.prev`);
    writeFileSync(prev, serializeSeed([['a', rec('a', { name: 'older' })]]));
    let links = 0;
    setFsIo({
      link: async (from, to) => {
        if (from === prev && isOutside(to)) {
          links++;
          throw errno('EIO');
        }
        return defaultFsIo.link(from, to);
      },
    });
    const err = await JsonFileDriver.open(file, { warn: () => undefined }).then(
      () => null,
      (e: unknown) => e as { code?: string; message?: string; cause?: { code?: string } },
    );
    expect(links).toBe(1);
    expect(err).toMatchObject({ code: 'E_STORE_OPEN', cause: { code: 'EIO' } });
    expect(err?.message).toBe(`cannot open ${file}: EIO: injected`);
    expect(readData(prev).a?.name).toBe('older');
    expect(readData(file).a?.name).toBe('current');
    expect(names(file)).toEqual([path.basename(prev), 'memory.json'].sort());
  });
});

describe('stats', () => {
  it("lastUpdate is the latest updated_at of all users, not the first user's", async () => {
    const file = freshFile([
      ['a', rec('a')],
      ['b', rec('b', { updated_at: '2026-03-01T00:00:00.000Z' })],
      ['c', rec('c', { updated_at: '2026-02-01T00:00:00.000Z' })],
    ]);
    const o = await open(file);
    expect((await o.store.stats()).lastUpdate).toBe('2026-03-01T00:00:00.000Z');
    await o.store.close();
  });
});
