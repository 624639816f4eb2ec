// src/store/json-file.ts at the steps of its swap, through the src/fsio.ts seam: another program
// writing the file at the instant chatmem moves it away, creating it between the move and the link,
// writing the new file right after the link; a disk that fails one write of a coalesced batch; a
// rename or link that fails. Each test asserts what the store promises (every acknowledged write in
// the file, every outside edit taken over or kept aside, a refused write not applied) and that its
// injected step really ran. Real files in a temp dir; the outside writes are real writes.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { serializeSeed } from '../../src/format/seed.js';
import { defaultFsIo, resetFsIo, setFsIo } from '../../src/fsio.js';
import { parseRecord, type MemoryRecord } from '../../src/record.js';
import { JsonFileDriver } from '../../src/store/json-file.js';
import { jsonFileRoot, openJson, readData, rec, T0, writeInPlace } from '../helpers/json-file.js';

const { freshPath, freshFile } = jsonFileRoot('chatmem-jsonswap-');
const open = openJson;

afterEach(() => {
  resetFsIo();
  vi.useRealTimers();
});



const errOf = async (p: Promise<unknown>) =>
  p.then(
    () => null,
    (e: unknown) => e as { code: string; message: string; cause?: { code?: string }; details: { file: string; kept: string | null; adopted: number; conflicts: number } },
  );

function errno(code: string): NodeJS.ErrnoException {
  const err: NodeJS.ErrnoException = new Error(`${code}: injected`);
  err.code = code;
  return err;
}

const names = (file: string) => readdirSync(path.dirname(file)).sort();
const isPrev = (p: string) => p.endsWith('.prev');
const isTmp = (p: string) => p.endsWith('.tmp');

describe('another program writes the file at the instant chatmem moves it away', () => {
  it('an added user is taken over, the write is acknowledged, and the merge is written with it (no outside copy left)', async () => {
    const file = freshFile([['a', rec('a')]]);
    const o = await open(file);
    let hits = 0;
    setFsIo({
      rename: async (from, to) => {
        if (from === file && isPrev(to) && hits === 0) {
          hits++;
          writeInPlace(file, serializeSeed(Object.entries({ ...readData(file), n: rec('n') })));
        }
        return defaultFsIo.rename(from, to);
      },
    });
    await o.store.put('b', { name: 'B' });
    // The moved-away file is checked after the write is acknowledged; close waits for that, and for the
    // write that brings the taken-over user into the file.
    await o.driver.close();
    expect(hits).toBe(1);
    const message = `another program wrote ${file} while chatmem replaced it; its changes were taken over (1 user(s))`;
    expect(o.changes).toEqual([{ change: { when: 'during-write', adopted: 1, conflicts: 0, kept: null, unparsable: false }, message }]);
    expect((await o.driver.get('n'))?.name).toBe('N');
    expect(Object.keys(readData(file))).toEqual(['a', 'b', 'n']);
    expect(names(file)).toEqual(['memory.json']);
  });

  it('a user removed then is a conflict: chatmem keeps it, the other file is kept aside (0600) and named', async () => {
    const file = freshFile([['a', rec('a')], ['b', rec('b')]]);
    const o = await open(file);
    let hits = 0;
    let theirs = '';
    setFsIo({
      rename: async (from, to) => {
        if (from === file && isPrev(to) && hits === 0) {
          hits++;
          const d = readData(file);
          delete d.a;
          theirs = serializeSeed(Object.entries({ ...d, n: rec('n') }));
          writeInPlace(file, theirs);
        }
        return defaultFsIo.rename(from, to);
      },
    });
    await o.store.put('c', { name: 'C' });
    await o.driver.close();
    expect(hits).toBe(1);
    const kept = o.changes[0]?.change.kept ?? '';
    expect(o.changes).toEqual([
      {
        change: { when: 'during-write', adopted: 1, conflicts: 1, kept, unparsable: false },
        message: `another program wrote ${file} while chatmem replaced it; 1 user(s) taken over, 1 not (chatmem's version kept); its file is kept at ${kept}`,
      },
    ]);
    expect(path.basename(kept)).toMatch(/^memory\.json\.outside-\d{8}T\d{9}Z$/);
    expect(readFileSync(kept, 'utf8')).toBe(theirs);
    expect(statSync(kept).mode & 0o777).toBe(0o600);
    expect(Object.keys(readData(file))).toEqual(['a', 'b', 'c', 'n']);
    expect(names(file)).toEqual(['memory.json', path.basename(kept)]);
  });

  it('what it wrote does not parse: kept untouched and reported, chatmem\'s write stands', async () => {
    const file = freshFile([['a', rec('a')]]);
    const o = await open(file);
    let hits = 0;
    setFsIo({
      rename: async (from, to) => {
        if (from === file && isPrev(to) && hits++ === 0) writeInPlace(file, '{"half": {"user_id"');
        return defaultFsIo.rename(from, to);
      },
    });
    await o.store.put('b', { name: 'B' });
    await o.driver.close();
    expect(hits).toBe(1);
    const kept = o.changes[0]?.change.kept ?? '';
    expect(o.changes).toEqual([
      {
        change: { when: 'during-write', adopted: 0, conflicts: 0, kept, unparsable: true },
        message: `another program wrote ${file} while chatmem replaced it, and what it wrote does not parse; kept untouched at ${kept}`,
      },
    ]);
    expect(readFileSync(kept, 'utf8')).toBe('{"half": {"user_id"');
    expect(Object.keys(readData(file))).toEqual(['a', 'b']);
    expect(names(file)).toEqual(['memory.json', path.basename(kept)]);
  });

  it('the file deleted between the check and the move: the write lands whole', async () => {
    const file = freshFile([['a', rec('a')]]);
    const o = await open(file);
    let hits = 0;
    setFsIo({
      rename: async (from, to) => {
        if (from === file && isPrev(to) && hits++ === 0) rmSync(file);
        return defaultFsIo.rename(from, to);
      },
    });
    await o.store.put('b', { name: 'B' });
    expect(hits).toBe(1);
    expect(Object.keys(readData(file))).toEqual(['a', 'b']);
    expect(names(file)).toEqual(['memory.json']);
    // The new file's fingerprint was taken: the next write sees no outside change.
    await o.store.put('c', { name: 'C' });
    expect(o.changes).toEqual([]);
    await o.store.close();
  });
});

