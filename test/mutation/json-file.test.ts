// Fast checks of src/store/json-file.ts's promises, for mutation testing (the conformance suite and
// test/reliability/json-store.test.ts cost a minute per run): what the file holds after each kind of
// write, what reads and stats answer, what an outside edit does to the next write (taken over, kept
// aside, refused with E_STORE_CONFLICT, never overwritten), and what opening does with the leftovers of
// an interrupted chatmem. Real files in a temp dir; a real second process for "alive".
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync, utimesSync, writeFileSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serializeSeed } from '../../src/format/seed.js';
import type { MemoryRecord } from '../../src/record.js';
import { JsonFileDriver } from '../../src/store/json-file.js';
import { createStore } from '../../src/store/store.js';
import { jsonFileRoot, openJson, readData, rec, T0, type FileData } from '../helpers/json-file.js';

const T1 = '2026-01-02T00:00:00.000Z';

const { freshPath, freshFile } = jsonFileRoot('chatmem-jsonmut-');
const open = openJson;
// Moves each outside write's mtime on by one more millisecond, so no two look the same.
let tick = 0;
let live: ChildProcess;
let deadPid: number;

beforeAll(async () => {
  // sleep and true, not node: this runs once per mutant, and a node start costs most of a second under load.
  live = spawn('sleep', ['600'], { stdio: 'ignore' });
  const gone = spawn('true', [], { stdio: 'ignore' });
  deadPid = gone.pid ?? 0;
  await new Promise((resolve) => gone.on('exit', resolve));
});
afterAll(async () => {
  live.kill('SIGKILL');
});


/** Rewrites the file the way a script does (json.dump in place: same inode, new size or mtime). */
function outsideWrite(file: string, data: FileData): void {
  writeFileSync(file, serializeSeed(Object.entries(data)));
  // A rewrite within one clock tick with the same size would be invisible (the README's limit): move mtime on.
  const later = new Date(Date.now() + 5_000 + tick++);
  utimesSync(file, later, later);
}

const conflictOf = async (p: Promise<unknown>) =>
  p.then(
    () => null,
    (e: unknown) => e as { code: string; message: string; details: { file: string; kept: string | null; adopted: number; conflicts: number } },
  );

