import { readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { AuditLog, type AuditEntry } from '../../src/ops/audit.js';
import { Operations } from '../../src/ops/operations.js';
import { parseRecord } from '../../src/record.js';
import { JsonFileDriver } from '../../src/store/json-file.js';
import { SqliteDriver } from '../../src/store/sqlite/index.js';
import { createStore } from '../../src/store/store.js';
import type { Store } from '../../src/store/types.js';
import { cleanEnv, sandbox } from '../cli/helpers.js';
import { tempDir } from '../helpers/tmp.js';
import { fillDisk, mountTmpfs, padAuditLog, tempFilesUnder } from './helpers.js';

const JOKO = '628161973069';
const OTHER = '628001869793';

/** Through the reader: the failed append may have left a torn fragment, which the reader skips. */
function auditLines(file: string): Promise<AuditEntry[]> {
  return new AuditLog(file).read();
}

async function state(store: Store): Promise<string> {
  const out: string[] = [];
  for await (const [id, json] of store.scanJson()) out.push(`${id}=${json}`);
  return out.join('\n');
}

describe('disk full on a real tmpfs', () => {
  for (const kind of ['sqlite', 'json'] as const) {
    it(`${kind}: the final audit write fails after the delete committed: exit 0 with a warning, and the next start writes the outcome`, async (ctx) => {
      const sb = await sandbox(kind);
      const m = mountTmpfs(sb.dir, 'audit-fs', '256k');
      if ('skip' in m) {
        sb.cleanup().catch(() => undefined);
        return ctx.skip(m.skip);
      }
      try {
        const auditLog = path.join(m.mnt, 'audit.log');
        const env = cleanEnv({ CHATMEM_STORE: sb.storeUrl, CHATMEM_AUDIT_LOG: auditLog });
        // A first delete, on a roomy disk, measures the intent line of a delete of one user with this id length.
        const first = await sb.run(['delete', OTHER, '--yes'], { env });
        expect(first.code).toBe(0);
        const started = (await auditLines(auditLog)).filter((e) => e.action === 'delete-users' && e.outcome === 'started').at(-1);
        const startedLen = Buffer.byteLength(JSON.stringify(started)) + 1;
        // Leave room in the log's last page for the intent and not for the outcome, then fill the disk.
        padAuditLog(auditLog, 4096 - (startedLen + 40));
        fillDisk(path.join(m.mnt, 'filler'));

        const r = await sb.run(['delete', JOKO, '--yes'], { env });
        expect(r.code, r.stderr).toBe(0);
        expect(r.stdout).toContain('Deleted 1 user');
        expect(r.stderr).toMatch(/warning:.*delete-users completed, but its audit entry could not be written.*\[E_AUDIT_WRITE\]/);
        const backupFile = /^Backup: (.+)$/m.exec(r.stdout)?.[1] ?? '';
        expect(Object.keys(JSON.parse(readFileSync(backupFile, 'utf8')) as object)).toEqual([JOKO]);
        expect((await sb.run(['show', JOKO], { env })).code).toBe(3);
        const op = (await auditLines(auditLog)).filter((e) => e.action === 'delete-users' && e.outcome === 'started').at(-1);
        expect(op?.userIds).toEqual([JOKO]);
        expect((await auditLines(auditLog)).some((e) => e.op === op?.op && e.outcome !== 'started')).toBe(false);

        // Space again; the next command that owns the store completes the entry from backup + store.
        rmSync(path.join(m.mnt, 'filler'));
        const next = await sb.run(['backup', '--yes'], { env });
        expect(next.code, next.stderr).toBe(0);
        const closing = (await auditLines(auditLog)).filter((e) => e.op === op?.op && e.outcome !== 'started');
        expect(closing).toHaveLength(1);
        expect(closing[0]).toMatchObject({ outcome: 'done', backup: path.basename(backupFile, '.json'), details: { applied: true, backupExists: true, recovered: true } });
        const verify = await sb.json<{ ok: boolean }>(['verify'], { env });
        expect(verify.doc.ok).toBe(true);
      } finally {
        m.unmount();
        await sb.cleanup();
      }
    });

    it(`${kind}: an import that hits ENOSPC leaves the store untouched and no temp file`, async (ctx) => {
      const t = await tempDir();
      const m = mountTmpfs(t.dir, 'store-fs', '2m');
      if ('skip' in m) {
        await t.cleanup();
        return ctx.skip(m.skip);
      }
      try {
        const file = path.join(m.mnt, kind === 'sqlite' ? 'memory.db' : 'memory.json');
        const open = async () => createStore(kind === 'sqlite' ? await SqliteDriver.open(file) : await JsonFileDriver.open(file));
        let store = await open();
        const ops = () => new Operations({ store, backupDir: path.join(m.mnt, 'backups'), audit: new AuditLog(path.join(m.mnt, 'audit.log')), actor: { kind: 'os', name: 't' } });
        const existing = Array.from({ length: 100 }, (_, i) => parseRecord(`u${String(i).padStart(5, '0')}`, { name: `old ${i}` }));
        await store.exclusive('all', (c) => c.putMany(existing));
        const before = await state(store);
        // ~4 MB of users (10 of them already in the store) into a 2 MB filesystem.
        const big = 'x'.repeat(1200);
        const src: Record<string, unknown> = {};
        for (let i = 90; i < 3500; i++) src[`u${String(i).padStart(5, '0')}`] = { name: `new ${i}`, summary_context: [big] };
        const importFile = path.join(t.dir, 'big.json');
        writeFileSync(importFile, JSON.stringify(src));
        expect(statSync(importFile).size).toBeGreaterThan(4_000_000);

        const err = await ops().importFile(importFile).then(() => null, (e: unknown) => e);
        // The backup of the 10 overwritten users fits; the write of the 3,410 users does not.
        expect(err).toMatchObject({ code: 'E_STORE_WRITE' });
        expect(await state(store)).toBe(before);
        await store.close();
        store = await open();
        expect(await state(store)).toBe(before);
        expect(tempFilesUnder(m.mnt)).toEqual([]);
        // Every backup it left verifies.
        expect((await ops().verifyBackups()).every((v) => v.ok)).toBe(true);
        await store.close();
      } finally {
        m.unmount();
        await t.cleanup();
      }
    });
  }
});