describe('another program creates the file between the move and the link', () => {
  it('with a new user: nothing of chatmem is written over it, the user is taken over and the write refused', async () => {
    const file = freshFile([['a', rec('a')]]);
    const o = await open(file);
    let theirs = '';
    let hits = 0;
    setFsIo({
      link: async (from, to) => {
        if (to === file && isTmp(from) && hits++ === 0) {
          theirs = serializeSeed([['a', rec('a')], ['n', rec('n')]]);
          writeFileSync(file, theirs);
        }
        return defaultFsIo.link(from, to);
      },
    });
    const err = await errOf(o.store.put('b', { name: 'B' }));
    expect(hits).toBe(1);
    const message = `${file} was changed by another program; chatmem took over its changes (1 user(s)) and did not apply this write. Retry the write.`;
    expect(err).toMatchObject({ code: 'E_STORE_CONFLICT', message, details: { adopted: 1, conflicts: 0, kept: null } });
    expect(o.changes.map((c) => c.change)).toEqual([{ when: 'during-write', adopted: 1, conflicts: 0, kept: null, unparsable: false }]);
    // Their file is what is there; the moved-away old file, unchanged, was removed.
    expect(readFileSync(file, 'utf8')).toBe(theirs);
    expect(names(file)).toEqual(['memory.json']);
    expect(await o.store.get('b')).toBeNull();
    await o.store.put('b', { name: 'B' });
    expect(Object.keys(readData(file))).toEqual(['a', 'n', 'b']);
    await o.store.close();
  });

  it('with what chatmem already has: the write is still refused, saying the file was replaced', async () => {
    const file = freshFile([['a', rec('a')]]);
    const o = await open(file);
    const same = readFileSync(file);
    let hits = 0;
    setFsIo({
      link: async (from, to) => {
        if (to === file && isTmp(from) && hits++ === 0) writeFileSync(file, same);
        return defaultFsIo.link(from, to);
      },
    });
    const err = await errOf(o.store.put('b', { name: 'B' }));
    expect(hits).toBe(1);
    expect(err).toMatchObject({
      code: 'E_STORE_CONFLICT',
      message: `${file} was replaced by another program while chatmem wrote it; this write was not applied. Retry the write.`,
    });
    expect(o.changes).toEqual([]);
    expect(await o.store.get('b')).toBeNull();
    expect(readFileSync(file)).toEqual(same);
    expect(names(file)).toEqual(['memory.json']);
    await o.store.put('b', { name: 'B' });
    expect(Object.keys(readData(file))).toEqual(['a', 'b']);
    await o.store.close();
  });
});

describe('another program writes the new file right after chatmem links it', () => {
  it('its edit is not taken for chatmem\'s own: the next write finds it and takes it over', async () => {
    const file = freshFile([['a', rec('a')]]);
    const o = await open(file);
    let hits = 0;
    setFsIo({
      fsyncDir: async (dir) => {
        // The directory sync right after the link: the other program writes before chatmem's stat.
        if (dir === path.dirname(file) && existsSync(file) && hits++ === 0) {
          const d = readData(file);
          writeFileSync(file, serializeSeed(Object.entries({ ...d, n: rec('n', { name: 'just after' }) })));
        }
        return defaultFsIo.fsyncDir(dir);
      },
    });
    await o.store.put('b', { name: 'B' });
    expect(hits).toBe(1);
    resetFsIo();
    const err = await errOf(o.store.put('c', { name: 'C' }));
    expect(err).toMatchObject({ code: 'E_STORE_CONFLICT', details: { adopted: 1, conflicts: 0 } });
    expect((await o.store.get('n'))?.name).toBe('just after');
    await o.store.put('c', { name: 'C' });
    expect(Object.keys(readData(file))).toEqual(['a', 'b', 'n', 'c']);
    await o.store.close();
  });
});