describe('reads and writes', () => {
  it('a missing file is an empty store; writes land in the file, 0600, in the seed format', async () => {
    const file = freshFile();
    const { driver, store } = await open(file);
    expect(driver.kind).toBe('json');
    expect(driver.url).toBe(`json:${file}`);
    expect(await store.count()).toBe(0);
    expect(existsSync(file)).toBe(false);
    await store.put('b', { name: 'B' });
    await store.put('a', { name: 'A' });
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const text = readFileSync(file, 'utf8');
    expect(text.startsWith('{\n  "b": {\n    "user_id": "b"')).toBe(true);
    expect(Object.keys(readData(file))).toEqual(['b', 'a']);
    await store.close();
    // No temp or swap file left beside it.
    expect(readdirSync(path.dirname(file)).sort()).toEqual(['memory.json']);
    // Reopened: the same records.
    const again = await open(file);
    expect((await again.store.get('a'))?.name).toBe('A');
    expect(await again.store.count()).toBe(2);
    await again.store.close();
  });

  it('a record is held as the file holds it: later changes to the caller object do not reach the store', async () => {
    const file = freshFile();
    const { driver } = await open(file);
    const input = rec('u', { flags: { v: 1 } }) as unknown as MemoryRecord;
    const stored = await driver.update('u', () => input);
    expect(stored).not.toBe(input);
    (input.flags as Record<string, unknown>).v = 2;
    expect((await driver.get('u'))?.flags).toEqual({ v: 1 });
    expect(await driver.get('nobody')).toBeNull();
    await driver.close();
  });

  it('a record that cannot be serialised is refused alone with E_RECORD; the store keeps working', async () => {
    const file = freshFile();
    const { driver, store } = await open(file);
    await store.put('a', { name: 'A' });
    await expect(driver.update('bad', () => ({ ...(rec('bad') as object), big: 10n }) as unknown as MemoryRecord)).rejects.toMatchObject({
      code: 'E_RECORD',
      message: expect.stringMatching(/^record of user "bad" cannot be serialised: .*BigInt/),
    });
    expect(await driver.get('bad')).toBeNull();
    await store.put('b', { name: 'B' });
    expect(Object.keys(readData(file))).toEqual(['a', 'b']);
    await store.close();
  });

  it('stats, list, scan and search answer from the records', async () => {
    const file = freshFile([
      ['c', rec('c', { updated_at: T1, history: [{ role: 'user', text: 'Modem mati', ts: T0 }] })],
      ['a', rec('a', { history: [{ role: 'user', text: 'x', ts: T0 }, { role: 'bot', text: 'y', ts: T0 }] })],
      ['b', rec('b', { name: 'Sari modem' })],
    ]);
    const { driver } = await open(file);
    const stats = await driver.stats();
    // The compact JSON of each record as held.
    let bytes = 0;
    for (const id of ['c', 'a', 'b']) bytes += Buffer.byteLength(JSON.stringify(await driver.get(id)));
    expect(bytes).toBeGreaterThan(300);
    expect(stats).toEqual({ users: 3, messages: 3, bytes, lastUpdate: T1 });
    expect((await driver.list({ cursor: null, limit: 2 })).map((u) => u.user_id)).toEqual(['a', 'b']);
    expect((await driver.list({ cursor: 'a', limit: 5 })).map((u) => u.user_id)).toEqual(['b', 'c']);
    expect((await driver.list({ cursor: 'c', limit: 5 })).map((u) => u.user_id)).toEqual([]);
    const scanned: string[] = [];
    for await (const r of driver.scan({ after: 'a' })) scanned.push(r.user_id);
    expect(scanned).toEqual(['b', 'c']);
    const all: string[] = [];
    for await (const [id] of driver.scanJson()) all.push(id);
    expect(all).toEqual(['a', 'b', 'c']);
    expect((await driver.search('modem', 10)).map((u) => u.user_id)).toEqual(['b', 'c']);
    expect((await driver.search('modem', 1)).map((u) => u.user_id)).toEqual(['b']);
    expect((await driver.search('nothing', 10)).map((u) => u.user_id)).toEqual([]);
    await driver.close();
    const empty = await open(freshFile());
    expect(await empty.driver.stats()).toEqual({ users: 0, messages: 0, bytes: 0, lastUpdate: null });
    await empty.driver.close();
  });

  it('exclusive sections: each change all-or-nothing, counted, in the file when it resolves', async () => {
    const file = freshFile([['a', rec('a')], ['b', rec('b')], ['c', rec('c')]]);
    const { driver } = await open(file);
    await driver.exclusive({ all: true } as never, async (ctx) => {
      expect((await ctx.getMany(['c', 'zz', 'a'])).map((r) => r.user_id)).toEqual(['c', 'a']);
      expect(await ctx.count()).toBe(3);
      expect(await ctx.delete(['a', 'zz'])).toBe(1);
      expect(Object.keys(readData(file))).toEqual(['b', 'c']);
      await ctx.putMany([rec('d') as unknown as MemoryRecord]);
      if (!ctx.putAndDelete || !ctx.scan) throw new Error('the JSON driver offers putAndDelete and scan in a section');
      await ctx.putAndDelete([rec('e') as unknown as MemoryRecord], ['b']);
      expect(Object.keys(readData(file))).toEqual(['c', 'd', 'e']);
      async function* two() {
        yield rec('f') as unknown as MemoryRecord;
        yield rec('c', { name: 'C2' }) as unknown as MemoryRecord;
      }
      expect(await ctx.putAll(two())).toBe(2);
      expect(readData(file).c?.name).toBe('C2');
      expect(Object.keys(readData(file))).toEqual(['c', 'd', 'e', 'f']);
      // A record that cannot be serialised fails the whole change: nothing of it is applied.
      await expect(ctx.putMany([rec('g') as unknown as MemoryRecord, { ...(rec('h') as object), big: 1n } as unknown as MemoryRecord])).rejects.toMatchObject({ code: 'E_RECORD' });
      expect(await ctx.count()).toBe(4);
      async function* one() {
        yield rec('z') as unknown as MemoryRecord;
      }
      expect(await ctx.replaceAll(one())).toBe(1);
      expect(Object.keys(readData(file))).toEqual(['z']);
      expect(await ctx.clear()).toBe(1);
      expect(readData(file)).toEqual({});
      const seen: string[] = [];
      for await (const r of ctx.scan()) seen.push(r.user_id);
      for await (const [id] of ctx.scanJson()) seen.push(id);
      expect(seen).toEqual([]);
    });
    await driver.close();
  });
});

