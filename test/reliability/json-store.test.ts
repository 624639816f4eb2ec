import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statfsSync, statSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JsonFileDriver, type OutsideChange } from '../../src/store/json-file.js';
import { serializeSeed } from '../../src/format/seed.js';
import { createStore } from '../../src/store/store.js';
import type { Store } from '../../src/store/types.js';
import { isChatmemError } from '../../src/errors.js';
import { DIST, tempDir } from '../helpers/tmp.js';

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

type Seed = Record<string, { history?: { text: string }[]; [k: string]: unknown }>;

/** The file as Python's json.load sees it: what the seed's tools would read. */
function pyLoad(file: string): Seed {
  const out = execFileSync('python3', ['-c', 'import json,sys; sys.stdout.write(json.dumps(json.load(open(sys.argv[1], encoding="utf-8"))))', file]);
  return JSON.parse(out.toString('utf8')) as Seed;
}

function textsOf(data: Seed): Set<string> {
  const out = new Set<string>();
  for (const r of Object.values(data)) for (const h of r.history ?? []) out.add(h.text);
  return out;
}

async function openJson(file: string, changes: { change: OutsideChange; message: string }[] = []): Promise<{ store: Store; driver: JsonFileDriver }> {
  const driver = await JsonFileDriver.open(file, { onOutsideChange: (change, message) => changes.push({ change, message }), warn: () => undefined });
  return { store: createStore(driver, { historyCap: 100_000 }), driver };
}

const isRoot = process.getuid?.() === 0;

