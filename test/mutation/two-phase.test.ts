import { existsSync, mkdirSync, promises as fsp, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { finishParts, mergeSorted, PartsWriter, partsOp, type PartsManifest, type SealedParts } from '../../src/backup/two-phase.js';
import { defaultFsIo, resetFsIo, setFsIo } from '../../src/fsio.js';
import { errnoError } from '../reliability/fs-faults.js';
import { tempDir } from '../helpers/tmp.js';
import { openUnder } from '../helpers/fd.js';

// The promises of the two-phase backup (src/backup/two-phase.ts): every part is durable and checked
// before the next step; the seal is the pre-image on disk; the final content is the snapshot with every
// round and the seal applied; start-up recovery finishes sealed parts, removes unsealed ones, and never
// removes parts that may be the only copy.

async function* from<T>(items: T[]): AsyncGenerator<T> {
  yield* items;
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const e of it) out.push(e);
  return out;
}

const realRm = fsp.rm.bind(fsp);
const rec = (id: string, v: string) => JSON.stringify({ user_id: id, v });
const ls = (dir: string) => readdirSync(dir).sort();
const manifestOf = (dir: string, op: string) => JSON.parse(readFileSync(path.join(dir, `.parts-${op}.json`), 'utf8')) as PartsManifest;

async function sealedSet(dir: string, op: string): Promise<PartsWriter> {
  const w = new PartsWriter(dir, op, { reason: 'clear-all', source: 'sqlite:x' });
  await w.snapshot(from([['a', rec('a', '1')], ['b', rec('b', '1')], ['c', rec('c', '1')]] as [string, string][]));
  await w.delta(new Map([['b', rec('b', '2')], ['d', rec('d', '2')]]));
  await w.delta(new Map<string, string | null>([['c', null]]));
  await w.seal(new Map<string, string | null>([['a', null], ['e', rec('e', '3')]]));
  return w;
}

const failed = (p: Promise<unknown>): Promise<unknown> =>
  p.then(
    () => null,
    (e: unknown) => e,
  );

describe('partsOp', () => {
  it('names the op of every parts file and nothing else', () => {
    expect(partsOp('.parts-op-1A.json')).toBe('op-1A');
    expect(partsOp('.parts-op-1A.sealed')).toBe('op-1A');
    expect(partsOp('.parts-op-1A.snapshot')).toBe('op-1A');
    expect(partsOp('.parts-op-1A.delta-12')).toBe('op-1A');
    for (const n of ['.parts-op.delta-', '.parts-op.delta-x', '.parts-op.json.tmp', 'x.parts-op.json', '.parts-.json', '.parts-o_p.json', '.parts-op.other', 'memory_backup_20260101_000000.json']) {
      expect(partsOp(n), n).toBeNull();
    }
  });
});

describe('mergeSorted', () => {
  it('merges in user_id order; the last source wins for an id, and null removes it', async () => {
    const out = await collect(
      mergeSorted([
        from<[string, string | null]>([['a', 'a0'], ['c', 'c0'], ['e', 'e0']]),
        from<[string, string | null]>([['b', 'b1'], ['c', null], ['e', 'e1']]),
        from<[string, string | null]>([]),
        from<[string, string | null]>([['c', 'c3'], ['f', null]]),
      ]),
    );
    expect(out).toEqual([['a', 'a0'], ['b', 'b1'], ['c', 'c3'], ['e', 'e1']]);
    expect(await collect(mergeSorted([]))).toEqual([]);
    // compareIds' order, not string order of another kind: numbers as text.
    expect((await collect(mergeSorted([from<[string, string | null]>([['10', 'x'], ['9', 'y']])]))).map(([id]) => id)).toEqual(['10', '9']);
  });
});

