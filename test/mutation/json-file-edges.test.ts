// More of src/store/json-file.ts's promises, for the mutants the first two files left (RELIABILITY.md,
// "Mutants left, and why", json-file.ts): an outside edit that never becomes parsable, a rename-writer
// that replaces the file while chatmem reads the previous edit, what is reported and kept, and the
// retries of a read. Real files in a temp dir; injected steps through the src/fsio.ts seam, each
// checked to have run.
import { existsSync, readdirSync, readFileSync, renameSync, statSync, symlinkSync, writeFileSync, utimesSync } from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { serializeSeed } from '../../src/format/seed.js';
import { defaultFsIo, resetFsIo, setFsIo } from '../../src/fsio.js';
import { JsonFileDriver } from '../../src/store/json-file.js';
import { isTmp, jsonFileRoot, openJson, readData, rec, refuseWritesHolding, writeInPlace } from '../helpers/json-file.js';

const { freshFile } = jsonFileRoot('chatmem-jsonedge-');
const open = openJson;

afterEach(() => {
  resetFsIo();
  vi.useRealTimers();
});


/** A rename-writer (temp + os.replace): a new inode at the file's name. */
function writeByRename(file: string, text: string): void {
  const tmp = `${file}.script-tmp`;
  writeFileSync(tmp, text);
  renameSync(tmp, file);
}

const errOf = async (p: Promise<unknown>) =>
  p.then(
    () => null,
    (e: unknown) => e as { code: string; message: string; details: Record<string, unknown> },
  );

const names = (file: string) => readdirSync(path.dirname(file)).sort();

describe('an outside edit that never parses', () => {
  it('the write is refused with E_STORE_PARSE naming the file (not the private link read through), nothing written or left', async () => {
    const file = freshFile([['a', rec('a')]]);
    const o = await open(file);
    const broken = '{"a": {"user_id": "a", "history": 5}}';
    writeInPlace(file, broken);
    let pinnedReads = 0;
    setFsIo({
      link: async (from, to) => {
        if (from === file && isTmp(to)) pinnedReads++;
        return defaultFsIo.link(from, to);
      },
    });
    const err = await errOf(o.store.put('b', { name: 'B' }));
    expect(err?.code).toBe('E_STORE_PARSE');
    expect(err?.message.startsWith(`${file} does not parse: `)).toBe(true);
    expect(err?.message).toMatch(/history/);
    // The read went through a private hard link; the message and details speak of the store's file only.
    expect(err?.message).not.toMatch(/\.tmp/);
    // The store's file, not the private link read through.
    expect(err?.details).toEqual({ file });
    // Read once, then again after each of the 7 waits (10 ms to 640 ms): a writer's json.dump has that long.
    expect(pinnedReads).toBe(8);
    expect(readFileSync(file, 'utf8')).toBe(broken);
    expect(names(file)).toEqual(['memory.json']);
    expect(await o.store.get('b')).toBeNull();
    expect(o.changes).toEqual([]);
    await o.store.close();
  });

  it('a truncated file: the position of the syntax error is kept in the details', async () => {
    const file = freshFile([['a', rec('a')]]);
    const o = await open(file);
    writeInPlace(file, '{\n  "a": {\n    "user_id": "a",');
    const err = await errOf(o.store.put('b', { name: 'B' }));
    expect(err?.code).toBe('E_STORE_PARSE');
    expect(err?.details).toMatchObject({ file, line: expect.any(Number), column: expect.any(Number), position: expect.any(Number) });
    expect(err?.message).not.toMatch(/\.tmp/);
    await o.store.close();
  });
});