describe('JSON store: a failed flush fails only its own writes', () => {
  let mnt = '';
  let cleanup: (() => Promise<void>) | null = null;

  beforeAll(async () => {
    if (!isRoot) return;
    const t = await tempDir('chatmem-enospc-');
    cleanup = t.cleanup;
    mnt = path.join(t.dir, 'small');
    mkdirSync(mnt);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k,mode=0700', 'tmpfs', mnt]);
  });
  afterAll(async () => {
    if (mnt && isRoot) execFileSync('umount', [mnt]);
    await cleanup?.();
  });

  it.skipIf(!isRoot)('ENOSPC on one large append coalesced with 100 small ones: it gets its own error, the small ones all land', async () => {
    const file = path.join(mnt, 'memory.json');
    const seeded = await openJson(file);
    for (let u = 0; u < 20; u++) await seeded.store.appendHistory(`u${u}`, { role: 'user', text: `seed-${u}` });
    await seeded.store.close();
    // Leave room for the small appends (old file + new temp side by side), not for the large one.
    const size = statSync(file).size;
    const fs = statfsSync(mnt);
    const free = fs.bavail * fs.bsize;
    writeFileSync(path.join(mnt, 'filler'), Buffer.alloc(Math.max(0, free - (2 * size + 28 * 1024))));

    const { store } = await openJson(file);
    // A flush is under way, so the large append and the small ones behind it are coalesced into the next one:
    // the failed file write is split until the large append is alone.
    const warm = store.appendHistory('u0', { role: 'user', text: 'warm' });
    const big = store.appendHistory('big', { role: 'user', text: 'x'.repeat(64 * 1024) });
    const smalls = Array.from({ length: 100 }, (_, i) => store.appendHistory(`u${i % 20}`, { role: 'user', text: `small-${i}` }));
    const bigErr = await big.then(
      () => null,
      (e: unknown) => e,
    );
    const results = await Promise.allSettled([warm, ...smalls]);
    await store.close();

    expect(bigErr).toMatchObject({ code: 'E_STORE_WRITE' });
    expect(String((bigErr as Error).message)).toMatch(/ENOSPC|no space/i);
    const failed = results.filter((r) => r.status === 'rejected');
    expect(failed).toEqual([]);

    const again = await openJson(file);
    expect(await again.store.get('big')).toBeNull();
    for (let i = 0; i < 100; i++) {
      expect((await again.store.get(`u${i % 20}`))?.history.some((h) => h.text === `small-${i}`)).toBe(true);
    }
    await again.store.close();
    const texts = textsOf(pyLoad(file));
    const lost = Array.from({ length: 100 }, (_, i) => `small-${i}`).filter((x) => !texts.has(x));
    console.log(JSON.stringify({ kind: 'enospc', acked: results.length - failed.length, lost: lost.length }));
    expect(texts.has('warm')).toBe(true);
    expect(lost).toEqual([]);
    // The failed temp copy of the whole store is gone.
    expect(readdirSync(mnt).sort()).toEqual(['filler', 'memory.json']);
  });

  it.runIf(!isRoot)('ENOSPC test needs root to mount a small tmpfs', () => {
    console.warn('SKIPPED: the ENOSPC test mounts a 256 KiB tmpfs and needs root (CI runs as root)');
  });

  it('one record JSON.stringify cannot serialise fails alone; later writes, stats and backups keep working', async () => {
    const t = await tempDir();
    try {
      const file = path.join(t.dir, 'memory.json');
      const { store } = await openJson(file);
      await store.appendHistory('a', { role: 'user', text: 'before' });
      let deep: unknown = 1;
      for (let i = 0; i < 5000; i++) deep = { d: deep };
      const hostile = store.patch('evil', { nested: deep } as never);
      const after = Array.from({ length: 20 }, (_, i) => store.appendHistory('a', { role: 'user', text: `after-${i}` }));
      const err = await hostile.then(
        () => null,
        (e: unknown) => e,
      );
      expect(isChatmemError(err)).toBe(true);
      expect((err as { code: string }).code).toMatch(/^E_RECORD/);
      await Promise.all(after);
      expect((await store.stats()).users).toBe(1);
      const lines: string[] = [];
      for await (const [id, json] of store.scanJson()) lines.push(`${id}:${json.length}`);
      expect(lines).toHaveLength(1);
      await store.appendHistory('b', { role: 'user', text: 'later' });
      await store.close();
      const data = pyLoad(file);
      expect(Object.keys(data).sort()).toEqual(['a', 'b']);
      expect(textsOf(data).has('after-19')).toBe(true);
    } finally {
      await t.cleanup();
    }
  });

  it('an outside edit injected while 300+ appends are queued: every acknowledged append is in the file, the edit too', async () => {
    const t = await tempDir();
    try {
      const file = path.join(t.dir, 'memory.json');
      const changes: { change: OutsideChange; message: string }[] = [];
      const { store } = await openJson(file, changes);
      for (let u = 0; u < 10; u++) await store.appendHistory(`u${u}`, { role: 'user', text: `seed-${u}` });
      const acked: string[] = [];
      const refused: { text: string; code: string }[] = [];
      const all: Promise<void>[] = [];
      for (let i = 0; i < 400; i++) {
        const text = `q-${i}`;
        all.push(
          store.appendHistory(`u${i % 10}`, { role: 'user', text }).then(
            () => void acked.push(text),
            (e: unknown) => void refused.push({ text, code: isChatmemError(e) ? e.code : String(e) }),
          ),
        );
        if (i === 150) {
          // Some appends are acknowledged before the edit, whatever the machine's load (under load none
          // of the 400 was, once: all were still queued when the edit landed, and all were refused).
          await all[100];
          // An operator's script rewrites the file in place (open 'w' truncates, then writes).
          const data = JSON.parse(readFileSync(file, 'utf8')) as Seed;
          data.operator = { user_id: 'operator', name: 'added by hand' };
          writeFileSync(file, serializeSeed(Object.entries(data)));
        }
        if (i % 50 === 0) await new Promise<void>((resolve) => setImmediate(resolve));
      }
      await Promise.all(all);
      // The same stream continues after the conflict.
      for (let i = 400; i < 420; i++) {
        await store.appendHistory(`u${i % 10}`, { role: 'user', text: `q-${i}` });
        acked.push(`q-${i}`);
      }
      await store.close();

      const data = pyLoad(file);
      const texts = textsOf(data);
      const lost = acked.filter((x) => !texts.has(x));
      console.log(JSON.stringify({ kind: 'conflict-queued', acked: acked.length, refused: refused.length, lost: lost.length }));
      expect(lost).toEqual([]);
      expect(refused.every((r) => r.code === 'E_STORE_CONFLICT')).toBe(true);
      // A 409 means "not applied": a retry cannot duplicate it.
      expect(refused.filter((r) => texts.has(r.text))).toEqual([]);
      expect(data.operator?.name).toBe('added by hand');
      expect(changes.length).toBeGreaterThan(0);
      expect(acked).toContain('q-100');
      expect(acked.length).toBeGreaterThan(20);
    } finally {
      await t.cleanup();
    }
  });
});

/**
 * The seed's three ways of writing memory.json, as one long-lived Python process per writer (one edit per
 * line on stdin, "ok" or "err" back), so interpreter start-up on a loaded machine does not pace the edits.
 */