describe('failed steps of the swap', () => {
  it('a rename that fails (EIO): the write is refused with E_STORE_WRITE, not applied; file and directory as before', async () => {
    const file = freshFile([['a', rec('a')]]);
    const before = readFileSync(file);
    const o = await open(file);
    let hits = 0;
    setFsIo({
      rename: async (from, to) => {
        if (from === file && hits++ === 0) throw errno('EIO');
        return defaultFsIo.rename(from, to);
      },
    });
    const err = await errOf(o.store.put('b', { name: 'B' }));
    expect(hits).toBe(1);
    expect(err).toMatchObject({ code: 'E_STORE_WRITE', message: `cannot write ${file}: EIO: injected`, cause: { code: 'EIO' } });
    expect(await o.store.get('b')).toBeNull();
    expect(readFileSync(file)).toEqual(before);
    expect(names(file)).toEqual(['memory.json']);
    await o.store.put('c', { name: 'C' });
    expect(Object.keys(readData(file))).toEqual(['a', 'c']);
    await o.store.close();
  });

  it('a link that fails after the move (EIO): the old file is put back, the write refused', async () => {
    const file = freshFile([['a', rec('a')]]);
    const before = readFileSync(file);
    const o = await open(file);
    let hits = 0;
    setFsIo({
      link: async (from, to) => {
        if (to === file && isTmp(from) && hits++ === 0) throw errno('EIO');
        return defaultFsIo.link(from, to);
      },
    });
    const err = await errOf(o.store.put('b', { name: 'B' }));
    expect(hits).toBe(1);
    expect(err).toMatchObject({ code: 'E_STORE_WRITE', cause: { code: 'EIO' } });
    expect(readFileSync(file)).toEqual(before);
    expect(names(file)).toEqual(['memory.json']);
    expect(await o.store.get('b')).toBeNull();
    await o.store.put('c', { name: 'C' });
    expect(o.changes).toEqual([]);
    expect(Object.keys(readData(file))).toEqual(['a', 'c']);
    await o.store.close();
  });

  it('a failed fsync of the new file: refused, its temp copy removed, the file untouched', async () => {
    const file = freshFile([['a', rec('a')]]);
    const before = readFileSync(file);
    const o = await open(file);
    let hits = 0;
    setFsIo({
      sync: async (fh, f) => {
        if (isTmp(f) && hits++ === 0) throw errno('EIO');
        return defaultFsIo.sync(fh, f);
      },
    });
    const err = await errOf(o.store.put('b', { name: 'B' }));
    expect(hits).toBe(1);
    expect(err).toMatchObject({ code: 'E_STORE_WRITE', message: `cannot write ${file}: EIO: injected` });
    expect(readFileSync(file)).toEqual(before);
    expect(names(file)).toEqual(['memory.json']);
    await o.store.close();
  });

  it('the link of the pinned read fails (EIO): E_STORE_READ naming the file, the write refused, the file untouched', async () => {
    const file = freshFile([['a', rec('a')]]);
    const o = await open(file);
    writeInPlace(file, serializeSeed([['a', rec('a')], ['n', rec('n')]]));
    const theirs = readFileSync(file);
    let hits = 0;
    setFsIo({
      link: async (from, to) => {
        if (from === file && isTmp(to)) {
          hits++;
          throw errno('EIO');
        }
        return defaultFsIo.link(from, to);
      },
    });
    const err = await errOf(o.store.put('b', { name: 'B' }));
    expect(hits).toBe(1);
    expect(err).toMatchObject({ code: 'E_STORE_READ', message: `cannot read ${file}: EIO: injected` });
    expect(readFileSync(file)).toEqual(theirs);
    expect(names(file)).toEqual(['memory.json']);
    resetFsIo();
    // Read through a pinned link next time, which is removed after: only the store and nothing else.
    expect((await errOf(o.store.put('b', { name: 'B' })))?.code).toBe('E_STORE_CONFLICT');
    expect(names(file)).toEqual(['memory.json']);
    await o.store.close();
  });

  it('a write that cannot be re-sent (nothing queued, only a merge to write back) gives up until the next write, and close returns', async () => {
    const file = freshFile([['a', rec('a')]]);
    const o = await open(file);
    const stale = readFileSync(file);
    await o.store.put('a', { name: 'A2' });
    writeInPlace(file, stale.toString('utf8'));
    let opens = 0;
    setFsIo({
      open: async (f, flags, mode) => {
        if (isTmp(f)) {
          opens++;
          throw errno('EIO');
        }
        return defaultFsIo.open(f, flags, mode);
      },
    });
    // The stale copy is found: the write is refused, chatmem's A2 is to be written back, and that fails.
    expect((await errOf(o.store.put('b', { name: 'B' })))?.code).toBe('E_STORE_CONFLICT');
    await o.driver.close();
    expect(opens).toBeGreaterThanOrEqual(1);
    expect(opens).toBeLessThanOrEqual(2);
    expect(readFileSync(file)).toEqual(stale);
    resetFsIo();
    await o.driver.close();
    expect(readData(file).a?.name).toBe('A2');
  });
});