describe('a rename-writer replaces the file while chatmem reads the previous outside edit', () => {
  it('the replacement is not taken for what was read: the next write reads it and takes it over', async () => {
    const file = freshFile([['a', rec('a')]]);
    const o = await open(file);
    writeInPlace(file, serializeSeed([['a', rec('a')], ['n', rec('n')]]));
    let hits = 0;
    setFsIo({
      link: async (from, to) => {
        await defaultFsIo.link(from, to);
        // The pinned read has its link: the script's os.replace lands now, before chatmem's read ends.
        if (from === file && isTmp(to) && hits++ === 0) writeByRename(file, serializeSeed([['a', rec('a')], ['n', rec('n')], ['m', rec('m')]]));
      },
    });
    const first = await errOf(o.store.put('b', { name: 'B' }));
    expect(hits).toBe(1);
    expect(first).toMatchObject({ code: 'E_STORE_CONFLICT', details: { adopted: 1 } });
    expect((await o.store.get('n'))?.name).toBe('N');
    resetFsIo();
    // m arrived after the read: it must be found, not overwritten.
    const second = await errOf(o.store.put('b', { name: 'B' }));
    expect(second).toMatchObject({ code: 'E_STORE_CONFLICT', details: { adopted: 1 } });
    expect((await o.store.get('m'))?.name).toBe('M');
    await o.store.put('b', { name: 'B' });
    expect(Object.keys(readData(file)).sort()).toEqual(['a', 'b', 'm', 'n']);
    await o.store.close();
    expect(existsSync(file)).toBe(true);
  });
});

// A whole second: utimes with it restores an mtime exactly (a Date keeps only milliseconds).
const SECOND = 1_700_000_000;

/** The seed file with a whole-second mtime, so an outside writer can put exactly that mtime back. */
function fileAtSecond(seed: [string, unknown][]): string {
  const file = freshFile(seed);
  utimesSync(file, SECOND, SECOND);
  return file;
}

/** Rewrites user a's name in place, same size, then puts the mtime back: only the ctime tells. */
function sameSizeEdit(file: string, name: string, keepMtime: boolean): void {
  const text = readFileSync(file, 'utf8');
  const next = text.replace('"name": "A"', `"name": "${name}"`);
  expect(next.length).toBe(text.length);
  writeFileSync(file, next);
  if (keepMtime) utimesSync(file, SECOND, SECOND);
}

describe('what tells chatmem that another program wrote the file', () => {
  it('before the write: a same-size edit whose writer put the mtime back is still seen (the ctime changed)', async () => {
    const file = fileAtSecond([['a', rec('a')]]);
    const o = await open(file);
    sameSizeEdit(file, 'Z', true);
    expect(statSync(file).mtimeMs).toBe(SECOND * 1000);
    const err = await errOf(o.store.put('b', { name: 'B' }));
    expect(err).toMatchObject({ code: 'E_STORE_CONFLICT', details: { adopted: 1, conflicts: 0 } });
    expect((await o.store.get('a'))?.name).toBe('Z');
    await o.store.put('b', { name: 'B' });
    expect(readData(file).a?.name).toBe('Z');
    await o.store.close();
  });

  it('a file created by another program where chatmem has none yet: seen before the write', async () => {
    const file = freshFile();
    const o = await open(file);
    writeFileSync(file, serializeSeed([['n', rec('n')]]));
    const err = await errOf(o.store.put('a', { name: 'A' }));
    expect(err).toMatchObject({ code: 'E_STORE_CONFLICT', details: { adopted: 1 } });
    expect(o.changes.map((c) => c.change.when)).toEqual(['before-write']);
    await o.store.close();
  });

  // In the instant chatmem moves the file away, the old inode is compared by inode, size and mtime
  // (its ctime changes with the move itself): each of the three alone must tell.
  const inTheSwap = async (edit: (file: string) => void) => {
    const file = fileAtSecond([['a', rec('a')]]);
    const o = await open(file);
    let hits = 0;
    setFsIo({
      rename: async (from, to) => {
        if (from === file && to.endsWith('.prev') && hits === 0) {
          hits++;
          edit(file);
        }
        return defaultFsIo.rename(from, to);
      },
    });
    await o.store.put('b', { name: 'B' });
    await o.driver.close();
    expect(hits).toBe(1);
    return { file, o };
  };

  it('a same-size edit with a new mtime is taken over', async () => {
    const { file, o } = await inTheSwap((f) => sameSizeEdit(f, 'Z', false));
    expect(o.changes.map((c) => c.change)).toEqual([{ when: 'during-write', adopted: 1, conflicts: 0, kept: null, unparsable: false }]);
    expect(readData(file).a?.name).toBe('Z');
    expect(readData(file).b?.name).toBe('B');
  });

  it('an edit of another size whose writer put the mtime back is taken over', async () => {
    const { file, o } = await inTheSwap((f) => {
      writeFileSync(f, serializeSeed([...Object.entries(readData(f)), ['n', rec('n')]]));
      utimesSync(f, SECOND, SECOND);
    });
    expect(o.changes.map((c) => c.change.adopted)).toEqual([1]);
    expect(Object.keys(readData(file))).toEqual(['a', 'b', 'n']);
  });

  it('a rename-writer of the same size and mtime (a new inode) is taken over', async () => {
    const { file, o } = await inTheSwap((f) => {
      const text = readFileSync(f, 'utf8').replace('"name": "A"', '"name": "Z"');
      const tmp = `${f}.script-tmp`;
      writeFileSync(tmp, text);
      utimesSync(tmp, SECOND, SECOND);
      renameSync(tmp, f);
    });
    expect(o.changes.map((c) => c.change.adopted)).toEqual([1]);
    expect(readData(file).a?.name).toBe('Z');
  });
});

