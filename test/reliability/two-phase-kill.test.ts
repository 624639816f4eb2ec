// The two-phase backup of clear and full restore (SQLite, JSON, PostgreSQL), killed at each of its steps while writers append:
// parts copied but not sealed, sealed (pre-image on disk) but not committed, committed in the section,
// final backup being linked, final backup published but parts not yet removed. After the next start's
// recovery: no parts are left, every acknowledged append is in the store or in the operation's
// verified backup, and from the seal on that backup exists, holds every append acknowledged before
// the section (those made after the snapshot came from the delta), and the audit entry names it.
import { copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditLog } from '../../src/ops/audit.js';
import { Operations } from '../../src/ops/operations.js';
import { openStore } from '../../src/store/open.js';
import type { MemoryRecord } from '../../src/record.js';
import { ROOT, tempDir } from '../helpers/tmp.js';
import { fixtureRecords, runChild } from '../helpers/crash.js';
import { createSchema, describePg } from '../helpers/pg.js';

const USERS = 300;
const POINTS = ['snapshot-copied', 'backup-verified', 'changed', 'final-link', 'backup-published'] as const;
const SEALED = new Set<string>(['backup-verified', 'changed', 'final-link', 'backup-published']);
const COMMITTED = new Set<string>(['changed', 'final-link', 'backup-published']);

const records = fixtureRecords(USERS);
// The restore has work to do: the store differs from its source.
const changedAfterBackup = records.filter((_, i) => i % 5 === 0).map((r) => ({ ...r, last_answer: 'changed after the backup' }));

// PostgreSQL: each case gets a fresh schema with the users (the backup of the source comes from one too);
// the child is a daemon of its own on it, its SIGKILL drops its session and with it the section's locks.
for (const kind of ['sqlite', 'json', 'postgres'] as const) {
  (kind === 'postgres' ? describePg : describe)(`two-phase backup on ${kind}, killed at each step`, () => {
    let dir: string;
    let cleanup: () => Promise<void>;
    let pristine: string;
    let source: { file: string; id: string };
    beforeAll(async () => {
      ({ dir, cleanup } = await tempDir('chatmem-2pkill-'));
      pristine = path.join(dir, kind === 'sqlite' ? 'pristine.db' : 'pristine.json');
      const pg = kind === 'postgres' ? await createSchema() : null;
      const store = await openStore(pg ? pg.url : `${kind}:${pristine}`);
      await store.exclusive('all', (ctx) => ctx.putMany(records));
      const ops = new Operations({ store, backupDir: path.join(dir, 'source'), audit: new AuditLog(path.join(dir, 'setup-audit.log')), actor: { kind: 'os', name: 'setup' } });
      const b = await ops.createBackup();
      source = { file: b.file, id: b.id };
      await store.exclusive('all', (ctx) => ctx.putMany(changedAfterBackup));
      await store.close();
      await pg?.drop();
    });
    afterAll(async () => cleanup());

    for (const op of ['clear', 'restore'] as const) {
      for (const point of POINTS) {
        it(`${op}, killed at ${point}`, async () => {
          const run = path.join(dir, `${op}-${point}`);
          const backupDir = path.join(run, 'backups');
          mkdirSync(backupDir, { recursive: true, mode: 0o700 });
          const file = path.join(run, path.basename(pristine).replace('pristine', 'memory'));
          const pg = kind === 'postgres' ? await createSchema() : null;
          if (pg) {
            const s = await openStore(pg.url);
            await s.exclusive('all', (ctx) => ctx.putMany(records));
            await s.exclusive('all', (ctx) => ctx.putMany(changedAfterBackup));
            await s.close();
          } else {
            copyFileSync(pristine, file);
          }
          copyFileSync(source.file, path.join(backupDir, path.basename(source.file)));
          copyFileSync(source.file.replace(/\.json$/, '.meta.json'), path.join(backupDir, path.basename(source.file).replace(/\.json$/, '.meta.json')));
          const url = pg ? pg.url : `${kind}:${file}`;
          const audit = path.join(run, 'audit.log');
          const r = await runChild([path.join(ROOT, 'test/fixtures/two-phase-kill.mjs'), url, backupDir, audit, op, source.id, point, String(USERS)], { killAfterMs: null });
          expect(r.killed, r.stderr).toBe(true);
          const lines = r.stdout.split('\n');
          const section = lines.indexOf('section');
          const acks = lines.flatMap((l, i) => {
            const m = /^ack (\S+) (\S+)$/.exec(l);
            return m ? [{ user: m[1] as string, text: m[2] as string, beforeSection: section === -1 || i < section }] : [];
          });
          // Writes went on around the operation, and some were acknowledged between the snapshot and the section.
          expect(acks.filter((a) => a.beforeSection).length).toBeGreaterThan(3);
          expect(acks.filter((a) => /-w9\d-/.test(a.text)).length).toBe(3);
          if (point !== 'snapshot-copied') expect(section).toBeGreaterThan(-1);

          const store = await openStore(url);
          try {
            const ops = new Operations({ store, backupDir, audit: new AuditLog(audit), actor: { kind: 'os', name: 'checker' } });
            const { interrupted } = await ops.recover();
            expect(readdirSync(backupDir).filter((n) => n.startsWith('.parts-') || n.endsWith('.tmp'))).toEqual([]);
            expect(interrupted.length).toBe(1);
            const entry = interrupted[0]!;
            expect(entry.entry.action).toBe(op === 'clear' ? 'clear-all' : 'restore');
            let backup: Record<string, MemoryRecord> = {};
            if (SEALED.has(point)) {
              expect(entry.backup, 'a sealed two-phase backup is finished by recovery').not.toBeNull();
              const v = await ops.verifyBackups(entry.backup as string);
              expect(v[0]?.ok).toBe(true);
              backup = JSON.parse(readFileSync(path.join(backupDir, `${entry.backup}.json`), 'utf8')) as Record<string, MemoryRecord>;
              expect(Object.keys(backup).length).toBeGreaterThanOrEqual(USERS);
              // The audit entry recovery wrote names the backup.
              const audited = (await ops.readAudit({})).filter((e) => e.op === entry.entry.op && e.outcome !== 'started');
              expect(audited.map((e) => e.backup)).toEqual([entry.backup]);
              if (op === 'clear') expect(entry.applied).toBe(COMMITTED.has(point));
            } else {
              expect(entry.backup).toBeNull();
            }
            const has = (rec: MemoryRecord | null | undefined, text: string) => rec?.history.some((h) => h.text === text) === true;
            const lost: string[] = [];
            for (const a of acks) {
              const inStore = has(await store.get(a.user), a.text);
              const inBackup = has(backup[a.user], a.text);
              if (!inStore && !inBackup) lost.push(`${a.user} ${a.text}`);
              if (SEALED.has(point) && a.beforeSection) expect(inBackup, `${a.text} acknowledged before the section is in the backup`).toBe(true);
              if (!COMMITTED.has(point)) expect(inStore, `${a.text}: the change did not commit, the store keeps it`).toBe(true);
            }
            expect(lost).toEqual([]);
            if (COMMITTED.has(point) && op === 'clear') expect(await store.count()).toBeLessThan(USERS);
            if (!COMMITTED.has(point)) expect(await store.count()).toBe(USERS);
          } finally {
            await store.close();
            await pg?.drop();
            rmSync(run, { recursive: true, force: true });
          }
        }, 120_000);
      }
    }
  });
}