describe('PartsWriter', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir('chatmem-2pm-'));
  });
  afterEach(async () => {
    resetFsIo();
    await cleanup();
  });

  it('records each step in its manifest, and the final content is the snapshot with every round and the seal applied', async () => {
    const w = new PartsWriter(dir, 'op1', { reason: 'restore', source: 'sqlite:x' });
    // The manifest comes first, naming the writer, so a killed snapshot copy is known to be unsealed.
    let seenFirst: PartsManifest | null = null;
    async function* snap(): AsyncGenerator<[string, string]> {
      seenFirst = manifestOf(dir, 'op1');
      yield ['a', rec('a', '1')];
      yield ['b', rec('b', '1')];
      yield ['c', rec('c', '1')];
    }
    const before = Date.now();
    await w.snapshot(snap());
    expect(seenFirst).toMatchObject({ format: 'chatmem-parts', formatVersion: 1, op: 'op1', reason: 'restore', source: 'sqlite:x', writer: { pid: process.pid, host: hostname() }, snapshot: null, deltas: [] });
    const created = Date.parse((seenFirst as unknown as PartsManifest).created_at);
    expect(created).toBeGreaterThanOrEqual(before - 1);
    expect(created).toBeLessThanOrEqual(Date.now() + 1);
    const snapText = readFileSync(path.join(dir, '.parts-op1.snapshot'), 'utf8');
    expect(snapText).toBe(`"a"\t${rec('a', '1')}\n"b"\t${rec('b', '1')}\n"c"\t${rec('c', '1')}\n`);
    expect(statSync(path.join(dir, '.parts-op1.snapshot')).mode & 0o777).toBe(0o600);
    const m1 = manifestOf(dir, 'op1');
    expect(m1.snapshot).toEqual({ file: '.parts-op1.snapshot', users: 3, bytes: Buffer.byteLength(snapText), sha256: m1.snapshot?.sha256 });
    expect(m1.snapshot?.sha256).toMatch(/^[0-9a-f]{64}$/);

    await w.delta(new Map([['d', rec('d', '2')], ['b', rec('b', '2')]]));
    await w.delta(new Map<string, string | null>([['c', null]]));
    const m2 = manifestOf(dir, 'op1');
    expect(m2.deltas.map((d) => [d.file, d.users])).toEqual([['.parts-op1.delta-1', 2], ['.parts-op1.delta-2', 1]]);
    // A round is written sorted, a gone user as null.
    expect(readFileSync(path.join(dir, '.parts-op1.delta-1'), 'utf8')).toBe(`"b"\t${rec('b', '2')}\n"d"\t${rec('d', '2')}\n`);
    expect(readFileSync(path.join(dir, '.parts-op1.delta-2'), 'utf8')).toBe('"c"\tnull\n');

    await w.seal(new Map<string, string | null>([['e', rec('e', '3')], ['a', null]]));
    const sealText = readFileSync(path.join(dir, '.parts-op1.sealed'), 'utf8');
    const [head, ...body] = sealText.split('\n');
    expect(JSON.parse(head ?? '')).toEqual({
      format: 'chatmem-parts-seal',
      op: 'op1',
      snapshotSha256: m1.snapshot?.sha256,
      deltas: 2,
      users: 2,
      bytes: Buffer.byteLength(body.join('\n')),
      sha256: JSON.parse(head ?? '').sha256,
    });
    expect(body.join('\n')).toBe(`"a"\tnull\n"e"\t${rec('e', '3')}\n`);

    const sealed = w.sealed();
    expect(sealed.manifest.op).toBe('op1');
    expect(sealed.seal.users).toBe(2);
    expect(await collect(sealed.entries())).toEqual([['b', rec('b', '2')], ['d', rec('d', '2')], ['e', rec('e', '3')]]);
    // Twice: the content is read from the parts each time.
    expect((await collect(sealed.entries())).length).toBe(3);
  });

  it('refuses a round, a seal or the content before the steps they need', async () => {
    const w = new PartsWriter(dir, 'op2', { reason: 'clear-all', source: 's' });
    for (const e of [await failed(w.delta(new Map())), await failed(w.seal(new Map()))]) {
      expect(e).toMatchObject({ code: 'E_BACKUP_WRITE', message: 'backup parts of op2: no snapshot yet' });
    }
    expect(() => w.sealed()).toThrow(expect.objectContaining({ code: 'E_BACKUP_WRITE', message: 'backup parts of op2: no snapshot yet' }));
    await w.snapshot(from<[string, string]>([]));
    expect(() => w.sealed()).toThrow(expect.objectContaining({ code: 'E_BACKUP_WRITE', message: 'backup parts of op2 are not sealed' }));
    expect(ls(dir)).toEqual(['.parts-op2.json', '.parts-op2.snapshot']);
  });

  it('remove() removes every part of its op and nothing else', async () => {
    const w = await sealedSet(dir, 'op3');
    await sealedSet(dir, 'op3x');
    writeFileSync(path.join(dir, 'memory_backup_20260101_000000.json'), '{}');
    await w.remove();
    expect(ls(dir)).toEqual(['.parts-op3x.delta-1', '.parts-op3x.delta-2', '.parts-op3x.json', '.parts-op3x.sealed', '.parts-op3x.snapshot', 'memory_backup_20260101_000000.json']);
  });

  it('a part that does not read back as written is refused (E_BACKUP_VERIFY) and removed', async () => {
    // The fsync is the last step before the re-read: change one byte there.
    setFsIo({
      sync: async (fh, file) => {
        if (file.endsWith('.snapshot')) writeFileSync(file, readFileSync(file, 'utf8').replace('"1"', '"2"'));
        return defaultFsIo.sync(fh, file);
      },
    });
    const w = new PartsWriter(dir, 'op4', { reason: 'clear-all', source: 's' });
    const e = await failed(w.snapshot(from<[string, string]>([['a', rec('a', '1')], ['b', rec('b', '1')]])));
    expect(e).toMatchObject({ code: 'E_BACKUP_VERIFY' });
    expect((e as Error).message).toMatch(/^backup part \.parts-op4\.snapshot did not verify: wrote 2 lines \(sha256 [0-9a-f]{64}\), read back 2 \(sha256 [0-9a-f]{64}\)$/);
    expect(ls(dir)).toEqual(['.parts-op4.json']);
    expect(manifestOf(dir, 'op4').snapshot).toBeNull();
  });

  it('a failed write of a part is refused with E_BACKUP_WRITE and its cause, and the part removed', async () => {
    const err = errnoError('EIO', 'fsync');
    setFsIo({
      sync: async (fh, file) => {
        if (file.endsWith('.delta-1')) throw err;
        return defaultFsIo.sync(fh, file);
      },
    });
    const w = new PartsWriter(dir, 'op5', { reason: 'clear-all', source: 's' });
    await w.snapshot(from<[string, string]>([['a', rec('a', '1')]]));
    const e = await failed(w.delta(new Map([['a', rec('a', '2')]])));
    expect(e).toMatchObject({ code: 'E_BACKUP_WRITE', cause: err });
    expect((e as Error).message).toBe(`cannot write backup part ${path.join(dir, '.parts-op5.delta-1')}: ${err.message}`);
    expect(ls(dir)).toEqual(['.parts-op5.json', '.parts-op5.snapshot']);
    expect(manifestOf(dir, 'op5').deltas).toEqual([]);
  });

  it('a failed manifest or seal write is refused with E_BACKUP_WRITE and its cause', async () => {
    const err = errnoError('ENOSPC', 'rename');
    let target = '.parts-op6.json';
    setFsIo({
      rename: async (from, to) => {
        if (path.basename(to) === target) throw err;
        return defaultFsIo.rename(from, to);
      },
    });
    const w = new PartsWriter(dir, 'op6', { reason: 'clear-all', source: 's' });
    const e1 = await failed(w.snapshot(from<[string, string]>([['a', rec('a', '1')]])));
    expect(e1).toMatchObject({ code: 'E_BACKUP_WRITE', cause: expect.objectContaining({ code: 'ENOSPC' }) });
    expect((e1 as Error).message).toBe(`cannot write backup part ${path.join(dir, '.parts-op6.json')}: ${(e1 as { cause: Error }).cause.message}`);
    target = '.parts-op6.sealed';
    await w.snapshot(from<[string, string]>([['a', rec('a', '1')]]));
    const e2 = await failed(w.seal(new Map([['a', null]])));
    expect(e2).toMatchObject({ code: 'E_BACKUP_WRITE' });
    expect(existsSync(path.join(dir, '.parts-op6.sealed'))).toBe(false);
    expect(() => w.sealed()).toThrow(expect.objectContaining({ message: 'backup parts of op6 are not sealed' }));
  });

  it('a seal gone right after its rename (another process removed it) is refused with E_BACKUP_VERIFY: the change must not commit', async () => {
    setFsIo({
      rename: async (from, to) => {
        await defaultFsIo.rename(from, to);
        // Between the seal's rename and its read-back: the file the change would rely on is gone.
        if (path.basename(to) === '.parts-op9.sealed') await fsp.rm(to);
      },
    });
    const w = new PartsWriter(dir, 'op9', { reason: 'clear-all', source: 's' });
    await w.snapshot(from<[string, string]>([['a', rec('a', '1')]]));
    const e = await failed(w.seal(new Map([['a', null]])));
    expect(e).toMatchObject({ code: 'E_BACKUP_VERIFY', message: 'backup parts of op9: the seal is not on disk after writing it' });
    expect(() => w.sealed()).toThrow(expect.objectContaining({ message: 'backup parts of op9 are not sealed' }));
  });

  it('leaves no descriptor open after writing parts and a seal', async () => {
    for (let i = 0; i < 3; i++) await sealedSet(dir, `fd${i}`);
    expect(openUnder(dir)).toEqual([]);
  });

  it('removes the seal first, then the manifest, then the data: a removal killed half-way reads as never sealed', async () => {
    const w = await sealedSet(dir, 'opo');
    const removed: string[] = [];
    const spy = vi.spyOn(fsp, 'rm').mockImplementation(async (p, o) => {
      removed.push(path.basename(String(p)));
      return realRm(p, o);
    });
    try {
      await w.remove();
    } finally {
      spy.mockRestore();
    }
    expect(removed.slice(0, 2)).toEqual(['.parts-opo.sealed', '.parts-opo.json']);
    expect(ls(dir)).toEqual([]);
    // Once more, with the directory itself gone: nothing to do, no error.
    await fsp.rm(dir, { recursive: true });
    await w.remove();
  });

  it('a large part crosses the write batch and the read chunk, and reads back whole', async () => {
    const big = 'x'.repeat(300_000);
    const ids = Array.from({ length: 12 }, (_, i) => `u${String(i).padStart(2, '0')}`);
    const w = new PartsWriter(dir, 'op7', { reason: 'clear-all', source: 's' });
    await w.snapshot(from(ids.map((id): [string, string] => [id, JSON.stringify({ big, id })])));
    await w.seal(new Map());
    const out = await collect(w.sealed().entries());
    expect(out.map(([id]) => id)).toEqual(ids);
    expect(out.every(([id, t]) => t === JSON.stringify({ big, id }))).toBe(true);
    expect(manifestOf(dir, 'op7').snapshot?.users).toBe(12);
  });
});

