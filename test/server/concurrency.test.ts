import { promises as fsp } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { MemoryRecord } from '../../src/record.js';
import { ADMIN_TOKEN, KINDS, startApp } from './helpers.js';

const CLIENTS = 50;
const USERS = 20;
/** Per client, so the test ends even if the phases below never reach their targets. */
const MAX_APPENDS_PER_CLIENT = 400;
// A safety net only, far above a quiet run (~11 s): the clients share this process's event loop with
// the daemon, and on a loaded machine (load 20 on 2 cores) one turn of it took ~270 ms, so the clear's
// hundred-odd sequential awaits took 24-33 s and a 40 s deadline stopped the clients before the
// restore answered (no append after it: a false failure).
const DEADLINE_MS = 150_000;

interface Ack {
  text: string;
  user: string;
  sentAt: number;
  ackedAt: number;
}

async function readBackup(file: string): Promise<Map<string, Set<string>>> {
  const data = JSON.parse(await fsp.readFile(file, 'utf8')) as Record<string, MemoryRecord>;
  return textsByUser(Object.values(data));
}

function textsByUser(records: MemoryRecord[]): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  for (const r of records) out.set(r.user_id, new Set(r.history.map((h) => h.text)));
  return out;
}

const has = (m: Map<string, Set<string>>, a: Ack) => m.get(a.user)?.has(a.text) ?? false;

describe.each(KINDS)('online clear and restore under chat load (%s store)', (kind) => {
  it('loses no acknowledged append and fails no request', { timeout: DEADLINE_MS + 60_000 }, async () => {
    // A high history cap: the seed's cap of 50 would drop old turns and hide what this test looks for.
    const s = await startApp(kind, { env: { CHATMEM_HISTORY_CAP: '100000' } });
    try {
      for (let u = 0; u < USERS; u++) {
        const res = await fetch(`${s.url}/v1/users/u${u}`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: `User ${u}` }) });
        expect(res.status).toBe(200);
      }

      const acks: Ack[] = [];
      const failures: string[] = [];
      let stop = false;
      const deadline = Date.now() + DEADLINE_MS;

      const client = async (c: number) => {
        for (let n = 0; n < MAX_APPENDS_PER_CLIENT && !stop && Date.now() < deadline; n++) {
          const user = `u${(c + n) % USERS}`;
          const text = `c${c}-m${n}`;
          const sentAt = performance.now();
          try {
            const res = await fetch(`${s.url}/v1/users/${user}/history`, {
              method: 'POST',
              headers: { 'content-type': 'application/json' },
              body: JSON.stringify({ role: 'user', text }),
            });
            const body = (await res.json()) as MemoryRecord;
            if (res.status < 200 || res.status >= 300) {
              failures.push(`${res.status} ${JSON.stringify(body)}`);
              continue;
            }
            // The response tells the truth: the record it returns holds the entry.
            if (!body.history.some((h) => h.text === text)) failures.push(`ack of ${text} without the entry`);
            acks.push({ text, user, sentAt, ackedAt: performance.now() });
          } catch (err) {
            failures.push(`${text}: ${(err as Error).message}`);
          }
        }
      };

      const waitForAcks = async (n: number) => {
        while (acks.length < n && Date.now() < deadline && failures.length === 0) await new Promise((r) => setTimeout(r, 5));
      };
      const admin = async (p: string, body: unknown) => {
        const res = await fetch(`${s.url}${p}`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN_TOKEN}` },
          body: JSON.stringify(body),
        });
        const json = (await res.json()) as { backup: string; backupFile?: string };
        expect(res.status, JSON.stringify(json)).toBe(200);
        return json;
      };

      const load = Promise.all(Array.from({ length: CLIENTS }, (_, c) => client(c)));

      await waitForAcks(300);
      const clearSent = performance.now();
      const cleared = await admin('/v1/admin/clear', { confirm: 'YES' });
      const clearDone = performance.now();
      const ackedAtClear = acks.length;

      await waitForAcks(ackedAtClear + 300);
      const restoreSent = performance.now();
      const restored = await admin('/v1/admin/restore', { backup: cleared.backup });
      const restoreDone = performance.now();

      await waitForAcks(acks.length + 300);
      stop = true;
      await load;

      expect(failures).toEqual([]);
      expect(acks.length).toBeGreaterThanOrEqual(900);

      const clearBackup = await readBackup(cleared.backupFile ?? '');
      const restoreBackup = await readBackup(`${s.config.backupDir}/${restored.backup}.json`);
      const finalStore: MemoryRecord[] = [];
      for await (const r of s.ctx.store.scan()) finalStore.push(r);
      const after = textsByUser(finalStore);

      const lost = acks.filter((a) => !has(clearBackup, a) && !has(restoreBackup, a) && !has(after, a));
      expect(lost).toEqual([]);

      // Finer: an append acknowledged before the clear was sent is in its backup; one sent after the clear
      // answered was applied after it, so it is not in that backup.
      const beforeClear = acks.filter((a) => a.ackedAt < clearSent);
      const afterClear = acks.filter((a) => a.sentAt > clearDone);
      expect(beforeClear.length).toBeGreaterThan(0);
      expect(afterClear.length).toBeGreaterThan(0);
      expect(beforeClear.filter((a) => !has(clearBackup, a))).toEqual([]);
      expect(afterClear.filter((a) => has(clearBackup, a))).toEqual([]);

      // Some appends really raced with the clear (in flight while it ran), each either in its backup or after it.
      const racing = acks.filter((a) => a.sentAt < clearDone && a.ackedAt > clearSent);
      expect(racing.length).toBeGreaterThan(0);
      expect(racing.filter((a) => !has(clearBackup, a) && !has(restoreBackup, a) && !has(after, a))).toEqual([]);

      // Appends between the clear and the restore were overwritten by the restore: its own backup holds them.
      const between = acks.filter((a) => a.sentAt > clearDone && a.ackedAt < restoreSent);
      expect(between.filter((a) => !has(restoreBackup, a))).toEqual([]);
      // And appends sent after the restore answered are in the store.
      const afterRestore = acks.filter((a) => a.sentAt > restoreDone);
      expect(afterRestore.length).toBeGreaterThan(0);
      expect(afterRestore.filter((a) => !has(after, a))).toEqual([]);
    } finally {
      await s.close();
    }
  });
});