describe('a disk that refuses one write of a coalesced batch', () => {
  it('the batch is halved until the write that does not fit is alone: it fails, every other write lands', async () => {
    const file = freshFile([['a', rec('a')]]);
    const o = await open(file);
    const opened: string[] = [];
    const { open: realOpen } = defaultFsIo;
    setFsIo({
      open: async (f, flags, mode) => {
        if (isTmp(f)) opened.push(f);
        return realOpen(f, flags, mode);
      },
      writeAll: async (fh, f, data) => {
        if (isTmp(f) && String(data).includes('TOO BIG')) throw errno('ENOSPC');
        return defaultFsIo.writeAll(fh, f, data);
      },
    });
    // One write in flight, so the ones behind it are coalesced into the next flush.
    const warm = o.store.put('w', { name: 'warm' });
    const big = o.store.put('big', { name: 'TOO BIG' });
    const smalls = Array.from({ length: 9 }, (_, i) => o.store.put(`s${i}`, { name: `small ${i}` }));
    const bigErr = await errOf(big);
    expect(bigErr).toMatchObject({ code: 'E_STORE_WRITE', message: `cannot write ${file}: ENOSPC: injected`, cause: { code: 'ENOSPC' } });
    await warm;
    const written = await Promise.all(smalls);
    expect(written.map((r) => r.name)).toEqual(Array.from({ length: 9 }, (_, i) => `small ${i}`));
    const data = readData(file);
    expect(Object.keys(data)).toEqual(['a', 'w', ...Array.from({ length: 9 }, (_, i) => `s${i}`)]);
    expect(await o.store.get('big')).toBeNull();
    // Once the failing write is out, batches are whole again: ten writes queued behind one flush in one more file write.
    await o.driver.close();
    const before = opened.length;
    const again = [o.store.put('x', { name: 'x' }), ...Array.from({ length: 10 }, (_, i) => o.store.put(`y${i}`, { name: 'y' }))];
    await Promise.all(again);
    expect(opened.length - before).toBe(2);
    await o.store.close();
    expect(names(file)).toEqual(['memory.json']);
  });

  it('a change that no longer applies on what is durable after the split fails with its own error', async () => {
    const file = freshFile([['a', rec('a')]]);
    const o = await open(file);
    setFsIo({
      writeAll: async (fh, f, data) => {
        if (isTmp(f) && String(data).includes('TOO BIG')) throw errno('ENOSPC');
        return defaultFsIo.writeAll(fh, f, data);
      },
    });
    const warm = o.driver.update('w', () => rec('w') as unknown as MemoryRecord);
    const big = o.driver.update('big', () => rec('big', { name: 'TOO BIG' }) as unknown as MemoryRecord);
    // Written on top of big: computed on the view (where big is) first, then again on what is durable.
    const onBig = o.driver.update('big', (cur) => {
      if (cur === null) throw new Error('big is gone');
      return { ...cur, extra: 1 };
    });
    const small = o.driver.update('s', () => rec('s', { name: 'small' }) as unknown as MemoryRecord);
    expect((await errOf(big))?.code).toBe('E_STORE_WRITE');
    expect((await errOf(onBig))?.message).toBe('big is gone');
    await warm;
    expect((await small).name).toBe('small');
    expect(Object.keys(readData(file))).toEqual(['a', 'w', 's']);
    await o.driver.close();
  });
});

describe('opening while another chatmem swaps the file', () => {
  it("a live process's swap leftover with the file missing: open waits, and reads the file once it is back", async () => {
    const file = freshFile();
    // The parent of this test worker is alive and is not this process.
    const prev = path.join(path.dirname(file), `.memory.json.${process.ppid}.0000000a.prev`);
    writeFileSync(prev, serializeSeed([['a', rec('a', { name: 'moved away' })]]));
    const back = setTimeout(() => {
      writeFileSync(file, serializeSeed([['a', rec('a', { name: 'new file' })]]));
      rmSync(prev);
    }, 60);
    try {
      const o = await open(file);
      expect((await o.driver.get('a'))?.name).toBe('new file');
      await o.driver.close();
    } finally {
      clearTimeout(back);
    }
  });

  it('a swap that never finishes: refused with E_STORE_PARSE, saying the file keeps changing, nothing touched', async () => {
    const file = freshFile();
    const prev = path.join(path.dirname(file), `.memory.json.${process.ppid}.0000000b.prev`);
    writeFileSync(prev, 'x');
    const err = (await JsonFileDriver.open(file).catch((e: unknown) => e)) as { code: string; message: string; details: { file: string } };
    expect(err).toMatchObject({
      code: 'E_STORE_PARSE',
      message: `refusing to open ${file}: ${file} keeps changing; another program is writing it. The file was left untouched; fix it or restore a backup.`,
      details: { file },
    });
    // Why it kept changing: the cause names the other chatmem's swap.
    expect((err as { cause?: Error }).cause?.message).toBe(`${file} is being replaced by another chatmem process`);
    expect(names(file)).toEqual([path.basename(prev)]);
    expect(readFileSync(prev, 'utf8')).toBe('x');
  });

  it("this process's own swap leftover is no other chatmem: a missing file is an empty store at once", async () => {
    const file = freshFile();
    const prev = path.join(path.dirname(file), `.memory.json.${process.pid}.0000000c.prev`);
    writeFileSync(prev, 'x');
    const o = await open(file);
    expect(await o.driver.count()).toBe(0);
    expect(existsSync(prev)).toBe(true);
    await o.driver.close();
  });

  it('a half-written file (json.dump truncated it) is read again until it parses', async () => {
    const file = freshFile();
    const whole = serializeSeed([['a', rec('a')], ['b', rec('b')]]);
    writeFileSync(file, whole.slice(0, whole.length >> 1));
    const done = setTimeout(() => writeFileSync(file, whole), 40);
    try {
      const o = await open(file);
      expect(await o.driver.count()).toBe(2);
      await o.driver.close();
    } finally {
      clearTimeout(done);
    }
  });
});

