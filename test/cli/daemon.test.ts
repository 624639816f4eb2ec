import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { resolveConfig } from '../../src/config.js';
import { adminTokenFile } from '../../src/server/daemon-info.js';
import { serve } from '../../src/server/serve.js';
import { BIN, cleanEnv, ensureBuilt, FIXTURES, sandbox, type Sandbox } from './helpers.js';

const JOKO = '628161973069';

describe.each(['sqlite', 'json'] as const)('with a daemon serving the %s store', (kind) => {
  let sb: Sandbox;
  let server: { url: string; close(): Promise<void> };
  let tokenFile: string;

  beforeEach(async () => {
    sb = await sandbox(kind);
    const config = await resolveConfig({ store: sb.storeUrl, cwd: sb.dir, env: cleanEnv() });
    tokenFile = adminTokenFile(config);
    server = await serve(config, { port: 0, logger: false, handleSignals: false, log: () => undefined, env: cleanEnv() });
  });

  afterEach(async () => {
    await server.close();
    await sb.cleanup();
  });

  it('destructive commands go through the daemon, with its backup', async () => {
    const r = await sb.run(['delete', JOKO, '--yes']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain(`via daemon at ${server.url}`);
    const file = /^Backup: (.+)$/m.exec(r.stdout)?.[1] ?? '';
    expect(Object.keys(JSON.parse(await fsp.readFile(file, 'utf8')) as object)).toEqual([JOKO]);
    // The daemon's own view (reads prefer it too) no longer has the user.
    const show = await sb.run(['show', JOKO]);
    expect(show.code).toBe(3);
    expect(show.stderr).toContain('via daemon');
    const stats = await sb.json<{ users: number }>(['stats']);
    expect(stats.doc.users).toBe(199);
  });

  it('refuses to change the store behind the daemon when no admin token is found', async () => {
    await fsp.rm(tokenFile);
    const r = await sb.run(['delete', JOKO, '--yes']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('E_ADMIN_TOKEN');
    expect(r.stderr).toContain('CHATMEM_ADMIN_TOKEN');
    expect(await sb.backupFiles()).toEqual([]);
    // Reads still work, straight from the store.
    const users = await sb.json<{ count: number }>(['users']);
    expect(users.code).toBe(0);
    expect(users.doc.count).toBe(200);
  });

  it('a wrong admin token fails with the daemon\'s error and changes nothing', async () => {
    const r = await sb.run(['clear', '--yes'], { env: cleanEnv({ CHATMEM_STORE: sb.storeUrl, CHATMEM_ADMIN_TOKEN: 'wrong-token-wrong-token-wrong-token' }) });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/chatmem: error E[A-Z_]+: /);
    expect(await sb.backupFiles()).toEqual([]);
  });

  it('status reports the running daemon', async () => {
    const s = await sb.json<{ running: boolean; api: string }>(['status']);
    expect(s.code).toBe(0);
    expect(s.doc).toMatchObject({ running: true, api: server.url });
  });
});

describe('without a daemon', () => {
  let sb: Sandbox;
  beforeEach(async () => {
    sb = await sandbox('sqlite', { empty: true });
  });
  afterEach(async () => {
    await sb.cleanup();
  });

  it('status exits 3 and stop says nothing was running', async () => {
    const s = await sb.run(['status']);
    expect(s.code).toBe(3);
    expect(s.stdout).toContain('No chatmem daemon is running');
    const stop = await sb.run(['stop']);
    expect(stop.code).toBe(0);
    expect(stop.stdout).toContain('No chatmem daemon is running');
  });

  it('a store claimed by another chatmem process is explained (E_STORE_LOCKED)', async () => {
    await sb.run(['import', path.join(FIXTURES, 'backups', 'memory_backup_628161973069_20251125_140002.json')]);
    // A live process that is not this one: the parent of the test worker.
    await fsp.writeFile(`${sb.storeFile}.owner`, JSON.stringify({ pid: process.ppid, host: (await import('node:os')).hostname(), role: 'cli', startedAt: new Date().toISOString() }));
    const r = await sb.run(['backup']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('E_STORE_LOCKED');
    expect(r.stderr).toContain(`another chatmem command (pid ${process.ppid})`);
    const read = await sb.run(['stats']);
    expect(read.code).toBe(0);
    expect(path.basename(sb.storeFile)).toBe('memory.db');
  });
});

describe('the binary: start, status, a delete through the daemon, stop', () => {
  let sb: Sandbox;
  beforeAll(async () => {
    await ensureBuilt();
  }, 120_000);
  beforeEach(async () => {
    sb = await sandbox('json');
  });
  afterEach(async () => {
    spawnSync(process.execPath, [BIN, 'stop'], { cwd: sb.dir, env: cleanEnv({ CHATMEM_STORE: sb.storeUrl }), timeout: 20_000 });
    await sb.cleanup();
  });

  function cli(...args: string[]): { code: number; stdout: string; stderr: string } {
    const r = spawnSync(process.execPath, [BIN, ...args], { cwd: sb.dir, env: cleanEnv({ CHATMEM_STORE: sb.storeUrl }), encoding: 'utf8', timeout: 30_000 });
    return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
  }

  it('runs the whole life cycle', async () => {
    const started = cli('start', '--port', '0', '--json');
    expect(started.code, started.stderr).toBe(0);
    const { api } = JSON.parse(started.stdout) as { api: string };
    const status = cli('status');
    expect(status.code).toBe(0);
    expect(status.stdout).toContain(api);
    const del = cli('delete', JOKO, '--yes');
    expect(del.code, del.stderr).toBe(0);
    expect(del.stderr).toContain(`via daemon at ${api}`);
    const stopped = cli('stop');
    expect(stopped.code).toBe(0);
    expect(stopped.stdout).toContain('Stopped');
    expect(cli('status').code).toBe(3);
    // The daemon flushed its state to memory.json on the way out.
    const memory = JSON.parse(await fsp.readFile(sb.storeFile, 'utf8')) as Record<string, unknown>;
    expect(Object.keys(memory)).toHaveLength(199);
    expect(memory[JOKO]).toBeUndefined();
  });
});