describe('the default reporters write one line to stderr', () => {
  it('an outside change and a leftover removed at open: "chatmem: warning: " and the message', async () => {
    const file = freshFile([['a', rec('a')]]);
    const dead = spawnSync('true').pid;
    writeFileSync(path.join(path.dirname(file), `.memory.json.${dead}.0123abcd.tmp`), 'x');
    const lines: string[] = [];
    const write = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((chunk: string | Uint8Array) => {
      lines.push(String(chunk));
      return true;
    }) as typeof process.stderr.write;
    try {
      const driver = await JsonFileDriver.open(file);
      writeInPlace(file, serializeSeed([...Object.entries(readData(file)), ['n', rec('n')]]));
      await errOf(driver.update('b', () => rec('b') as never));
      await driver.close();
    } finally {
      process.stderr.write = write;
    }
    expect(lines).toEqual([
      `chatmem: warning: removed 1 temp file(s) an interrupted chatmem left beside ${file}\n`,
      `chatmem: warning: ${file} was changed by another program; chatmem took over its changes (1 user(s)) and did not apply this write. Retry the write.\n`,
    ]);
  });
});

describe("an interrupted chatmem's leftover when every outside name is taken", () => {
  it('open gives up after 100 names with E_STORE_OPEN naming the file: nothing replaced, the leftover left where it is', async () => {
    const file = freshFile([['a', rec('a', { name: 'current' })]]);
    const dir = path.dirname(file);
    const dead = spawnSync('true').pid;
    const prev = path.join(dir, `.memory.json.${dead}.0000000f.prev`);
    writeFileSync(prev, serializeSeed([['a', rec('a', { name: 'older' })]]));
    const stamp = '20260304T050607089Z';
    const taken = Array.from({ length: 101 }, (_, i) => `${file}.outside-${stamp}${i === 0 ? '' : `-${i}`}`);
    for (const [i, t] of taken.entries()) writeFileSync(t, `earlier ${i}`);
    let links = 0;
    setFsIo({
      link: async (from, to) => {
        if (from === prev) links++;
        return defaultFsIo.link(from, to);
      },
    });
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(new Date('2026-03-04T05:06:07.089Z'));
    const err = await JsonFileDriver.open(file, { warn: () => undefined }).then(
      () => null,
      (e: unknown) => e as { code?: string; message?: string },
    );
    expect(links).toBe(101);
    expect(err?.code).toBe('E_STORE_OPEN');
    expect(err?.message).toMatch(new RegExp(`^cannot open ${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: .*EEXIST`));
    expect(existsSync(`${file}.outside-${stamp}-101`)).toBe(false);
    for (const [i, t] of taken.entries()) expect(readFileSync(t, 'utf8')).toBe(`earlier ${i}`);
    expect(readData(prev).a?.name).toBe('older');
    expect(readData(file).a?.name).toBe('current');
  });
});

