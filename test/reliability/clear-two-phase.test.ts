import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { AuditLog } from '../../src/ops/audit.js';
import { Operations } from '../../src/ops/operations.js';
import { openStore } from '../../src/store/open.js';
import type { MemoryRecord } from '../../src/record.js';
import type { ExclusiveContext } from '../../src/store/types.js';
import { tempDir } from '../helpers/tmp.js';
import { loadFixture } from '../store/conformance.js';

const USERS = 20_000;
const WRITERS = 8;
const id = (i: number) => `u${String(i).padStart(6, '0')}`;

interface Ack {
  user: string;
  text: string;
  at: number;
}

describe('clear-all takes its backup in two phases', () => {
  it('writes go on during the snapshot copy; every acknowledged append is in the backup or in the store after the clear', async () => {
    const t = await tempDir('chatmem-clear2-');
    const store = await openStore(`sqlite:${path.join(t.dir, 'memory.db')}`);
    try {
      const fixture = Object.values(loadFixture());
      for (let i = 0; i < USERS; i += 2000) {
        const batch = Array.from({ length: 2000 }, (_, k) => ({ ...(fixture[(i + k) % fixture.length] as MemoryRecord), user_id: id(i + k) }));
        await store.exclusive('all', (ctx) => ctx.putMany(batch));
      }
      const ops = new Operations({ store, backupDir: path.join(t.dir, 'backups'), audit: new AuditLog(path.join(t.dir, 'audit.log')), actor: { kind: 'os', name: 'test' } });

      // When the clear's exclusive section starts: writes acknowledged before it and after the clear began ran during phase 1.
      let sectionAt = Infinity;
      const exclusive = store.exclusive.bind(store);
      store.exclusive = <T>(scope: Parameters<typeof exclusive>[0], fn: (ctx: ExclusiveContext) => Promise<T>) =>
        exclusive(scope, (ctx) => {
          if (scope === 'all' && sectionAt === Infinity) sectionAt = performance.now();
          return fn(ctx);
        });

      const acks: Ack[] = [];
      let stop = false;
      let clearStart = Infinity;
      let clearEnd = Infinity;
      let n = 0;
      let acksAfter = 0;
      const writer = async (w: number) => {
        // Bounded by count and time, so a broken gate cannot hang the test.
        const until = Date.now() + 120_000;
        while (!stop && Date.now() < until) {
          const k = n++;
          // Every 10th append goes to a user who did not exist when the snapshot was taken.
          const user = k % 10 === 0 ? `new${String(k).padStart(7, '0')}` : id((k * 7919 + w) % USERS);
          const text = `w${w}-m${k}`;
          await store.appendHistory(user, { role: 'user', text });
          const at = performance.now();
          acks.push({ user, text, at });
          if (at > clearEnd) acksAfter++;
          if (at - clearEnd > 300 && acksAfter >= 20) stop = true;
        }
      };
      const writers = Array.from({ length: WRITERS }, (_, w) => writer(w));
      while (acks.length < 50) await new Promise((r) => setTimeout(r, 10));
      // A user deleted while the snapshot is copied must not come back in the backup.
      const gone = id(3);
      clearStart = performance.now();
      const clearing = ops.clearAll();
      const deleted = ops.deleteUsers([gone]);
      const result = await clearing;
      clearEnd = performance.now();
      await deleted;
      await Promise.all(writers);

      const during = acks.filter((a) => a.at > clearStart && a.at < sectionAt);
      const after = acks.filter((a) => a.at > clearEnd);
      // Both orders happened: appends acknowledged while the snapshot was copied, and after the clear.
      expect(during.length).toBeGreaterThan(0);
      expect(after.length).toBeGreaterThan(0);

      const backup = JSON.parse(readFileSync(result.backupFile, 'utf8')) as Record<string, MemoryRecord>;
      expect(backup[gone]).toBeUndefined();
      expect(await store.get(gone)).toBeNull();
      expect(Object.keys(backup).length).toBe(result.deleted);
      const has = (r: MemoryRecord | null | undefined, text: string) => r?.history.some((h) => h.text === text) === true;
      const lost: Ack[] = [];
      for (const a of acks) {
        const inBackup = has(backup[a.user], a.text);
        const inStore = has(await store.get(a.user), a.text);
        if (!inBackup && !inStore) lost.push(a);
        // Exactly one side: a write is either before the clear (backup) or after it (store).
        expect(inBackup && inStore).toBe(false);
      }
      expect(lost).toEqual([]);
      for (const a of during) expect(has(backup[a.user], a.text)).toBe(true);
      for (const a of after) expect(has(await store.get(a.user), a.text)).toBe(true);
      const verify = await ops.verifyBackups(result.backup);
      expect(verify[0]?.ok).toBe(true);
    } finally {
      await store.close();
      await t.cleanup();
    }
  }, 180_000);

  it('a full restore while writers append: every acknowledged append is in the pre-restore backup or in the store after', async () => {
    const t = await tempDir('chatmem-restore2-');
    const store = await openStore(`sqlite:${path.join(t.dir, 'memory.db')}`);
    try {
      const fixture = Object.values(loadFixture());
      const N = 5000;
      const batch = Array.from({ length: N }, (_, k) => ({ ...(fixture[k % fixture.length] as MemoryRecord), user_id: id(k) }));
      await store.exclusive('all', (ctx) => ctx.putMany(batch));
      const ops = new Operations({ store, backupDir: path.join(t.dir, 'backups'), audit: new AuditLog(path.join(t.dir, 'audit.log')), actor: { kind: 'os', name: 'test' } });
      const source = await ops.createBackup();
      let sectionAt = Infinity;
      const exclusive = store.exclusive.bind(store);
      store.exclusive = <T>(scope: Parameters<typeof exclusive>[0], fn: (ctx: ExclusiveContext) => Promise<T>) =>
        exclusive(scope, (ctx) => {
          if (scope === 'all' && sectionAt === Infinity) sectionAt = performance.now();
          return fn(ctx);
        });
      const acks: Ack[] = [];
      let stop = false;
      let start = Infinity;
      let end = Infinity;
      let after = 0;
      let n = 0;
      const writer = async (w: number) => {
        const until = Date.now() + 120_000;
        while (!stop && Date.now() < until) {
          const k = n++;
          const user = id((k * 7919 + w) % N);
          const text = `r${w}-m${k}`;
          await store.appendHistory(user, { role: 'user', text });
          const at = performance.now();
          acks.push({ user, text, at });
          if (at > end) after++;
          if (at - end > 300 && after >= 20) stop = true;
        }
      };
      const writers = Array.from({ length: WRITERS }, (_, w) => writer(w));
      while (acks.length < 50) await new Promise((r) => setTimeout(r, 10));
      start = performance.now();
      const result = await ops.restore(source.id, { wholeStore: true });
      end = performance.now();
      await Promise.all(writers);
      const during = acks.filter((a) => a.at > start && a.at < sectionAt);
      expect(during.length).toBeGreaterThan(0);
      expect(after).toBeGreaterThan(0);
      expect(result.backup).toBeDefined();
      const pre = JSON.parse(readFileSync(path.join(t.dir, 'backups', `${result.backup ?? ''}.json`), 'utf8')) as Record<string, MemoryRecord>;
      expect(Object.keys(pre).length).toBe(N);
      const has = (r: MemoryRecord | null | undefined, text: string) => r?.history.some((h) => h.text === text) === true;
      const lost: Ack[] = [];
      for (const a of acks) if (!has(pre[a.user], a.text) && !has(await store.get(a.user), a.text)) lost.push(a);
      expect(lost).toEqual([]);
      for (const a of during) expect(has(pre[a.user], a.text)).toBe(true);
    } finally {
      await store.close();
      await t.cleanup();
    }
  }, 180_000);
});
