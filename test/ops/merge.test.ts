import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { AuditLog } from '../../src/ops/audit.js';
import { Operations } from '../../src/ops/operations.js';
import type { Store } from '../../src/store/types.js';
import type { MemoryRecord } from '../../src/record.js';
import { tempDir } from '../helpers/tmp.js';
import { testStores } from '../helpers/stores.js';
import { loadFixture } from '../store/conformance.js';

const DRIVERS = testStores({ historyCap: 6 });

const FROM = '123456789012345@lid';
const INTO = '628111222333';
const ts = (m: number) => `2026-11-20T10:${String(m).padStart(2, '0')}:00Z`;

for (const [name, open, describeFor] of DRIVERS) {
  describeFor(`merge on ${name}`, () => {
    let dir: string;
    let cleanup: () => Promise<void>;
    let store: Store;
    let ops: Operations;

    beforeEach(async () => {
      ({ dir, cleanup } = await tempDir());
      store = await open(dir);
      ops = new Operations({ store, backupDir: path.join(dir, 'backups'), audit: new AuditLog(path.join(dir, 'audit.log')), actor: { kind: 'os', name: 'tester' }, dataDir: dir });
    });
    afterEach(async () => {
      await store.close();
      await cleanup();
    });

    it('merges histories by time (cap applies, newest kept), flags and slots with INTO winning, fills empty identity, removes FROM', async () => {
      const base = loadFixture()['628161973069']!;
      const from: MemoryRecord = {
        ...base, user_id: FROM, name: 'Budi (lid)', gender: 'male', address: 'Jl. Lid 1', product: 'Air Purifier', serial: 'SN-FROM',
        summary_context: ['from summary', 'shared summary'],
        history: [1, 3, 5, 7].map((m) => ({ role: 'user', text: `from ${m}`, ts: ts(m), id: `f${m}` })),
        flags: { vip: false, lid_only: true }, slots: { city: 'Bandung', color: 'red' }, created_at: '2025-01-01T00:00:00Z',
      };
      const into: MemoryRecord = {
        ...base, user_id: INTO, name: 'Budi', gender: null, address: null, product: 'Water Heater', serial: null,
        summary_context: ['shared summary', 'into summary'],
        history: [2, 4, 6, 8].map((m) => ({ role: 'bot', text: `into ${m}`, ts: ts(m), id: `i${m}` })),
        flags: { vip: true }, slots: { city: 'Jakarta' }, created_at: '2025-06-01T00:00:00Z',
      };
      await store.exclusive('all', (ctx) => ctx.putMany([from, into]));

      const r = await ops.merge(FROM, INTO);

      expect(await store.get(FROM)).toBeNull();
      const merged = (await store.get(INTO))!;
      expect(merged).toEqual(r.record);
      // Eight turns interleaved by time; the cap (6) keeps the newest.
      expect(merged.history.map((h) => h.text)).toEqual(['from 3', 'into 4', 'from 5', 'into 6', 'from 7', 'into 8']);
      expect(merged.flags).toEqual({ vip: true, lid_only: true });
      expect(merged.slots).toEqual({ city: 'Jakarta', color: 'red' });
      expect(merged).toMatchObject({ name: 'Budi', gender: 'male', address: 'Jl. Lid 1', product: 'Water Heater', serial: 'SN-FROM', created_at: '2025-01-01T00:00:00Z' });
      expect(merged.summary_context).toEqual(['shared summary', 'into summary', 'from summary']);

      // One per-user backup holding both, as they were.
      const backup = JSON.parse(readFileSync(r.backupFile, 'utf8')) as Record<string, MemoryRecord>;
      expect(Object.keys(backup).sort()).toEqual([FROM, INTO].sort());
      expect(backup[FROM]?.history).toHaveLength(4);
      expect(backup[INTO]?.flags).toEqual({ vip: true });
      const [info] = await ops.listBackups();
      expect(info).toMatchObject({ reason: 'merge', state: 'verified', users: 2 });
      const audit = await ops.readAudit({ action: 'merge' });
      expect(audit.map((e) => e.outcome)).toEqual(['started', 'done']);
      expect(audit[1]).toMatchObject({ backup: r.backup, userIds: [FROM, INTO] });
    });

    it('refuses unknown users and a merge into itself, changing nothing', async () => {
      await store.put(INTO, { name: 'Budi' });
      await expect(ops.merge(FROM, INTO)).rejects.toMatchObject({ code: 'E_UNKNOWN_USER' });
      await expect(ops.merge(INTO, INTO)).rejects.toMatchObject({ code: 'E_OPS_ARG' });
      expect(await ops.listBackups()).toEqual([]);
      expect((await store.get(INTO))?.name).toBe('Budi');
    });
  });
}
