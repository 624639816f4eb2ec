import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import { createServer } from 'node:net';
import * as path from 'node:path';
import { expect, it } from 'vitest';
import type { MemoryRecord } from '../../src/record.js';
import { createSchema, describePg } from '../helpers/pg.js';
import { ROOT, tempDir } from '../helpers/tmp.js';
import { ADMIN_TOKEN } from './helpers.js';

const CLIENTS_PER_DAEMON = 8;
const USERS = 10;
const DEADLINE_MS = 30_000;

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
    srv.on('error', reject);
  });
}

/** A real daemon process (`serve` on the compiled code) on the shared PostgreSQL store. */
async function daemon(env: NodeJS.ProcessEnv, cwd: string): Promise<{ url: string; child: ChildProcess; stop: () => Promise<void> }> {
  const port = await freePort();
  const child = spawn(process.execPath, [path.join(ROOT, 'test/server/serve-child.mjs')], {
    cwd,
    env: { ...process.env, ...env, CHATMEM_PORT: String(port) },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const url = `http://127.0.0.1:${port}`;
  const until = Date.now() + 15_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`daemon exited: ${stderr}`);
    const ok = await fetch(`${url}/healthz`).then((r) => r.ok, () => false);
    if (ok) break;
    if (Date.now() > until) throw new Error(`daemon did not start: ${stderr}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url,
    child,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}

describePg('two daemon processes on one PostgreSQL', () => {
  it('a clear on daemon A while clients append through A and B loses no acknowledged write', async () => {
    const { dir, cleanup } = await tempDir();
    const pg = await createSchema();
    const shared = {
      CHATMEM_STORE: pg.url,
      CHATMEM_ADMIN_TOKEN: ADMIN_TOKEN,
      CHATMEM_BACKUP_DIR: path.join(dir, 'backups'),
      CHATMEM_AUDIT_LOG: path.join(dir, 'audit.log'),
      CHATMEM_HISTORY_CAP: '100000',
    };
    const a = await daemon({ ...shared, CHATMEM_DATA_DIR: path.join(dir, 'a') }, dir);
    const b = await daemon({ ...shared, CHATMEM_DATA_DIR: path.join(dir, 'b') }, dir);
    try {
      const acks: { user: string; text: string }[] = [];
      const failures: string[] = [];
      let stop = false;
      const deadline = Date.now() + DEADLINE_MS;
      const client = async (base: string, c: number) => {
        for (let n = 0; n < 500 && !stop && Date.now() < deadline; n++) {
          const user = `u${(c + n) % USERS}`;
          const text = `${base.slice(-5)}-c${c}-m${n}`;
          const res = await fetch(`${base}/v1/users/${user}/history`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ role: 'user', text }),
          }).catch((e: unknown) => e as Error);
          if (res instanceof Error || res.status !== 201) {
            failures.push(res instanceof Error ? res.message : `${res.status} ${await res.text()}`);
            continue;
          }
          acks.push({ user, text });
        }
      };
      const load = Promise.all([
        ...Array.from({ length: CLIENTS_PER_DAEMON }, (_, c) => client(a.url, c)),
        ...Array.from({ length: CLIENTS_PER_DAEMON }, (_, c) => client(b.url, c)),
      ]);
      const waitFor = async (n: number) => {
        while (acks.length < n && Date.now() < deadline && failures.length === 0) await new Promise((r) => setTimeout(r, 5));
      };
      await waitFor(300);
      const res = await fetch(`${a.url}/v1/admin/clear`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN_TOKEN}` },
        body: JSON.stringify({ confirm: 'YES' }),
      });
      const cleared = (await res.json()) as { backupFile: string; deleted: number };
      expect(res.status, JSON.stringify(cleared)).toBe(200);
      await waitFor(acks.length + 300);
      stop = true;
      await load;
      expect(failures).toEqual([]);

      const backup = JSON.parse(await fsp.readFile(cleared.backupFile, 'utf8')) as Record<string, MemoryRecord>;
      const after = new Map<string, Set<string>>();
      for (let u = 0; u < USERS; u++) {
        const r = await fetch(`${b.url}/v1/users/u${u}`);
        if (r.status === 200) after.set(`u${u}`, new Set(((await r.json()) as MemoryRecord).history.map((h) => h.text)));
      }
      const inBackup = (x: { user: string; text: string }) => backup[x.user]?.history.some((h) => h.text === x.text) ?? false;
      const lost = acks.filter((x) => !inBackup(x) && !after.get(x.user)?.has(x.text));
      expect(lost).toEqual([]);
      expect(acks.filter(inBackup).length).toBeGreaterThan(0);
      expect(acks.filter((x) => after.get(x.user)?.has(x.text)).length).toBeGreaterThan(0);
      // Both daemons served writes on both sides of the clear.
      expect(new Set(acks.map((x) => x.text.split('-c')[0])).size).toBe(2);
    } finally {
      await Promise.all([a.stop(), b.stop()]);
      await pg.drop();
      await cleanup();
    }
  });
});
