// Real interleavings: Operations' test hooks hold delete, clear, restore and import at each named step
// while other writes run. One write is acknowledged before the exclusive section (it must be in the
// operation's backup); writes issued while the section is held must wait for it and land after the
// change (they must be in the store afterwards). Each test checks that both orders really happened.
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AuditLog } from '../../src/ops/audit.js';
import { Operations, type OpsPoint } from '../../src/ops/operations.js';
import { openStore } from '../../src/store/open.js';
import type { Store } from '../../src/store/types.js';
import type { MemoryRecord } from '../../src/record.js';
import { tempDir } from '../helpers/tmp.js';
import { loadFixture } from '../store/conformance.js';

const ACTOR = { kind: 'os' as const, name: 'interleaving-test' };
/** How long a held section waits for a write that should not get through: a broken section lets it land meanwhile. */
const HOLD_MS = 60;

type Op = 'delete' | 'clear' | 'restore' | 'restore-user' | 'import';

const texts = (r: MemoryRecord | null | undefined) => (r?.history ?? []).map((h) => h.text);

for (const kind of ['sqlite', 'json'] as const) {
  describe(`writes interleaved with guarded operations on ${kind}`, () => {
    let dir: string;
    let cleanup: () => Promise<void>;
    let store: Store;
    let backupDir: string;
    let users: string[];
    let earlier: string;

    beforeEach(async () => {
      ({ dir, cleanup } = await tempDir('chatmem-interleave-'));
      store = await openStore(`${kind}:${path.join(dir, kind === 'sqlite' ? 'memory.db' : 'memory.json')}`);
      backupDir = path.join(dir, 'backups');
      const fixture = loadFixture();
      users = Object.keys(fixture).slice(0, 8);
      await store.exclusive('all', (ctx) => ctx.putMany(users.map((u) => fixture[u] as MemoryRecord)));
      earlier = (await new Operations({ store, backupDir, audit: new AuditLog(path.join(dir, 'audit.log')), actor: ACTOR }).createBackup()).id;
    });
    afterEach(async () => {
      await store.close();
      await cleanup();
    });

    for (const op of ['delete', 'clear', 'restore', 'restore-user', 'import'] as const satisfies readonly Op[]) {
      it(`${op}: a write acknowledged before the section is in the backup, writes held by the section land after the change`, async () => {
        const target = users[2] as string;
        const events: string[] = [];
        const held: Promise<unknown>[] = [];
        const write = (text: string) => store.appendHistory(target, { role: 'user', text }).then(() => void events.push(`ack ${text}`));
        const hooks = {
          at: async (point: OpsPoint) => {
            events.push(point);
            if (point === 'intent-written') await write('before the section');
            if (point === 'section-entered' || point === 'backup-verified') {
              held.push(write(`held at ${point}`));
              // A section that does not hold the writer lets it land now, before the change.
              await delay(HOLD_MS);
            }
          },
        };
        const ops = new Operations({ store, backupDir, audit: new AuditLog(path.join(dir, 'audit.log')), actor: ACTOR, hooks });
        let backup: string | null;
        if (op === 'delete') backup = (await ops.deleteUsers([target])).backup;
        else if (op === 'clear') backup = (await ops.clearAll()).backup;
        else if (op === 'restore') backup = (await ops.restore(earlier)).backup ?? null;
        else if (op === 'restore-user') backup = (await ops.restore(earlier, { users: [target] })).backup ?? null;
        else {
          const file = path.join(dir, 'import.json');
          writeFileSync(file, JSON.stringify({ [target]: { ...loadFixture()[target], name: 'Imported Name' } }));
          backup = (await ops.importFile(file)).backup;
        }
        await Promise.all(held);

        // Both orders happened: one write before the section, two issued inside it that landed after the change.
        const at = (e: string) => events.indexOf(e);
        expect(at('ack before the section')).toBeGreaterThan(-1);
        expect(at('ack before the section')).toBeLessThan(at('section-entered'));
        for (const point of ['section-entered', 'backup-verified']) {
          expect(at(`ack held at ${point}`), `${point}: ${events.join(', ')}`).toBeGreaterThan(at('changed'));
          expect(at(point)).toBeLessThan(at('changed'));
        }

        // Every acknowledged write is in the operation's backup or in the store.
        expect(backup).not.toBeNull();
        const record = (await ops.inspectBackup(backup as string, { user: target })).record;
        expect(texts(record)).toContain('before the section');
        const now = await store.get(target);
        expect(texts(now)).toEqual(expect.arrayContaining(['held at section-entered', 'held at backup-verified']));
        // The held writes went onto what the operation left, not onto the state it replaced.
        if (op !== 'delete' && op !== 'clear') expect(texts(now)).not.toContain('before the section');
        if (op === 'import') expect(now?.name).toBe('Imported Name');
      });
    }
  });
}
