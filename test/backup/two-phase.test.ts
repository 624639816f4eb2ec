import { readFileSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { PartsWriter } from '../../src/backup/two-phase.js';
import { defaultFsIo, setFsIo } from '../../src/fsio.js';
import { AuditLog } from '../../src/ops/audit.js';
import { Operations } from '../../src/ops/operations.js';
import { openStore } from '../../src/store/open.js';
import type { MemoryRecord } from '../../src/record.js';
import { tempDir } from '../helpers/tmp.js';
import { hasJsonBatches, type JsonByteBatch } from '../../src/store/types.js';
import { loadFixture } from '../store/conformance.js';

async function* pairs(ids: string[]): AsyncGenerator<[string, string]> {
  for (const id of ids) yield [id, JSON.stringify({ user_id: id, v: 'old', text: 'tab\there, line\nbreak, émoji 😀' })];
}

async function collect(it: AsyncIterable<[string, string]>): Promise<[string, string][]> {
  const out: [string, string][] = [];
  for await (const e of it) out.push(e);
  return out;
}

describe('two-phase merge', () => {
  it('a snapshot from byte batches is the same part file as one from pairs', async () => {
    const t = await tempDir('chatmem-2p-');
    try {
      const ids = Array.from({ length: 3000 }, (_, i) => `u${String(i).padStart(5, '0')}\t"é😀`);
      const rows = await collect(pairs(ids));
      const a = new PartsWriter(t.dir, 'op-a', { reason: 'clear-all', source: 'test' });
      await a.snapshot(pairs(ids));
      async function* batches(): AsyncGenerator<JsonByteBatch> {
        for (let i = 0; i < rows.length; i += 700) {
          const part = rows.slice(i, i + 700);
          const data = part.map(([, t]) => Buffer.from(t, 'utf8'));
          yield { ids: part.map(([id]) => id), data, bytes: data.reduce((n, d) => n + d.length, 0) };
        }
      }
      const b = new PartsWriter(t.dir, 'op-b', { reason: 'clear-all', source: 'test' });
      await b.snapshot(Object.assign(pairs([]), { jsonBatches: batches }));
      const read = (op: string) => readFileSync(path.join(t.dir, `.parts-${op}.snapshot`));
      expect(read('op-b').equals(read('op-a'))).toBe(true);
      await a.seal(new Map());
      await b.seal(new Map());
      expect(await collect(b.sealed().entries())).toEqual(rows);
    } finally {
      await t.cleanup();
    }
  });

  it('puts changed users in place, drops deleted ones and inserts new ones in user_id order', async () => {
    const t = await tempDir('chatmem-2p-');
    try {
      // Enough lines to cross the 1 MiB read chunk, so lines split between chunks are joined.
      const ids = Array.from({ length: 30_000 }, (_, i) => `b${String(i).padStart(6, '0')}`);
      const parts = new PartsWriter(t.dir, 'op-merge', { reason: 'clear-all', source: 'test' });
      await parts.snapshot(pairs(ids));
      // A round while writes go on, then the seal: the seal's value wins for a user in both.
      await parts.delta(new Map([['b000500', '{"round":1}'], ['b000777', '{"round":1}'], ['b000000', '{"round":1}']]));
      const changes = new Map<string, string | null>([
        ['a-first', '{"new":1}'],
        ['b000000', null],
        ['b000500', '{"changed":1}'],
        ['b000500x', '{"between":1}'],
        ['b029999', null],
        ['c-last', '{"new":2}'],
        ['zz-gone-before', null],
      ]);
      await parts.seal(changes);
      const out = await collect(parts.sealed().entries());
      expect(out.find(([id]) => id === 'b000777')?.[1]).toBe('{"round":1}');
      expect(out.length).toBe(ids.length - 2 + 3);
      expect(out[0]).toEqual(['a-first', '{"new":1}']);
      expect(out[1]?.[0]).toBe('b000001');
      expect(out.at(-1)).toEqual(['c-last', '{"new":2}']);
      expect(out.find(([id]) => id === 'b000500')?.[1]).toBe('{"changed":1}');
      const at = out.findIndex(([id]) => id === 'b000500x');
      expect(out[at - 1]?.[0]).toBe('b000500');
      expect(out[at + 1]?.[0]).toBe('b000501');
      expect(out.some(([id]) => id === 'b000000' || id === 'b029999' || id === 'zz-gone-before')).toBe(false);
      // Unchanged lines come back byte for byte, tabs and newlines escaped inside the JSON included.
      expect(out.find(([id]) => id === 'b012345')?.[1]).toBe(JSON.stringify({ user_id: 'b012345', v: 'old', text: 'tab\there, line\nbreak, émoji 😀' }));
      // The final backup reads the same merge as byte batches: the same rows, the same bytes.
      const entries = parts.sealed().entries();
      expect(hasJsonBatches(entries)).toBe(true);
      const viaBytes: [string, string][] = [];
      if (hasJsonBatches(entries)) for await (const b of entries.jsonBatches()) b.ids.forEach((id, i) => viaBytes.push([id, b.data[i]!.toString('utf8')]));
      expect(viaBytes).toEqual(out);
    } finally {
      await t.cleanup();
    }
  });

  it('a clear that runs during another clear\'s snapshot copy makes the later one copy the store again', async () => {
    const t = await tempDir('chatmem-2p-');
    const store = await openStore(`sqlite:${path.join(t.dir, 'memory.db')}`);
    try {
      const fixture = Object.values(loadFixture());
      const records = Array.from({ length: 500 }, (_, i) => ({ ...(fixture[i % fixture.length] as MemoryRecord), user_id: `u${String(i).padStart(4, '0')}` }));
      await store.exclusive('all', (ctx) => ctx.putMany(records));
      const ops = new Operations({ store, backupDir: path.join(t.dir, 'backups'), audit: new AuditLog(path.join(t.dir, 'audit.log')), actor: { kind: 'os', name: 'test' } });
      // Both copy their snapshot (500 users) before either takes the section; the first then clears.
      const [a, b] = await Promise.all([ops.clearAll(), ops.clearAll()]);
      const sizes = [a, b].map((r) => Object.keys(JSON.parse(readFileSync(r.backupFile, 'utf8')) as object).length).sort((x, y) => x - y);
      expect(sizes).toEqual([0, 500]);
      expect([a.deleted, b.deleted].sort((x, y) => x - y)).toEqual([0, 500]);
      // No snapshot copy is left behind.
      expect((await readdir(path.join(t.dir, 'backups'))).filter((n) => n.endsWith('.tmp') || n.startsWith('.parts-'))).toEqual([]);
    } finally {
      await store.close();
      await t.cleanup();
    }
  });
});

describe('a clear whose final backup cannot be written', () => {
  it('answers E_BACKUP_WRITE with committed, keeps the sealed parts and the open intent; the next start publishes the backup and closes the entry', async () => {
    const t = await tempDir('chatmem-2p-');
    const store = await openStore(`sqlite:${path.join(t.dir, 'memory.db')}`);
    const backupDir = path.join(t.dir, 'backups');
    try {
      const fixture = Object.values(loadFixture());
      const records = Array.from({ length: 50 }, (_, i) => ({ ...(fixture[i % fixture.length] as MemoryRecord), user_id: `u${String(i).padStart(4, '0')}` }));
      await store.exclusive('all', (ctx) => ctx.putMany(records));
      const ops = new Operations({ store, backupDir, audit: new AuditLog(path.join(t.dir, 'audit.log')), actor: { kind: 'os', name: 'test' } });
      // Every backup file the final write creates fails to open: both tries of the publish fail.
      let failures = 0;
      const restore = setFsIo({
        createWriteStream: (file, options) => {
          const out = defaultFsIo.createWriteStream(file, options);
          if (/memory_backup_.*\.tmp$/.test(path.basename(file))) {
            failures++;
            process.nextTick(() => out.destroy(Object.assign(new Error('ENOSPC: injected'), { code: 'ENOSPC' })));
          }
          return out;
        },
      });
      let err: unknown;
      try {
        await ops.clearAll();
      } catch (e) {
        err = e;
      } finally {
        restore();
      }
      expect(failures).toBe(2);
      expect(err).toMatchObject({ code: 'E_BACKUP_WRITE', details: { committed: true } });
      expect(await store.count()).toBe(0);
      expect((await readdir(backupDir)).filter((n) => n.startsWith('.parts-')).length).toBeGreaterThan(0);
      expect(await ops.listBackups()).toEqual([]);
      expect((await ops.audit.unfinished()).map((e) => e.action)).toEqual(['clear-all']);

      // This process is the parts' writer: the next start is another process, as a fresh Operations over
      // the directory with a writer check that sees this pid gone.
      const { finishParts } = await import('../../src/backup/two-phase.js');
      const { writeBackup } = await import('../../src/backup/create.js');
      const report = await finishParts(backupDir, () => false, async () => false, async (parts) =>
        (await writeBackup(backupDir, { json: parts.entries() }, { reason: parts.manifest.reason, scope: 'full', source: parts.manifest.source, auditOp: parts.manifest.op })).id,
      );
      expect(report.finished.length).toBe(1);
      const { interrupted } = await ops.recover();
      expect(interrupted.length).toBe(1);
      expect(interrupted[0]?.backup).toBe(report.finished[0]);
      expect(interrupted[0]?.applied).toBe(true);
      const backup = JSON.parse(readFileSync(path.join(backupDir, `${report.finished[0]}.json`), 'utf8')) as Record<string, MemoryRecord>;
      expect(Object.keys(backup).sort()).toEqual(records.map((r) => r.user_id));
      expect((await ops.verifyBackups(report.finished[0]))[0]?.ok).toBe(true);
      expect((await readdir(backupDir)).filter((n) => n.startsWith('.parts-'))).toEqual([]);
      const entries = (await ops.readAudit({})).filter((e) => e.op === interrupted[0]?.entry.op && e.outcome !== 'started');
      expect(entries.map((e) => [e.outcome, e.backup])).toEqual([['done', report.finished[0]]]);
    } finally {
      await store.close();
      await t.cleanup();
    }
  });
});
