/**
 * An append is acknowledged only once it is durable: the daemon (SQLite, group commits) is killed with
 * SIGKILL the moment the load generator holds its N-th 201, with many appends in flight, and every
 * acknowledged append must be in the store the next open finds. An acknowledgement sent when the write
 * is queued, not when its group has committed, failed this (checked by hand on the writer-thread
 * branch `engine`: 5 of 471 acknowledged appends lost).
 */
import { mkdirSync } from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveConfig } from '../../src/config.js';
import { startDaemon } from '../../src/server/process.js';
import { openStore } from '../../src/store/open.js';
import { isProcessAlive } from '../../src/store/owner.js';
import { ensureBuilt, BIN } from '../cli/helpers.js';
import { tempDir } from '../helpers/tmp.js';

const ADMIN = 'ack-after-commit-admin-token-0123456789';
const USERS = 200;
const IN_FLIGHT = 24;
const RUNS = 4;

let root: Awaited<ReturnType<typeof tempDir>>;
const pids = new Set<number>();

beforeAll(async () => {
  await ensureBuilt();
  root = await tempDir('chatmem-ack-');
});

afterAll(async () => {
  for (const pid of pids) if (isProcessAlive(pid)) process.kill(pid, 'SIGKILL');
  await root.cleanup();
});

describe('SIGKILL right after a 201', () => {
  it('sqlite: every acknowledged append is in the store after the kill', async () => {
    const storeDir = path.join(root.dir, 'data');
    mkdirSync(storeDir, { recursive: true, mode: 0o700 });
    const storeFile = path.join(storeDir, 'memory.db');
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('CHATMEM_') && k !== 'NO_COLOR') env[k] = v;
    Object.assign(env, { CHATMEM_STORE: `sqlite:${storeFile}`, CHATMEM_ADMIN_TOKEN: ADMIN, CHATMEM_DATA_DIR: storeDir });
    const config = await resolveConfig({ cwd: root.dir, env });
    const acked: [string, string][] = [];
    let sent = 0;
    for (let run = 0; run < RUNS; run++) {
      const d = await startDaemon(config, { bin: BIN, port: 0, env, log: () => undefined });
      pids.add(d.pid);
      // Kill points move from run to run, so that groups of different sizes are caught mid-commit.
      const killAt = acked.length + 40 + run * 37;
      let killed = false;
      const loop = async (w: number): Promise<void> => {
        for (let i = 0; !killed; i++) {
          const user = `ack_${String((w * 7919 + i * 104729) % USERS).padStart(3, '0')}`;
          const text = `run${run}-w${w}-${i}`;
          sent++;
          try {
            const res = await fetch(`${d.api}/v1/users/${user}/history`, {
              method: 'POST',
              headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json', prefer: 'return=minimal' },
              body: JSON.stringify({ role: 'user', text }),
              signal: AbortSignal.timeout(30_000),
            });
            if (res.status !== 201) continue;
            acked.push([user, text]);
            if (acked.length >= killAt && !killed) {
              // Before anything else: the daemon gets no time to finish commits it had not yet made.
              process.kill(d.pid, 'SIGKILL');
              killed = true;
            }
          } catch {
            return; // the daemon is gone
          }
        }
      };
      await Promise.all(Array.from({ length: IN_FLIGHT }, (_, w) => loop(w)));
      pids.delete(d.pid);
      // The daemon's stale pid file names a dead process: the next start takes over.
      for (let t = 0; isProcessAlive(d.pid) && t < 100; t++) await new Promise((r) => setTimeout(r, 20));
    }
    expect(sent).toBeGreaterThan(acked.length);
    const store = await openStore(`sqlite:${storeFile}`);
    try {
      const byUser = new Map<string, Set<string>>();
      for (const [user] of acked) {
        if (!byUser.has(user)) {
          const r = await store.get(user);
          byUser.set(user, new Set(r?.history.map((e) => e.text)));
        }
      }
      const lost = acked.filter(([user, text]) => !byUser.get(user)?.has(text));
      expect(lost, `${lost.length} of ${acked.length} acknowledged appends lost`).toEqual([]);
    } finally {
      await store.close();
    }
  }, 180_000);
});