describe('what an error carries', () => {
  it('the file system error behind E_STORE_READ, E_STORE_OPEN and E_RECORD is kept as the cause', async () => {
    // A symlink loop: stat fails with ELOOP.
    const loop = freshFile();
    symlinkSync(loop, loop);
    expect(await JsonFileDriver.open(loop).catch((e: unknown) => e)).toMatchObject({ code: 'E_STORE_READ', cause: { code: 'ELOOP' } });
    // A directory under a regular file cannot be listed: ENOTDIR.
    const under = path.join(freshFile(), 'memory.json');
    writeFileSync(path.dirname(under), 'x');
    expect(await JsonFileDriver.open(under).catch((e: unknown) => e)).toMatchObject({ code: 'E_STORE_OPEN', cause: { code: 'ENOTDIR' } });
    // The pinned read's link fails: EIO.
    const file = freshFile([['a', rec('a')]]);
    const o = await open(file);
    writeInPlace(file, serializeSeed([['a', rec('a')], ['n', rec('n')]]));
    setFsIo({
      link: async (from, to) => {
        if (from === file && isTmp(to)) throw Object.assign(new Error('EIO: injected'), { code: 'EIO' });
        return defaultFsIo.link(from, to);
      },
    });
    expect(await errOf(o.store.put('b', { name: 'B' }))).toMatchObject({ code: 'E_STORE_READ', cause: { code: 'EIO' } });
    resetFsIo();
    // A record JSON cannot hold: the serialiser's TypeError.
    const bad = await o.driver.update('x', () => ({ ...(rec('x') as object), big: 1n }) as never).catch((e: unknown) => e);
    expect(bad).toMatchObject({ code: 'E_RECORD', cause: expect.any(TypeError) });
    await o.store.close();
  });
});

describe('records over the write limits', () => {
  it('a stored record deeper than a write may be still opens, and is taken over from an outside edit', async () => {
    let deep: Record<string, unknown> = { end: true };
    for (let i = 0; i < 70; i++) deep = { d: deep };
    const file = freshFile([['a', rec('a', { flags: deep })]]);
    const o = await open(file);
    expect(await o.store.count()).toBe(1);
    writeInPlace(file, serializeSeed([...Object.entries(readData(file)), ['n', rec('n', { flags: deep })]]));
    expect(await errOf(o.store.put('b', { name: 'B' }))).toMatchObject({ code: 'E_STORE_CONFLICT', details: { adopted: 1 } });
    expect(await o.store.get('n')).not.toBeNull();
    await o.store.close();
  });
});

describe('a user another program added without timestamps', () => {
  it('the same file touched again a second later is still no change: the next write is not refused', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(new Date('2026-03-04T05:06:07.000Z'));
    const file = freshFile([['a', rec('a')]]);
    const o = await open(file);
    const data = { ...readData(file), n: { user_id: 'n', name: 'N' } };
    writeInPlace(file, serializeSeed(Object.entries(data)));
    expect(await errOf(o.store.put('b', { name: 'B' }))).toMatchObject({ code: 'E_STORE_CONFLICT', details: { adopted: 1 } });
    // Read again at a later second: its timestamps are filled in with another time than the first reading's.
    vi.setSystemTime(new Date('2026-03-04T05:06:09.000Z'));
    writeInPlace(file, serializeSeed(Object.entries(data)));
    expect(await errOf(o.store.put('b', { name: 'B' }))).toBeNull();
    expect(o.changes).toHaveLength(1);
    expect(readData(file).b?.name).toBe('B');
    await o.store.close();
  });
});

describe('a disk that refuses one write of a coalesced batch, with writes queued before it', () => {
  it('each write queued before the one that does not fit is written without it', async () => {
    const file = freshFile([['a', rec('a')]]);
    const o = await open(file);
    let refused = 0;
    setFsIo({
      writeAll: refuseWritesHolding('TOO BIG', () => refused++),
    });
    const warm = o.store.put('w', { name: 'warm' });
    const before = [o.store.put('s0', { name: 'small 0' }), o.store.put('s1', { name: 'small 1' }), o.store.put('s2', { name: 'small 2' })];
    const big = errOf(o.store.put('big', { name: 'TOO BIG' }));
    const after = o.store.put('s3', { name: 'small 3' });
    await warm;
    expect((await Promise.all([...before, after])).map((r) => r.name)).toEqual(['small 0', 'small 1', 'small 2', 'small 3']);
    expect((await big)?.code).toBe('E_STORE_WRITE');
    expect(refused).toBeGreaterThan(1);
    expect(Object.keys(readData(file))).toEqual(['a', 'w', 's0', 's1', 's2', 's3']);
    await o.store.close();
  });
});