const WRITER = `
import json, os, subprocess, sys
p, kind = sys.argv[1], sys.argv[2]
for line in sys.stdin:
    m = line.strip()
    try:
        if kind == "inplace":
            # The seed's scripts: json.load, change, json.dump over the same file (truncate, then write).
            d = json.load(open(p, encoding="utf-8"))
            d[m] = {"user_id": m, "name": "marker"}
            json.dump(d, open(p, "w", encoding="utf-8"), indent=2, ensure_ascii=False)
        elif kind == "copy":
            # An operator: prepare other.json, then cp it over memory.json.
            other = os.path.join(os.path.dirname(p), "other.json")
            d = json.load(open(p, encoding="utf-8"))
            d[m] = {"user_id": m, "name": "marker"}
            with open(other, "w", encoding="utf-8") as f:
                json.dump(d, f, indent=2, ensure_ascii=False)
            subprocess.run(["cp", other, p], check=True)
        else:
            # The seed's MemoryStore: a missing file is an empty store; temp file, then os.replace.
            try:
                d = json.load(open(p, encoding="utf-8"))
            except FileNotFoundError:
                d = {}
            d[m] = {"user_id": m, "name": "marker"}
            tmp = p + ".seed-tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(d, f, indent=2, ensure_ascii=False)
            os.replace(tmp, p)
        print("ok", flush=True)
    except Exception as e:
        print("err " + type(e).__name__, flush=True)
`;

function startWriter(file: string, kind: string): { edit(marker: string): Promise<string>; stop(): void } {
  const child = spawn('python3', ['-c', WRITER, file, kind], { stdio: ['pipe', 'pipe', 'inherit'] });
  let buf = '';
  const waiting: ((line: string) => void)[] = [];
  child.stdout.on('data', (d: Buffer) => {
    buf += d.toString('utf8');
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      waiting.shift()?.(line);
    }
  });
  return {
    edit: (marker) =>
      new Promise<string>((resolve) => {
        waiting.push(resolve);
        child.stdin.write(marker + '\n');
      }),
    stop: () => child.stdin.end(),
  };
}

// Each writer gets its own store and directory, so the three run side by side.
describe.concurrent('JSON store: the seed tools edit the file while chat writes keep arriving', () => {
  for (const kind of ['inplace', 'copy', 'replace'] as const) {
    it(`${kind}: no marker edit and no acknowledged append is lost, and edits landed during flushes`, async () => {
      const t = await tempDir();
      try {
        const file = path.join(t.dir, 'memory.json');
        const changes: { change: OutsideChange; message: string }[] = [];
        const { store } = await openJson(file, changes);
        for (let u = 0; u < 30; u++) await store.appendHistory(`chat-${u}`, { role: 'user', text: `seed-${u}` });

        const acked: string[] = [];
        const refused: { text: string; code: string }[] = [];
        const inflight = new Set<Promise<void>>();
        let stop = false;
        let seq = 0;
        const started = Date.now();
        // 25 appends per second of wall time, caught up after any stall, whatever the store does: at least
        // 20 writes/s are offered throughout, even on a loaded machine.
        const chat = (async () => {
          while (!stop) {
            const due = Math.floor(((Date.now() - started) / 1000) * 25) + 1;
            while (seq < due) {
              const text = `c-${seq++}`;
              const p = store.appendHistory(`chat-${seq % 30}`, { role: 'user', text }).then(
                () => void acked.push(text),
                (e: unknown) => void refused.push({ text, code: isChatmemError(e) ? e.code : String(e) }),
              );
              inflight.add(p);
              void p.finally(() => inflight.delete(p));
            }
            await sleep(20);
          }
        })();

        const writer = startWriter(file, kind);
        const markers: string[] = [];
        let failedRuns = 0;
        const deadline = Date.now() + 25_000;
        const during = () => changes.filter((c) => c.change.when === 'during-write').length;
        const before = () => changes.filter((c) => c.change.when === 'before-write').length;
        // 20 edits; more (bounded) until edits were caught both between flushes and during one.
        for (let i = 0; i < 80 && Date.now() < deadline && (markers.length < 20 || during() === 0 || before() === 0); i++) {
          const m = `marker-${kind}-${i}`;
          const answer = await writer.edit(m);
          if (answer === 'ok') markers.push(m);
          // The writer failed before writing (e.g. it read in the instant the file was being swapped): no edit made.
          else failedRuns++;
          await sleep(20 + (i % 4) * 15);
        }
        writer.stop();
        stop = true;
        const offeredPerS = seq / ((Date.now() - started) / 1000);
        await chat;
        await Promise.all([...inflight]);
        await store.close();

        const final = pyLoad(file);
        const reported = changes.map((c) => c.change.kept).filter((k): k is string => k !== null);
        // Every outside file chatmem left beside the store was reported.
        const asides = readdirSync(t.dir).filter((n) => n.startsWith('memory.json.outside-')).map((n) => path.join(t.dir, n));
        expect(asides.filter((a) => !reported.includes(a))).toEqual([]);
        for (const a of asides) expect(statSync(a).mode & 0o777).toBe(0o600);
        const keptData = asides.map((a) => pyLoad(a));
        const lostEdits = markers.filter((m) => !(m in final) && !keptData.some((d) => m in d));
        const texts = textsOf(final);
        const lostAcked = acked.filter((x) => !texts.has(x));
        const appliedRefused = refused.filter((r) => texts.has(r.text));
        const summary = {
          kind,
          edits: markers.length,
          failedRuns,
          adoptedMarkers: markers.filter((m) => m in final).length,
          acked: acked.length,
          refused: refused.length,
          refusedCodes: [...new Set(refused.map((r) => r.code))],
          offeredPerS: Math.round(offeredPerS),
          caughtBefore: before(),
          caughtDuring: during(),
          keptAside: asides.length,
          lostEdits: lostEdits.length,
          lostAcked: lostAcked.length,
          appliedRefused: appliedRefused.length,
        };
        console.log(JSON.stringify(summary));
        expect(lostEdits).toEqual([]);
        expect(lostAcked).toEqual([]);
        expect(appliedRefused).toEqual([]);
        // Refused means not applied: an outside change found (409), or a file still half-written after the retries.
        expect(refused.filter((r) => r.code !== 'E_STORE_CONFLICT' && r.code !== 'E_STORE_PARSE')).toEqual([]);
        expect(markers.length).toBeGreaterThanOrEqual(20);
        // The race really happened, both ways: edits caught between flushes and while a flush was replacing the file.
        expect(summary.caughtDuring).toBeGreaterThan(0);
        expect(summary.caughtBefore).toBeGreaterThan(0);
      } finally {
        await t.cleanup();
      }
    });
  }
});

