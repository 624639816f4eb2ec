import { existsSync, promises as fsp } from 'node:fs';
import { request } from 'node:http';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ResolvedConfig } from '../../src/config.js';
import { openContext } from '../../src/context.js';
import { isProcessAlive } from '../../src/store/owner.js';
import { adminTokenFile, logFile, pidFile } from '../../src/server/daemon-info.js';
import { daemonStatus, startDaemon, stopDaemon } from '../../src/server/process.js';
import { DIST } from '../helpers/tmp.js';
import { http, tempConfig } from './helpers.js';

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'serve-child.mjs');

/** The test runner's environment without CHATMEM_* settings, so the daemon sees only what startDaemon passes. */
function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('CHATMEM_')) env[k] = v;
  return { ...env, ...extra };
}

/** A PUT whose body arrives in two parts, so the request is in flight for as long as the test wants. */
function slowPut(url: string, body: string): { sendRest: () => void; response: Promise<{ status: number; text: string }> } {
  const half = Math.floor(body.length / 2);
  let sendRest = () => undefined as void;
  const response = new Promise<{ status: number; text: string }>((resolve, reject) => {
    const req = request(url, { method: 'PUT', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on('error', reject);
    req.write(body.slice(0, half));
    sendRest = () => void req.end(body.slice(half));
  });
  return { sendRest: () => sendRest(), response };
}

describe.skipIf(!existsSync(path.join(DIST, 'server', 'serve.js')))('start, status and stop as real processes', () => {
  let config: ResolvedConfig;
  let cleanup: () => Promise<void>;
  const said: string[] = [];
  let started: { pid: number; api: string } | null = null;

  beforeAll(async () => {
    ({ config, cleanup } = await tempConfig('sqlite'));
  });
  afterAll(async () => {
    // Never leave a daemon behind, even when a test failed half-way.
    if (started && isProcessAlive(started.pid)) process.kill(started.pid, 'SIGKILL');
    await cleanup();
  });

  it('reports a daemon that is not running', async () => {
    expect(await daemonStatus(config)).toMatchObject({ running: false, pid: null, healthy: false });
    expect(await stopDaemon(config)).toEqual({ stopped: false, pid: null, reason: 'not-running' });
  });

  it('starts in the background, prints the new admin token here and never into the log', async () => {
    const result = await startDaemon(config, { bin: CHILD, port: 0, env: cleanEnv(), log: (l) => said.push(l) });
    started = result;
    expect(result.pid).not.toBe(process.pid);
    expect(result.api).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(result.adminTokenFile).toBe(adminTokenFile(config));
    const token = (await fsp.readFile(adminTokenFile(config), 'utf8')).trim();
    expect(said.filter((l) => l.includes(token))).toHaveLength(1);
    expect((await fsp.stat(logFile(config))).mode & 0o777).toBe(0o600);
    expect(await fsp.readFile(logFile(config), 'utf8')).not.toContain(token);
    expect(existsSync(pidFile(config))).toBe(true);

    const health = await http<{ pid: number; store: string }>(result.api, 'GET', '/healthz');
    expect(health.body).toMatchObject({ pid: result.pid, store: config.store.display });
    expect((await http(result.api, 'GET', '/v1/admin/stats', { token })).status).toBe(200);
  });

  it('reports its status', async () => {
    const st = await daemonStatus(config);
    expect(st).toMatchObject({ running: true, healthy: true, pid: started?.pid, api: started?.api, store: config.store.display });
    expect(typeof st.uptime).toBe('number');
    expect(typeof st.version).toBe('string');
  });

  it('refuses a second daemon on the same store', async () => {
    await expect(startDaemon(config, { bin: CHILD, port: 0, env: cleanEnv(), log: () => undefined })).rejects.toMatchObject({ code: 'E_DAEMON_RUNNING' });
  });

  it('stops gracefully: an in-flight request finishes and is stored, then the daemon exits', async () => {
    if (!started) throw new Error('no daemon');
    const { pid, api } = started;
    const body = JSON.stringify({ name: 'Sari', summary_context: ['x'.repeat(20_000)] });
    const put = slowPut(`${api}/v1/users/inflight`, body);
    await new Promise((r) => setTimeout(r, 300));

    const stopping = stopDaemon(config, { timeoutMs: 20_000 });
    await new Promise((r) => setTimeout(r, 500));
    // Still alive: it waits for the request it is reading.
    expect(isProcessAlive(pid)).toBe(true);
    put.sendRest();
    const res = await put.response;
    expect(res.status).toBe(200);
    expect(JSON.parse(res.text)).toMatchObject({ user_id: 'inflight', name: 'Sari' });

    expect(await stopping).toEqual({ stopped: true, pid });
    expect(isProcessAlive(pid)).toBe(false);
    expect(existsSync(pidFile(config))).toBe(false);
    expect(await fsp.readFile(logFile(config), 'utf8')).toMatch(/chatmem stopped/);

    // The acknowledged write is in the store, and the store is free again.
    const ctx = await openContext(config);
    try {
      expect((await ctx.store.get('inflight'))?.name).toBe('Sari');
    } finally {
      await ctx.close();
    }
    expect(await daemonStatus(config)).toMatchObject({ running: false });
  });

  it('reports the log tail when the daemon cannot start', async () => {
    const bad = await tempConfig('sqlite', { CHATMEM_BACKUP_EVERY: 'sometimes' });
    try {
      const err = await startDaemon(bad.config, { bin: CHILD, port: 0, env: cleanEnv(), log: () => undefined }).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'E_DAEMON_START' });
      expect((err as Error).message).toMatch(/backup\.every/);
    } finally {
      await bad.cleanup();
    }
  });
});