describe('finishParts (start-up recovery)', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir('chatmem-2pf-'));
  });
  afterEach(async () => {
    resetFsIo();
    await cleanup();
  });

  const dead = () => false;
  const notPublished = async () => false;
  const written: { op: string; entries: [string, string][]; reason: string; source: string }[] = [];
  const write = async (p: SealedParts): Promise<string> => {
    written.push({ op: p.manifest.op, entries: await collect(p.entries()), reason: p.manifest.reason, source: p.manifest.source });
    return `backup-of-${p.manifest.op}`;
  };
  beforeEach(() => {
    written.length = 0;
  });

  it('finishes sealed parts of a dead writer into the final backup, then removes them', async () => {
    await sealedSet(dir, 'opf');
    const report = await finishParts(dir, dead, notPublished, write);
    expect(report).toEqual({ removedUnsealed: [], removedPublished: [], finished: ['backup-of-opf'], kept: [] });
    expect(written).toEqual([{ op: 'opf', entries: [['b', rec('b', '2')], ['d', rec('d', '2')], ['e', rec('e', '3')]], reason: 'clear-all', source: 'sqlite:x' }]);
    expect(ls(dir)).toEqual([]);
  });

  it("leaves a live writer's parts alone, and asks about the writer the manifest names", async () => {
    await sealedSet(dir, 'opl');
    const asked: [number, string][] = [];
    const report = await finishParts(dir, (pid, host) => (asked.push([pid, host]), true), notPublished, write);
    expect(asked).toEqual([[process.pid, hostname()]]);
    expect(report).toEqual({ removedUnsealed: [], removedPublished: [], finished: [], kept: [] });
    expect(ls(dir).length).toBe(5);
  });

  it('removes parts whose final backup is already published, without writing it again', async () => {
    await sealedSet(dir, 'opp');
    const asked: string[] = [];
    const report = await finishParts(dir, dead, async (op) => (asked.push(op), true), write);
    expect(asked).toEqual(['opp']);
    expect(report).toEqual({ removedUnsealed: [], removedPublished: ['opp'], finished: [], kept: [] });
    expect(written).toEqual([]);
    expect(ls(dir)).toEqual([]);
  });

  it('removes unsealed parts (the change never committed): no seal, no snapshot, or no manifest', async () => {
    const a = new PartsWriter(dir, 'op-noseal', { reason: 'clear-all', source: 's' });
    await a.snapshot(from<[string, string]>([['a', rec('a', '1')]]));
    await a.delta(new Map([['a', rec('a', '2')]]));
    // Killed during the snapshot copy: the manifest names no snapshot yet.
    const m: PartsManifest = { ...manifestOf(dir, 'op-noseal'), op: 'op-nosnap', snapshot: null, deltas: [] };
    writeFileSync(path.join(dir, '.parts-op-nosnap.json'), JSON.stringify(m));
    writeFileSync(path.join(dir, '.parts-op-nosnap.snapshot'), '"a"\t{}\n"b"');
    // The rest of a removal killed half-way: data without manifest or seal.
    writeFileSync(path.join(dir, '.parts-op-gone.delta-1'), '"a"\tnull\n');
    writeFileSync(path.join(dir, 'keep.txt'), 'x');
    const report = await finishParts(dir, dead, notPublished, write);
    expect(report.removedUnsealed.sort()).toEqual(['op-gone', 'op-noseal', 'op-nosnap']);
    expect(report).toMatchObject({ removedPublished: [], finished: [], kept: [] });
    expect(written).toEqual([]);
    expect(ls(dir)).toEqual(['keep.txt']);
  });

  it('keeps sealed parts whose manifest is missing or unreadable: they may be the only pre-image', async () => {
    await sealedSet(dir, 'opm');
    await fsp.rm(path.join(dir, '.parts-opm.json'));
    await sealedSet(dir, 'opu');
    writeFileSync(path.join(dir, '.parts-opu.json'), '{"format":');
    const report = await finishParts(dir, dead, notPublished, write);
    expect(report.kept.sort((x, y) => x.op.localeCompare(y.op))).toEqual([
      { op: 'opm', code: 'E_BACKUP_MANIFEST', message: 'backup parts of opm: sealed, but the parts manifest is missing or unreadable' },
      { op: 'opu', code: 'E_BACKUP_MANIFEST', message: 'backup parts of opu: sealed, but the parts manifest is missing or unreadable' },
    ]);
    expect(report).toMatchObject({ removedUnsealed: [], removedPublished: [], finished: [] });
    expect(ls(dir).length).toBe(9);
  });

  it('keeps sealed parts that do not verify (a part or the seal changed), with the reason', async () => {
    await sealedSet(dir, 'ops');
    await sealedSet(dir, 'opd');
    await sealedSet(dir, 'opx');
    await sealedSet(dir, 'opz');
    // The snapshot, one round, the seal's body, the seal's header: one byte each, same length.
    const flip = (name: string, from: string, to: string) => {
      const f = path.join(dir, name);
      const t = readFileSync(f, 'utf8');
      expect(t.includes(from)).toBe(true);
      writeFileSync(f, t.replace(from, to));
    };
    flip('.parts-ops.snapshot', '"v":"1"', '"v":"9"');
    flip('.parts-opd.delta-2', 'null', 'nul!');
    flip('.parts-opx.sealed', '"v":"3"', '"v":"9"');
    flip('.parts-opz.sealed', '"deltas":2', '"deltas":1');
    const report = await finishParts(dir, dead, notPublished, write);
    const kept = Object.fromEntries(report.kept.map((k) => [k.op, k]));
    expect(Object.keys(kept).sort()).toEqual(['opd', 'ops', 'opx', 'opz']);
    expect(kept.ops?.code).toBe('E_BACKUP_VERIFY');
    expect(kept.ops?.message).toMatch(/^backup part \.parts-ops\.snapshot did not verify/);
    expect(kept.opd?.code).toBe('E_BACKUP_VERIFY');
    expect(kept.opd?.message).toMatch(/^backup part \.parts-opd\.delta-2 did not verify/);
    expect(kept.opx).toEqual({ op: 'opx', code: 'E_BACKUP_VERIFY', message: 'backup parts of opx: the seal does not match its content or its parts' });
    expect(kept.opz?.code).toBe('E_BACKUP_VERIFY');
    expect(written).toEqual([]);
    expect(ls(dir).length).toBe(20);
  });

  it("keeps parts whose manifest's count or size for a part is wrong, even with the right checksum", async () => {
    for (const [op, field] of [['opc', 'users'], ['opb', 'bytes']] as const) {
      await sealedSet(dir, op);
      const m = manifestOf(dir, op);
      writeFileSync(path.join(dir, `.parts-${op}.json`), JSON.stringify({ ...m, deltas: [m.deltas[0], { ...m.deltas[1], [field]: (m.deltas[1]?.[field] ?? 0) + 1 }] }));
    }
    const report = await finishParts(dir, dead, notPublished, write);
    expect(report.kept.map((k) => [k.op, k.code]).sort()).toEqual([['opb', 'E_BACKUP_VERIFY'], ['opc', 'E_BACKUP_VERIFY']]);
    expect(written).toEqual([]);
  });

  it('a seal that exists but cannot be read is never taken for no seal: the parts are kept', async () => {
    await sealedSet(dir, 'opr');
    const seal = path.join(dir, '.parts-opr.sealed');
    await fsp.rm(seal);
    mkdirSync(path.join(dir, 'elsewhere'));
    symlinkSync(path.join(dir, 'elsewhere'), seal);
    const report = await finishParts(dir, dead, notPublished, write);
    expect(report.kept).toEqual([{ op: 'opr', code: 'E_BACKUP_READ', message: expect.stringContaining('EISDIR') }]);
    expect(report.removedUnsealed).toEqual([]);
    expect(existsSync(path.join(dir, '.parts-opr.snapshot'))).toBe(true);
  });

  it('the seal is checked against its manifest: another op, snapshot or round count is refused', async () => {
    for (const [op, field, value] of [['o1', 'op', 'other'], ['o2', 'snapshotSha256', '0'.repeat(64)], ['o3', 'users', 5], ['o4', 'bytes', 1], ['o5', 'format', 'x']] as const) {
      await sealedSet(dir, op);
      const f = path.join(dir, `.parts-${op}.sealed`);
      const [head, ...rest] = readFileSync(f, 'utf8').split('\n');
      writeFileSync(f, [JSON.stringify({ ...(JSON.parse(head ?? '') as object), [field]: value }), ...rest].join('\n'));
    }
    const report = await finishParts(dir, dead, notPublished, write);
    expect(report.kept.map((k) => [k.op, k.code]).sort()).toEqual([['o1', 'E_BACKUP_VERIFY'], ['o2', 'E_BACKUP_VERIFY'], ['o3', 'E_BACKUP_VERIFY'], ['o4', 'E_BACKUP_VERIFY'], ['o5', 'E_BACKUP_VERIFY']]);
  });

  it('a part with a broken line is kept with E_BACKUP_READ, and a failed write with its own code', async () => {
    // A line without a tab (the next line has one), and a part that ends inside a line: their digests are right (the
    // manifest is made to match), the content cannot be read.
    for (const [op, text] of [['opt', '"a" {}\n"b"\t{}\n'], ['opn', '"a"\t{}\n"b" {}\n'], ['ope', '"a"\t{}\n"b"\t{}']] as const) {
      await sealedSet(dir, op);
      const snap = path.join(dir, `.parts-${op}.snapshot`);
      writeFileSync(snap, text);
      const m = manifestOf(dir, op);
      const { createHash } = await import('node:crypto');
      const info = { file: `.parts-${op}.snapshot`, users: text.split('\n').length - 1, bytes: Buffer.byteLength(text), sha256: createHash('sha256').update(text).digest('hex') };
      writeFileSync(path.join(dir, `.parts-${op}.json`), JSON.stringify({ ...m, snapshot: info }));
      // The seal names the snapshot's digest.
      const f = path.join(dir, `.parts-${op}.sealed`);
      const [head, ...rest] = readFileSync(f, 'utf8').split('\n');
      writeFileSync(f, [JSON.stringify({ ...(JSON.parse(head ?? '') as object), snapshotSha256: info.sha256 }), ...rest].join('\n'));
    }
    await sealedSet(dir, 'opw');
    const report = await finishParts(dir, dead, notPublished, async (p) => {
      if (p.manifest.op === 'opw') throw new Error('disk gone');
      return write(p);
    });
    const kept = Object.fromEntries(report.kept.map((k) => [k.op, k]));
    expect(kept.opt).toEqual({ op: 'opt', code: 'E_BACKUP_READ', message: `backup part ${path.join(dir, '.parts-opt.snapshot')} has a line without a user id` });
    expect(kept.opn).toEqual({ op: 'opn', code: 'E_BACKUP_READ', message: `backup part ${path.join(dir, '.parts-opn.snapshot')} has a line without a user id` });
    expect(kept.ope).toEqual({ op: 'ope', code: 'E_BACKUP_READ', message: `backup part ${path.join(dir, '.parts-ope.snapshot')} ends in the middle of a line` });
    expect(kept.opw).toEqual({ op: 'opw', code: 'E_BACKUP_READ', message: 'disk gone' });
    expect(report.finished).toEqual([]);
    expect(ls(dir).length).toBe(20);
  });

  it('reads no directory when given its listing, and a missing directory is nothing to do', async () => {
    await sealedSet(dir, 'opa');
    await sealedSet(dir, 'opb');
    const listed = readdirSync(dir).filter((n) => n.includes('opa'));
    const report = await finishParts(dir, dead, notPublished, write, listed);
    expect(report.finished).toEqual(['backup-of-opa']);
    expect(ls(dir).every((n) => n.includes('opb'))).toBe(true);
    expect(await finishParts(path.join(dir, 'none'), dead, notPublished, write)).toEqual({ removedUnsealed: [], removedPublished: [], finished: [], kept: [] });
    const file = path.join(dir, 'f');
    writeFileSync(file, '');
    await expect(finishParts(file, dead, notPublished, write)).rejects.toMatchObject({ code: 'ENOTDIR' });
  });
});