describe('outside edits', () => {
  it('a file touched but unchanged: the write goes ahead, nothing reported', async () => {
    const file = freshFile([['a', rec('a')]]);
    const o = await open(file);
    outsideWrite(file, readData(file));
    await o.store.put('b', { name: 'B' });
    expect(o.changes).toEqual([]);
    expect(Object.keys(readData(file))).toEqual(['a', 'b']);
    await o.store.close();
  });

  it('a user added by another program is taken over; the racing write is refused with a message that says so', async () => {
    const file = freshFile([['a', rec('a')]]);
    const o = await open(file);
    outsideWrite(file, { ...readData(file), n: rec('n') });
    const err = await conflictOf(o.store.put('b', { name: 'B' }));
    const message = `${file} was changed by another program; chatmem took over its changes (1 user(s)) and did not apply this write. Retry the write.`;
    expect(err).toMatchObject({ code: 'E_STORE_CONFLICT', message, details: { file, kept: null, adopted: 1, conflicts: 0 } });
    expect(o.changes).toEqual([{ change: { when: 'before-write', adopted: 1, conflicts: 0, kept: null, unparsable: false }, message }]);
    expect((await o.store.get('n'))?.name).toBe('N');
    expect(await o.store.get('b')).toBeNull();
    await o.store.put('b', { name: 'B' });
    expect(Object.keys(readData(file))).toEqual(['a', 'n', 'b']);
    // Nothing kept aside: all of it was taken over.
    expect(readdirSync(path.dirname(file)).filter((f) => f.includes('outside'))).toEqual([]);
    await o.store.close();
  });

  it('a user removed by another program stays (a conflict), and its file is kept aside 0600', async () => {
    const file = freshFile([['a', rec('a')], ['b', rec('b')]]);
    const o = await open(file);
    const edited = readData(file);
    delete edited.a;
    outsideWrite(file, edited);
    const bytes = readFileSync(file);
    const err = await conflictOf(o.store.put('c', { name: 'C' }));
    const kept = err?.details.kept ?? '';
    expect(err).toMatchObject({
      code: 'E_STORE_CONFLICT',
      message: `${file} was changed by another program; 0 user(s) taken over, 1 not (chatmem's version kept); its version is kept at ${kept}. This write was not applied. Retry the write.`,
      details: { adopted: 0, conflicts: 1 },
    });
    expect(path.basename(kept)).toMatch(/^memory\.json\.outside-\d{8}T\d{9}Z$/);
    expect(readFileSync(kept)).toEqual(bytes);
    expect(statSync(kept).mode & 0o777).toBe(0o600);
    expect(o.changes.map((c) => c.change)).toEqual([{ when: 'before-write', adopted: 0, conflicts: 1, kept, unparsable: false }]);
    // chatmem's a is written back with the next write.
    await o.store.put('c', { name: 'C' });
    expect(Object.keys(readData(file))).toEqual(['a', 'b', 'c']);
    await o.store.close();
  });

  it('the file deleted by another program: nothing is lost, the write is refused, and the next one writes everything back', async () => {
    const file = freshFile([['a', rec('a')]]);
    const o = await open(file);
    rmSync(file);
    const err = await conflictOf(o.store.put('b', { name: 'B' }));
    expect(err?.message).toBe(`${file} was deleted by another program; 0 user(s) taken over, 1 not (chatmem's version kept). This write was not applied. Retry the write.`);
    expect(err?.details.kept).toBeNull();
    await o.store.put('b', { name: 'B' });
    expect(Object.keys(readData(file))).toEqual(['a', 'b']);
    await o.store.close();
  });

  it('a stale copy of what chatmem wrote before is not taken over, and is overwritten by close', async () => {
    const file = freshFile([['a', rec('a')]]);
    const o = await open(file);
    const before = readData(file);
    await o.store.put('a', { name: 'A2' });
    outsideWrite(file, before);
    const err = await conflictOf(o.store.put('b', { name: 'B' }));
    expect(err).toMatchObject({ code: 'E_STORE_CONFLICT', details: { adopted: 0, conflicts: 0, kept: null } });
    expect((await o.store.get('a'))?.name).toBe('A2');
    // Nothing else written: close still brings the file up to date.
    await o.store.close();
    expect(readData(file).a?.name).toBe('A2');
  });

  it("a user chatmem deleted is not brought back by a stale copy; an edit of it is a conflict", async () => {
    const file = freshFile([['a', rec('a')], ['b', rec('b')]]);
    const o = await open(file);
    const before = readData(file);
    await o.driver.exclusive({ ids: ['a'] } as never, (ctx) => ctx.delete(['a']));
    outsideWrite(file, before);
    let err = await conflictOf(o.store.put('c', { name: 'C' }));
    expect(err?.details).toMatchObject({ adopted: 0, conflicts: 0 });
    expect(await o.store.get('a')).toBeNull();
    await o.store.put('c', { name: 'C' });
    outsideWrite(file, { ...readData(file), a: rec('a', { name: 'edited' }) });
    err = await conflictOf(o.store.put('d', { name: 'D' }));
    expect(err?.details).toMatchObject({ adopted: 0, conflicts: 1 });
    expect(await o.store.get('a')).toBeNull();
    await o.store.close();
  });

  it('an edit of the latest version is taken over; an edit of an older one is merged field by field, or a conflict when fields overlap', async () => {
    const file = freshFile([['a', rec('a')], ['b', rec('b')]]);
    const o = await open(file);
    // Latest: taken over as a whole.
    outsideWrite(file, { ...readData(file), a: { ...readData(file).a, name: 'A by script', extra: 1 } });
    let err = await conflictOf(o.store.put('z', { name: 'Z' }));
    expect(err?.details).toMatchObject({ adopted: 1, conflicts: 0 });
    expect(await o.store.get('a')).toMatchObject({ name: 'A by script', extra: 1 });
    await o.store.put('z', { name: 'Z' });

    // Older: chatmem appended since; the script rewrites what it read before that.
    await o.store.put('c', { name: 'C', extra: 1, updated_at: T0 } as never);
    await o.store.put('d', { name: 'D', updated_at: T0 } as never);
    const old = readData(file);
    await o.store.appendHistory('c', { role: 'user', text: 'turn 1' });
    await o.store.appendHistory('d', { role: 'user', text: 'turn 1' });
    const c0 = { ...old.c, name: 'C renamed' } as Record<string, unknown>;
    delete c0.extra;
    outsideWrite(file, { ...readData(file), c: c0, d: { ...old.d, history: [{ role: 'user', text: 'rewritten', ts: T0 }] } });
    err = await conflictOf(o.store.put('y', { name: 'Y' }));
    expect(err?.details).toMatchObject({ adopted: 1, conflicts: 1 });
    const c = await o.store.get('c');
    expect(c).toMatchObject({ name: 'C renamed' });
    expect(c?.history.map((h) => h.text)).toEqual(['turn 1']);
    expect(c).not.toHaveProperty('extra');
    expect((await o.store.get('d'))?.history.map((h) => h.text)).toEqual(['turn 1']);
    await o.store.close();
  });

  it('a user added without timestamps is taken over, and the same file seen again is no new change', async () => {
    const file = freshFile([['a', rec('a')]]);
    const o = await open(file);
    const data = readData(file);
    data.n = { user_id: 'n', name: 'N' };
    outsideWrite(file, data);
    let err = await conflictOf(o.store.put('b', { name: 'B' }));
    expect(err?.details).toMatchObject({ adopted: 1, conflicts: 0 });
    // Touched again with the same content: read again, timestamps filled in anew, still equal.
    outsideWrite(file, data);
    err = await conflictOf(o.store.put('b', { name: 'B' }));
    expect(err).toBeNull();
    await o.store.close();
  });

  it('an observer that throws does not turn the handled change into another error', async () => {
    const file = freshFile([['a', rec('a')]]);
    const driver = await JsonFileDriver.open(file, {
      onOutsideChange: () => {
        throw new Error('observer broke');
      },
    });
    const store = createStore(driver);
    outsideWrite(file, { ...readData(file), n: rec('n') });
    expect((await conflictOf(store.put('b', { name: 'B' })))?.code).toBe('E_STORE_CONFLICT');
    expect(driver.report).toHaveLength(1);
    await store.close();
  });
});

