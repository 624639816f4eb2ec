// Clear-all and full restore on PostgreSQL take their backup in two phases while another daemon (a
// second process on the same database) and this one append: the snapshot copy is held open at its
// first row until the other daemon has deleted a user and acknowledged appends issued after the
// snapshot was taken, so both orders happen on every run. Every acknowledged append must then be in
// the operation's backup or in the store afterwards (never in both for a clear), every append
// acknowledged before the section in the backup, and the deleted user in neither.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import * as path from 'node:path';
import { createInterface } from 'node:readline';
import { expect, it } from 'vitest';
import { AuditLog } from '../../src/ops/audit.js';
import { Operations } from '../../src/ops/operations.js';
import { openStore } from '../../src/store/open.js';
import type { MemoryRecord } from '../../src/record.js';
import type { ExclusiveContext, ScanOptions } from '../../src/store/types.js';
import { createSchema, describePg } from '../helpers/pg.js';
import { ROOT, tempDir } from '../helpers/tmp.js';
import { fixtureRecords } from '../helpers/crash.js';

const USERS = 3000;
const id = (i: number) => `u${String(i).padStart(6, '0')}`;

interface Ack {
  user: string;
  text: string;
  issued: number;
  acked: number;
  other: boolean;
}

/** The second daemon: its acks, and a way to send it a command and wait for a line. */
function secondDaemon(url: string) {
  const child: ChildProcessWithoutNullStreams = spawn(process.execPath, [path.join(ROOT, 'test/fixtures/pg-second-daemon.mjs'), url, String(USERS), 'b'], { stdio: 'pipe' });
  const acks: Ack[] = [];
  const waiters: { test: (l: string) => boolean; resolve: (l: string) => void }[] = [];
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  createInterface({ input: child.stdout }).on('line', (l) => {
    const m = /^ack (\S+) (\S+) (\d+) (\d+)$/.exec(l);
    if (m) acks.push({ user: m[1] as string, text: m[2] as string, issued: Number(m[3]), acked: Number(m[4]), other: true });
    for (const w of [...waiters]) {
      if (w.test(l)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(l);
      }
    }
  });
  const wait = (test: (l: string) => boolean, what: string) =>
    new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`second daemon: no ${what} within 60 s; stderr: ${stderr}`)), 60_000);
      waiters.push({ test, resolve: (l) => (clearTimeout(timer), resolve(l)) });
    });
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
  return { child, acks, wait, exited, send: (cmd: string) => child.stdin.write(`${cmd}\n`), stderr: () => stderr };
}