describe('JSON store: leftovers of an interrupted chatmem', () => {
  it('opening (library and CLI) removes its own stale temp copies only, and puts a swapped-away file back', async () => {
    const t = await tempDir();
    const sleeper = spawn('sleep', ['60']);
    try {
      const file = path.join(t.dir, 'memory.json');
      writeFileSync(file, serializeSeed([['6281', { user_id: '6281', name: 'Budi' }]]), { mode: 0o600 });
      const deadPid = 4_000_000 + (process.pid % 1000);
      const dead = [`.memory.json.${deadPid}.0123abcd.tmp`, `.memory.json.${deadPid}.89abcdef.tmp`];
      const keep = [
        `.memory.json.${sleeper.pid ?? 1}.0123abcd.tmp`, // a live process's in-flight temp
        `.memory.json.${process.pid}.0123abcd.tmp`, // this process's
        '.memory.json.tmp',
        'memory.json.bak',
        `.other.json.${deadPid}.0123abcd.tmp`, // another file's
        `memory.json.${deadPid}.0123abcd.tmp`, // not a name chatmem makes (no leading dot)
      ];
      for (const n of [...dead, ...keep]) writeFileSync(path.join(t.dir, n), 'x');
      const { store } = await openJson(file);
      expect((await store.get('6281'))?.name).toBe('Budi');
      await store.close();
      for (const n of dead) expect(existsSync(path.join(t.dir, n))).toBe(false);
      for (const n of keep) expect(existsSync(path.join(t.dir, n))).toBe(true);

      // Interrupted between moving the file away and linking the new one in.
      const prev = path.join(t.dir, `.memory.json.${deadPid}.0123abcd.prev`);
      const tmp = path.join(t.dir, `.memory.json.${deadPid}.fedcba98.tmp`);
      execFileSync('mv', [file, prev]);
      writeFileSync(tmp, serializeSeed([['6281', { user_id: '6281', name: 'not acknowledged' }]]));
      if (existsSync(path.join(DIST, 'cli/bin.js'))) {
        execFileSync(process.execPath, [path.join(DIST, 'cli/bin.js'), 'users', '--store', `json:${file}`, '--json'], { cwd: t.dir, stdio: 'pipe' });
      } else {
        await (await openJson(file)).store.close();
      }
      expect(existsSync(prev)).toBe(false);
      expect(existsSync(tmp)).toBe(false);
      expect((pyLoad(file)['6281'] as { name: string }).name).toBe('Budi');

      // A moved-away copy while the file exists may hold another program's write of that instant: kept and reported, not removed.
      const prev2 = path.join(t.dir, `.memory.json.${deadPid}.0badcafe.prev`);
      writeFileSync(prev2, serializeSeed([['6281', { user_id: '6281', name: 'written by a script' }]]));
      const warnings: string[] = [];
      await (await JsonFileDriver.open(file, { warn: (m) => warnings.push(m) })).close();
      expect(existsSync(prev2)).toBe(false);
      const outside = readdirSync(t.dir).filter((n) => n.startsWith('memory.json.outside-'));
      expect(outside).toHaveLength(1);
      expect(readFileSync(path.join(t.dir, outside[0] ?? ''), 'utf8')).toContain('written by a script');
      expect(statSync(path.join(t.dir, outside[0] ?? '')).mode & 0o777).toBe(0o600);
      expect(warnings.some((w) => w.includes(outside[0] ?? '?'))).toBe(true);
    } finally {
      sleeper.kill();
      rmSync(t.dir, { recursive: true, force: true });
    }
  });
});