describe("what chatmem remembers of its own versions", () => {
  const at = (i: number) => `2026-02-${String(i + 1).padStart(2, '0')}T00:00:00.000Z`;

  it('the last 8 versions of a user: a stale copy of one of them is no change, of an older one a conflict', async () => {
    const file = freshFile([['a', rec('a', { name: 'v0', updated_at: at(0) })]]);
    const o = await open(file);
    const copies = [readFileSync(file, 'utf8')];
    for (let i = 1; i <= 9; i++) {
      await o.driver.update('a', (cur) => ({ ...(cur as MemoryRecord), name: `v${i}`, updated_at: at(i) }));
      copies.push(readFileSync(file, 'utf8'));
    }
    // v2 is the oldest of the eight kept (v2..v9): a stale copy carried by a read-modify-write.
    writeInPlace(file, copies[2] ?? '');
    expect((await errOf(o.store.put('b', { name: 'B' })))?.details).toMatchObject({ adopted: 0, conflicts: 0, kept: null });
    await o.driver.close();
    expect(readData(file).a?.name).toBe('v9');
    // v1 is not remembered: its copy is an edit of an unknown base, kept aside.
    writeInPlace(file, copies[1] ?? '');
    const err = await errOf(o.store.put('b', { name: 'B' }));
    expect(err?.details).toMatchObject({ adopted: 0, conflicts: 1 });
    expect(readFileSync(err?.details.kept ?? '', 'utf8')).toBe(copies[1]);
    expect((await o.driver.get('a'))?.name).toBe('v9');
    await o.driver.close();
  });

  it('an edit whose base matches two different versions with the same updated_at is a conflict, not a guess', async () => {
    const file = freshFile([['a', rec('a', { updated_at: at(0) })]]);
    const o = await open(file);
    await o.driver.update('a', (cur) => ({ ...(cur as MemoryRecord), name: 'X', updated_at: at(5) }));
    const x = readData(file);
    await o.driver.update('a', (cur) => ({ ...(cur as MemoryRecord), name: 'Y', updated_at: at(5) }));
    await o.driver.update('a', (cur) => ({ ...(cur as MemoryRecord), name: 'Z', serial: 'z', updated_at: at(6) }));
    writeInPlace(file, serializeSeed(Object.entries({ ...readData(file), a: { ...x.a, product: 'edited' } })));
    const err = await errOf(o.store.put('b', { name: 'B' }));
    expect(err?.details).toMatchObject({ adopted: 0, conflicts: 1 });
    expect(await o.driver.get('a')).toMatchObject({ name: 'Z', serial: 'z' });
    expect((await o.driver.get('a'))?.product).toBeNull();
    await o.driver.close();
  });

  it('the same version written twice (same content, same updated_at) is one base: the edit is merged', async () => {
    const file = freshFile([['a', rec('a', { updated_at: at(0) })]]);
    const o = await open(file);
    await o.driver.update('a', (cur) => ({ ...(cur as MemoryRecord), name: 'X', updated_at: at(5) }));
    const x = readData(file);
    await o.driver.update('a', (cur) => ({ ...(cur as MemoryRecord), name: 'W', updated_at: at(4) }));
    await o.driver.update('a', (cur) => ({ ...(cur as MemoryRecord), name: 'X', updated_at: at(5) }));
    await o.driver.update('a', (cur) => ({ ...(cur as MemoryRecord), serial: 'z', updated_at: at(6) }));
    writeInPlace(file, serializeSeed(Object.entries({ ...readData(file), a: { ...x.a, product: 'edited' } })));
    const err = await errOf(o.store.put('b', { name: 'B' }));
    expect(err?.details).toMatchObject({ adopted: 1, conflicts: 0 });
    expect(await o.driver.get('a')).toMatchObject({ name: 'X', serial: 'z', product: 'edited' });
    await o.driver.close();
  });
});