describe('opening', () => {
  it('refuses a file that does not parse, naming it, and leaves it untouched', async () => {
    const file = freshFile();
    writeFileSync(file, '{"a": {"user_id": "a", "history": 5}}');
    const err = (await JsonFileDriver.open(file).catch((e: unknown) => e)) as { code: string; message: string; details: { file: string } };
    expect(err.code).toBe('E_STORE_PARSE');
    expect(err.message).toMatch(new RegExp(`^refusing to open ${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: .*history.*\\. The file was left untouched; fix it or restore a backup\\.$`));
    expect(err.details.file).toBe(file);
    expect(readFileSync(file, 'utf8')).toBe('{"a": {"user_id": "a", "history": 5}}');
  });

  it('a store under a regular file cannot be listed: E_STORE_OPEN', async () => {
    const dir = freshPath();
    writeFileSync(dir, 'x');
    await expect(JsonFileDriver.open(path.join(dir, 'memory.json'))).rejects.toMatchObject({ code: 'E_STORE_OPEN', message: expect.stringMatching(/^cannot list .*ENOTDIR/) });
  });

  it("removes dead processes' temp copies only, and says how many", async () => {
    const file = freshFile([['a', rec('a')]]);
    const dir = path.dirname(file);
    const dead = [`.memory.json.${deadPid}.0123abcd.tmp`, `.memory.json.${deadPid}.89abcdef.tmp`];
    const keep = [
      `.memory.json.${live.pid ?? 1}.0123abcd.tmp`,
      `.memory.json.${process.pid}.0123abcd.tmp`,
      `.memory.json.${deadPid}.0123abcd.tmpx`,
      `.memory.json.${deadPid}.0123abcg.tmp`,
      `.memory.json.${deadPid}.0123abc.tmp`,
      `x.memory.json.${deadPid}.0123abcd.tmp`,
      `.memory.jsonx.${deadPid}.0123abcd.tmp`,
      `.memory.json.${deadPid}x.0123abcd.tmp`,
    ];
    for (const f of [...dead, ...keep]) writeFileSync(path.join(dir, f), 'x');
    const o = await open(file);
    expect(o.warnings).toEqual([`removed 2 temp file(s) an interrupted chatmem left beside ${file}`]);
    for (const f of dead) expect(existsSync(path.join(dir, f)), f).toBe(false);
    for (const f of keep) expect(existsSync(path.join(dir, f)), f).toBe(true);
    await o.store.close();
    // Nothing to clean: nothing said.
    for (const f of keep) rmSync(path.join(dir, f));
    expect((await open(file)).warnings).toEqual([]);
  });

  it('a swapped-away file of a dead process is put back when the file is missing (the newest one), others kept aside', async () => {
    const file = freshFile();
    const dir = path.dirname(file);
    const older = path.join(dir, `.memory.json.${deadPid}.0000000a.prev`);
    const newer = path.join(dir, `.memory.json.${deadPid}.0000000b.prev`);
    const liveOne = path.join(dir, `.memory.json.${live.pid ?? 1}.0000000c.prev`);
    writeFileSync(newer, serializeSeed([['a', rec('a', { name: 'newest' })]]));
    writeFileSync(older, serializeSeed([['a', rec('a', { name: 'older' })]]));
    writeFileSync(liveOne, serializeSeed([['a', rec('a', { name: 'in flight' })]]));
    utimesSync(older, new Date('2026-01-01'), new Date('2026-01-01'));
    utimesSync(newer, new Date('2026-01-03'), new Date('2026-01-03'));
    const o = await open(file);
    expect((await o.store.get('a'))?.name).toBe('newest');
    expect(existsSync(newer)).toBe(false);
    expect(existsSync(older)).toBe(false);
    expect(existsSync(liveOne)).toBe(true);
    const outside = readdirSync(dir).filter((f) => f.startsWith('memory.json.outside-'));
    expect(outside).toHaveLength(1);
    const kept = path.join(dir, outside[0] ?? '');
    expect(readData(kept).a?.name).toBe('older');
    expect(statSync(kept).mode & 0o777).toBe(0o600);
    expect(o.warnings).toEqual([
      `restored ${file} from the copy an interrupted chatmem left`,
      `an interrupted chatmem left an older copy of ${file}; kept at ${kept} (0600) in case another program edited it then; remove it once checked`,
    ]);
    await o.store.close();
  });
});