/** Polls `cond` every 10 ms; fails naming `what` after 60 s, so a broken interleaving cannot hang the test. */
async function until(cond: () => boolean, what: string): Promise<void> {
  const end = Date.now() + 60_000;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describePg('two-phase clear and full restore on PostgreSQL, two daemons writing', () => {
  for (const op of ['clear', 'restore'] as const) {
    it(`${op}: writes of the other daemon during the snapshot copy are in the backup or the store, a user it deleted meanwhile is not in the backup`, async () => {
      const s = await createSchema();
      const t = await tempDir('chatmem-pg2p-');
      const store = await openStore(s.url);
      let other: ReturnType<typeof secondDaemon> | null = null;
      try {
        const records = fixtureRecords(USERS, id);
        for (let i = 0; i < USERS; i += 500) await store.exclusive('all', (ctx) => ctx.putMany(records.slice(i, i + 500)));
        const backupDir = path.join(t.dir, 'backups');
        const ops = new Operations({ store, backupDir, audit: new AuditLog(path.join(t.dir, 'audit.log')), actor: { kind: 'os', name: 'test' } });
        const source = op === 'restore' ? await ops.createBackup() : null;

        const gone = id(7);
        other = secondDaemon(s.url);
        const daemon = other;
        await daemon.wait((l) => l === 'ready', 'ready');
        await daemon.wait((l) => l.startsWith('ack '), 'first ack');

        // The snapshot copy: paused after its first row (the snapshot is taken by then) until the other
        // daemon has deleted `gone` and acknowledged appends issued after that moment.
        let copyStart = Infinity;
        let deleted = '';
        const scanJson = store.scanJson.bind(store);
        let paused = false;
        store.scanJson = (options?: ScanOptions) =>
          (async function* () {
            let first = true;
            for await (const row of scanJson(options)) {
              yield row;
              if (first && !paused) {
                paused = true;
                copyStart = Date.now();
                daemon.send(`delete ${gone}`);
                deleted = await daemon.wait((l) => l.startsWith('deleted '), 'delete');
                await until(() => daemon.acks.filter((a) => a.issued > copyStart).length >= 20, 'appends of the other daemon during the copy');
              }
              first = false;
            }
          })();
        let sectionAt = Infinity;
        const exclusive = store.exclusive.bind(store);
        store.exclusive = <T>(scope: Parameters<typeof exclusive>[0], fn: (ctx: ExclusiveContext) => Promise<T>) =>
          exclusive(scope, (ctx) => {
            if (scope === 'all' && sectionAt === Infinity) sectionAt = Date.now();
            return fn(ctx);
          });

        // This daemon appends too.
        const acks: Ack[] = [];
        let stop = false;
        let n = 0;
        const writers = Array.from({ length: 2 }, async (_, w) => {
          const deadline = Date.now() + 120_000;
          while (!stop && Date.now() < deadline) {
            const k = n++;
            // Never `gone`: an append of this daemon would create it again, and the checks below expect
            // it deleted (in a full run, writer 0's 97th append landed on it after the other's delete).
            const pick = id((k * 31 + w) % USERS);
            const user = k % 10 === 0 ? `anew${String(k).padStart(6, '0')}` : pick === gone ? id(8) : pick;
            const text = `a${w}-m${k}`;
            const issued = Date.now();
            await store.appendHistory(user, { role: 'user', text });
            acks.push({ user, text, issued, acked: Date.now(), other: false });
          }
        });
        await until(() => acks.length >= 10, 'appends of this daemon');

        const start = Date.now();
        const result = op === 'clear' ? await ops.clearAll() : await ops.restore(source?.id ?? '', { wholeStore: true });
        const end = Date.now();
        await until(() => daemon.acks.filter((a) => a.issued > end).length >= 20, 'appends of the other daemon after the operation');
        stop = true;
        await Promise.all(writers);
        daemon.send('stop');
        await daemon.wait((l) => l === 'closed', 'close');
        expect(await daemon.exited).toBe(0);

        expect(paused).toBe(true);
        expect(deleted).toBe(`deleted ${gone} 1`);
        expect(start).toBeLessThan(copyStart);
        const all = [...acks, ...daemon.acks];
        // Both orders happened: the other daemon's appends issued after the snapshot and acknowledged
        // before the section (from the rounds or the seal), and appends issued after the operation.
        const during = daemon.acks.filter((a) => a.issued > copyStart && a.acked < sectionAt);
        const after = all.filter((a) => a.issued > end);
        expect(during.length).toBeGreaterThanOrEqual(20);
        expect(after.length).toBeGreaterThan(0);

        const backupId = typeof result.backup === 'string' ? result.backup : '';
        expect(backupId).not.toBe('');
        const backup = JSON.parse(readFileSync(path.join(backupDir, `${backupId}.json`), 'utf8')) as Record<string, MemoryRecord>;
        expect((await ops.verifyBackups(backupId))[0]?.ok).toBe(true);
        // Deleted by the other daemon during the copy: the snapshot has it, the backup must not.
        expect(backup[gone]).toBeUndefined();
        if (op === 'clear') {
          expect(await store.get(gone)).toBeNull();
          expect(Object.keys(backup).length).toBe((result as { deleted: number }).deleted);
        } else {
          // The restore brings it back from its source backup, taken before the delete.
          expect(await store.get(gone)).not.toBeNull();
        }
        // The users the other daemon created during the copy are in the backup.
        expect(during.filter((a) => a.user.startsWith('bnew') && backup[a.user] === undefined)).toEqual([]);
        const has = (r: MemoryRecord | null | undefined, text: string) => r?.history.some((h) => h.text === text) === true;
        const lost: Ack[] = [];
        const both: Ack[] = [];
        const missedBefore: Ack[] = [];
        for (const a of all) {
          const inBackup = has(backup[a.user], a.text);
          const inStore = has(await store.get(a.user), a.text);
          if (!inBackup && !inStore) lost.push(a);
          if (op === 'clear' && inBackup && inStore) both.push(a);
          if (a.acked < sectionAt && !inBackup) missedBefore.push(a);
        }
        expect(lost).toEqual([]);
        expect(both).toEqual([]);
        expect(missedBefore).toEqual([]);
        for (const a of after) expect(has(await store.get(a.user), a.text)).toBe(true);
        // Nothing of the two-phase backup is left behind.
        expect(readdirSync(backupDir).filter((f) => f.startsWith('.parts-'))).toEqual([]);
      } finally {
        if (other && other.child.exitCode === null) other.child.kill('SIGKILL');
        await store.close();
        await s.drop();
        await t.cleanup();
      }
    }, 180_000);
  }
});