describe('names for what is kept aside', () => {
  const NOW = new Date('2026-03-04T05:06:07.089Z');
  const base = (file: string) => `${file}.outside-20260304T050607089Z`;

  it('an outside copy never replaces an earlier one: the next free -N name is taken', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(NOW);
    const file = freshFile([['a', rec('a')], ['b', rec('b')]]);
    writeFileSync(base(file), 'earlier 0');
    writeFileSync(`${base(file)}-1`, 'earlier 1');
    const o = await open(file);
    const edited = readData(file);
    delete edited.a;
    writeInPlace(file, serializeSeed(Object.entries(edited)));
    const err = await errOf(o.store.put('c', { name: 'C' }));
    expect(err?.details.kept).toBe(`${base(file)}-2`);
    expect(readFileSync(base(file), 'utf8')).toBe('earlier 0');
    expect(readFileSync(`${base(file)}-1`, 'utf8')).toBe('earlier 1');
    await o.driver.close();
  });

  it('after 100 taken names it gives up: the write is refused, nothing replaced', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(NOW);
    const file = freshFile([['a', rec('a')], ['b', rec('b')]]);
    for (let i = 0; i <= 100; i++) writeFileSync(i === 0 ? base(file) : `${base(file)}-${i}`, `earlier ${i}`);
    const o = await open(file);
    const edited = readData(file);
    delete edited.a;
    writeInPlace(file, serializeSeed(Object.entries(edited)));
    const err = await errOf(o.store.put('c', { name: 'C' }));
    expect(err).toMatchObject({ code: 'E_STORE_WRITE', message: expect.stringMatching(/EEXIST/) });
    expect(existsSync(`${base(file)}-101`)).toBe(false);
    expect(readFileSync(`${base(file)}-100`, 'utf8')).toBe('earlier 100');
    await o.driver.close();
  });

  it("an interrupted chatmem's older copy is kept under the next free name, linked, then the directory synced", async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(NOW);
    const file = freshFile([['a', rec('a', { name: 'current' })]]);
    const dir = path.dirname(file);
    const deadPid = spawnSync('true').pid;
    const prev = path.join(dir, `.memory.json.${deadPid}.0000000d.prev`);
    writeFileSync(prev, serializeSeed([['a', rec('a', { name: 'older' })]]));
    writeFileSync(base(file), 'earlier 0');
    const events: string[] = [];
    setFsIo({
      link: async (from, to) => {
        events.push(`link ${path.basename(from)} ${path.basename(to)}`);
        return defaultFsIo.link(from, to);
      },
      fsyncDir: async (d) => {
        events.push(`sync ${d === dir ? 'dir' : d}`);
        return defaultFsIo.fsyncDir(d);
      },
    });
    const o = await open(file);
    // The first name is taken (EEXIST), the next one is linked; then the directory entry is made durable.
    expect(events.filter((e) => e.includes('.prev') || e === 'sync dir')).toEqual([
      `link ${path.basename(prev)} ${path.basename(base(file))}`,
      `link ${path.basename(prev)} ${path.basename(base(file))}-1`,
      'sync dir',
    ]);
    expect(readData(`${base(file)}-1`).a?.name).toBe('older');
    expect(statSync(`${base(file)}-1`).mode & 0o777).toBe(0o600);
    expect(existsSync(prev)).toBe(false);
    expect((await o.driver.get('a'))?.name).toBe('current');
    await o.driver.close();
  });

  it("with the file missing, the newest copy is put back: linked, removed, the directory synced", async () => {
    const file = freshFile();
    const dir = path.dirname(file);
    const deadPid = spawnSync('true').pid;
    const prev = path.join(dir, `.memory.json.${deadPid}.0000000e.prev`);
    writeFileSync(prev, serializeSeed([['a', rec('a', { name: 'last durable' })]]));
    const events: string[] = [];
    setFsIo({
      link: async (from, to) => {
        events.push(`link ${path.basename(from)} ${path.basename(to)} ${existsSync(prev)}`);
        return defaultFsIo.link(from, to);
      },
      fsyncDir: async (d) => {
        events.push(`sync ${d === dir ? 'dir' : d} ${existsSync(prev)}`);
        return defaultFsIo.fsyncDir(d);
      },
    });
    const o = await open(file);
    expect(events).toEqual([`link ${path.basename(prev)} memory.json true`, 'sync dir false']);
    expect(names(file)).toEqual(['memory.json']);
    expect((await o.driver.get('a'))?.name).toBe('last durable');
    await o.driver.close();
  });
});

describe('search', () => {
  it('a short query is an id prefix; a longer one searches the text', async () => {
    const file = freshFile([['a1', rec('a1', { name: 'Zed' })], ['b', rec('b', { name: 'anna' })], ['a2', rec('a2')]]);
    const o = await open(file);
    expect((await o.driver.search('a', 10)).map((u) => u.user_id)).toEqual(['a1', 'a2']);
    expect((await o.driver.search('ann', 10)).map((u) => u.user_id)).toEqual(['b']);
    await o.driver.close();
  });
});

describe('more of what the store promises', () => {
  const at = (i: number) => `2026-02-${String(i + 1).padStart(2, '0')}T00:00:00.000Z`;

  it("writes to other users do not push a user's older version out of memory", async () => {
    const file = freshFile([['k', rec('k', { name: 'k0', updated_at: at(0) })]]);
    const o = await open(file);
    const k0 = readData(file).k;
    await o.driver.update('k', (cur) => ({ ...(cur as MemoryRecord), name: 'k1', updated_at: at(1) }));
    for (let i = 0; i < 9; i++) await o.store.put(`o${i}`, { name: `O${i}` });
    // A script that read k before chatmem's only change to it writes that stale copy back.
    writeInPlace(file, serializeSeed(Object.entries({ ...readData(file), k: k0 })));
    expect((await errOf(o.store.put('b', { name: 'B' })))?.details).toMatchObject({ adopted: 0, conflicts: 0 });
    await o.driver.close();
    expect(readData(file).k?.name).toBe('k1');
  });

  it('a write resolves with what the file holds: recomputed when a write before it failed', async () => {
    const file = freshFile([['u', rec('u')]]);
    const o = await open(file);
    setFsIo({
      writeAll: async (fh, f, data) => {
        if (isTmp(f) && String(data).includes('TOO BIG')) throw errno('ENOSPC');
        return defaultFsIo.writeAll(fh, f, data);
      },
    });
    const add = (text: string) => (cur: MemoryRecord | null) => ({ ...(cur as MemoryRecord), history: [...(cur as MemoryRecord).history, { role: 'user' as const, text, ts: T0 }] });
    const warm = o.driver.update('w', () => rec('w') as unknown as MemoryRecord);
    const big = o.driver.update('u', add('TOO BIG'));
    const small = o.driver.update('u', add('small'));
    expect((await errOf(big))?.code).toBe('E_STORE_WRITE');
    await warm;
    expect((await small).history.map((h) => h.text)).toEqual(['small']);
    expect(readData(file).u?.history).toEqual([{ role: 'user', text: 'small', ts: T0 }]);
    await o.driver.close();
  });

  it('a store in a directory that does not exist yet: empty, and the first write creates it (0700)', async () => {
    const dir = path.join(freshPath(), 'sub');
    const file = path.join(dir, 'memory.json');
    const o = await open(file);
    expect(await o.driver.count()).toBe(0);
    await o.store.put('a', { name: 'A' });
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(Object.keys(readData(file))).toEqual(['a']);
    await o.driver.close();
  });

  it('a file that cannot be looked at (a symlink loop) is E_STORE_READ at open, not retried as a half-written file', async () => {
    const file = freshFile();
    await import('node:fs').then(({ symlinkSync }) => symlinkSync(file, file));
    await expect(JsonFileDriver.open(file)).rejects.toMatchObject({ code: 'E_STORE_READ', message: expect.stringMatching(new RegExp(`^cannot stat .*memory\\.json: ELOOP`)) });
  });

  it('the write path: the whole new file synced before it is linked in, the directory synced after', async () => {
    const file = freshFile([['a', rec('a')]]);
    const o = await open(file);
    const events: string[] = [];
    setFsIo({
      sync: async (fh, f) => {
        events.push(`sync ${isTmp(f) ? 'tmp' : path.basename(f)} ${readFileSync(f, 'utf8').includes('"b"')}`);
        return defaultFsIo.sync(fh, f);
      },
      rename: async (from, to) => {
        events.push(`rename ${path.basename(from)} ${isPrev(to) ? 'prev' : to}`);
        return defaultFsIo.rename(from, to);
      },
      link: async (from, to) => {
        events.push(`link ${isTmp(from) ? 'tmp' : from} ${path.basename(to)}`);
        return defaultFsIo.link(from, to);
      },
      fsyncDir: async (d) => {
        events.push(`syncdir ${d === path.dirname(file) ? 'dir' : d} ${readData(file).b !== undefined}`);
        return defaultFsIo.fsyncDir(d);
      },
    });
    await o.store.put('b', { name: 'B' });
    expect(events).toEqual(['sync tmp true', 'rename memory.json prev', 'link tmp memory.json', 'syncdir dir true']);
    await o.driver.close();
  });

  it('an outside copy kept aside is synced, then its directory entry', async () => {
    const file = freshFile([['a', rec('a')], ['b', rec('b')]]);
    const o = await open(file);
    const edited = readData(file);
    delete edited.a;
    writeInPlace(file, serializeSeed(Object.entries(edited)));
    const events: string[] = [];
    setFsIo({
      sync: async (fh, f) => {
        events.push(`sync ${f.includes('.outside-') ? 'outside' : 'other'} ${readFileSync(f).length}`);
        return defaultFsIo.sync(fh, f);
      },
      fsyncDir: async (d) => {
        events.push(`syncdir ${readdirSync(d).some((x) => x.includes('.outside-'))}`);
        return defaultFsIo.fsyncDir(d);
      },
    });
    const size = statSync(file).size;
    const err = await errOf(o.store.put('c', { name: 'C' }));
    expect(err?.details.conflicts).toBe(1);
    expect(events.slice(0, 2)).toEqual([`sync outside ${size}`, 'syncdir true']);
    await o.driver.close();
  });

  it('a file another program creates while chatmem writes the first version: not replaced; taken over, the write refused', async () => {
    const file = freshFile();
    const o = await open(file);
    let hits = 0;
    setFsIo({
      open: async (f, flags, mode) => {
        if (isTmp(f) && hits === 0) {
          hits++;
          writeFileSync(file, serializeSeed([['n', rec('n')]]));
        }
        return defaultFsIo.open(f, flags, mode);
      },
    });
    const err = await errOf(o.store.put('a', { name: 'A' }));
    expect(hits).toBe(1);
    expect(err).toMatchObject({ code: 'E_STORE_CONFLICT', details: { adopted: 1, conflicts: 0 } });
    expect(o.changes.map((c) => c.change.when)).toEqual(['during-write']);
    expect(Object.keys(readData(file))).toEqual(['n']);
    await o.store.put('a', { name: 'A' });
    expect(Object.keys(readData(file))).toEqual(['n', 'a']);
    await o.driver.close();
  });
});

describe('records written in a section are held as the file holds them', () => {
  // As the store layer hands them over: parsed, every field present.
  const full = (id: string, extra: Record<string, unknown> = {}) => parseRecord(id, rec(id, extra), undefined, { limits: false });
  it('restore and import (putAll): counted in stats as after a restart; a record that cannot be serialised refused alone', async () => {
    const file = freshFile([['a', rec('a')]]);
    const o = await open(file);
    async function* records(): AsyncGenerator<MemoryRecord> {
      yield full('b', { flags: { v: -0 }, history: [{ role: 'user', text: 'hello', ts: T0 }] });
      yield full('c');
    }
    expect(await o.driver.exclusive({ all: true } as never, (ctx) => ctx.putAll(records()))).toBe(2);
    const stats = await o.driver.stats();
    expect(Object.is((await o.driver.get('b'))?.flags.v, 0)).toBe(true);
    await o.driver.close();
    const again = await open(file);
    expect(await again.driver.stats()).toEqual(stats);
    async function* hostile(): AsyncGenerator<MemoryRecord> {
      yield rec('d') as unknown as MemoryRecord;
      yield { ...(rec('e') as object), big: 1n } as unknown as MemoryRecord;
    }
    await expect(again.driver.exclusive({ all: true } as never, (ctx) => ctx.putAll(hostile()))).rejects.toMatchObject({ code: 'E_RECORD' });
    expect(await again.driver.count()).toBe(3);
    await again.store.put('f', { name: 'F' });
    expect(Object.keys(readData(file))).toEqual(['a', 'b', 'c', 'f']);
    await again.driver.close();
  });

  it('putMany, putAndDelete and replaceAll: a value JSON does not keep (-0) reads back as after a restart', async () => {
    const file = freshFile();
    const o = await open(file);
    const flagsOf = async (id: string) => (await o.driver.get(id))?.flags.v;
    await o.driver.exclusive({ all: true } as never, async (ctx) => {
      await ctx.putMany([rec('a', { flags: { v: -0 } }) as unknown as MemoryRecord]);
      if (!ctx.putAndDelete) throw new Error('the JSON driver offers putAndDelete');
      await ctx.putAndDelete([rec('b', { flags: { v: -0 } }) as unknown as MemoryRecord], []);
    });
    expect(Object.is(await flagsOf('a'), 0)).toBe(true);
    expect(Object.is(await flagsOf('b'), 0)).toBe(true);
    async function* one(): AsyncGenerator<MemoryRecord> {
      yield rec('c', { flags: { v: -0 } }) as unknown as MemoryRecord;
    }
    await o.driver.exclusive({ all: true } as never, (ctx) => ctx.replaceAll(one()));
    expect(Object.is(await flagsOf('c'), 0)).toBe(true);
    await o.driver.close();
  });
});

describe('a write queued while chatmem writes back a merge', () => {
  it('is written too, in the same run of the queue', async () => {
    const file = freshFile([['a', rec('a')]]);
    const o = await open(file);
    const stale = readFileSync(file, 'utf8');
    await o.store.put('a', { name: 'A2' });
    // A stale copy: chatmem's A2 must be written back with no write of its own (a merge-only write).
    writeInPlace(file, stale);
    let late: Promise<MemoryRecord> | null = null;
    let tmpOpens = 0;
    setFsIo({
      open: async (f, flags, mode) => {
        // The merge-only write has taken its (empty) batch: a write arrives now, while it is under way.
        if (isTmp(f) && tmpOpens++ === 0) late = o.driver.update('late', () => rec('late') as unknown as MemoryRecord);
        return defaultFsIo.open(f, flags, mode);
      },
    });
    expect((await errOf(o.store.put('b', { name: 'B' })))?.code).toBe('E_STORE_CONFLICT');
    while (late === null) await new Promise((resolve) => setTimeout(resolve, 5));
    expect((await (late as Promise<MemoryRecord>)).user_id).toBe('late');
    expect(Object.keys(readData(file))).toEqual(['a', 'late']);
    expect(readData(file).a?.name).toBe('A2');
    resetFsIo();
    await o.driver.close();
  });
});
