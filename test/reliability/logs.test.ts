import { existsSync, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { resolveConfig, type ResolvedConfig } from '../../src/config.js';
import { openStore } from '../../src/store/open.js';
import { isProcessAlive } from '../../src/store/owner.js';
import { logFile } from '../../src/server/daemon-info.js';
import { startDaemon, stopDaemon } from '../../src/server/process.js';
import { serve } from '../../src/server/serve.js';
import { createSchema, describePg } from '../helpers/pg.js';
import { DIST, tempDir } from '../helpers/tmp.js';
import { http } from '../server/helpers.js';

const ADMIN = 'log-privacy-admin-token-5f0c9a1e7d';
const WRONG = 'log-privacy-WRONG-token-77aa88bb99';

function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('CHATMEM_')) env[k] = v;
  return { ...env, ...extra };
}

const cleanups: (() => Promise<void>)[] = [];
const pids: number[] = [];
afterAll(async () => {
  for (const pid of pids) if (isProcessAlive(pid)) process.kill(pid, 'SIGKILL');
  for (const c of cleanups) await c();
});

async function daemonConfig(server: Record<string, unknown> = {}): Promise<ResolvedConfig> {
  const { dir, cleanup } = await tempDir('chatmem-logs-');
  cleanups.push(cleanup);
  await fsp.writeFile(path.join(dir, 'chatmem.config.json'), JSON.stringify({ server }));
  return resolveConfig({ cwd: dir, store: `sqlite:${path.join(dir, 'data', 'storage', 'memory.db')}`, env: {} });
}

async function allLogText(config: ResolvedConfig): Promise<string> {
  const file = logFile(config);
  const dir = path.dirname(file);
  const names = (await fsp.readdir(dir)).filter((n) => n.startsWith(path.basename(file)));
  return (await Promise.all(names.map((n) => fsp.readFile(path.join(dir, n), 'utf8')))).join('\n');
}

describe.skipIf(!existsSync(path.join(DIST, 'cli', 'bin.js')))('daemon logs (chatmem start, a real process)', () => {
  it('carry no token, user id, phone number, name or search text through a realistic session', async () => {
    const config = await daemonConfig();
    const d = await startDaemon(config, { bin: path.join(DIST, 'cli', 'bin.js'), port: 0, env: cleanEnv({ CHATMEM_ADMIN_TOKEN: ADMIN }), log: () => undefined });
    pids.push(d.pid);
    const api = d.api;
    const phones = ['6281234567890', '628111222333', '628999000111'];
    const secrets = [ADMIN, WRONG, ...phones, 'Siti Rahayu', 'modem', 'rusak', 'Jl. Melati'];
    const statuses: number[] = [];
    const call = async (method: string, p: string, o: Parameters<typeof http>[3] = {}) => {
      const r = await http(api, method, p, o);
      statuses.push(r.status);
      return r;
    };

    await call('PUT', `/v1/users/${phones[0]}`, { json: { name: 'Siti Rahayu', address: 'Jl. Melati 5' } });
    for (const p of phones.slice(0, 2)) await call('POST', `/v1/users/${p}/history`, { json: { role: 'user', text: 'modem saya rusak' } });
    await call('PUT', `/v1/users/${phones[0]}/flags/asked_name`, { json: { value: true } });
    await call('PUT', `/v1/users/${phones[0]}/slots/modem_type`, { json: { value: 'ZTE' } });
    expect((await call('GET', `/v1/search?q=${encodeURIComponent('modem rusak')}`)).status).toBe(200);
    await call('GET', `/v1/search?q=${phones[1]}&limit=5`);
    await call('GET', `/v1/users?cursor=${phones[0]}`);
    await call('GET', `/v1/users/${phones[2]}`);
    await call('GET', `/v1/nothing/${phones[0]}`);
    // Admin operations with the token.
    await call('GET', `/v1/admin/users/${phones[0]}`, { token: ADMIN });
    await call('GET', `/v1/admin/search?q=rusak`, { token: ADMIN });
    expect((await call('POST', '/v1/admin/backups', { token: ADMIN, json: {} })).status).toBe(201);
    expect((await call('DELETE', `/v1/users/${phones[1]}`, { token: ADMIN })).status).toBe(200);
    await call('GET', `/v1/admin/audit?user=${phones[1]}`, { token: ADMIN });
    // A wrong token, tokens in the query under known, unknown and no names.
    expect((await call('GET', '/v1/admin/stats', { token: WRONG })).status).toBe(401);
    expect((await call('GET', `/v1/stats?foo=${ADMIN}`)).status).toBe(200);
    expect((await call('GET', `/v1/admin/stats?token=${ADMIN}`)).status).toBe(400);
    expect((await call('GET', `/v1/stats?${ADMIN}`)).status).toBe(200);
    expect((await call('GET', `/v1/users?limit=2&x-api-key=${WRONG}`)).status).toBe(200);

    expect(await stopDaemon(config)).toMatchObject({ stopped: true });
    const text = await allLogText(config);
    const lines = text.split('\n').filter((l) => l.trim() !== '');
    // Logging was on: one request line per call, and the admin operations.
    // start and stop poll /healthz themselves.
    const requests = lines.filter((l) => l.includes('"msg":"request"') && !l.includes('"route":"/healthz"'));
    expect(requests.length).toBe(statuses.length);
    expect(lines.filter((l) => l.includes('"msg":"admin operation"')).length).toBeGreaterThanOrEqual(2);
    for (const s of secrets) expect(lines.filter((l) => l.includes(s)), s).toEqual([]);
    // The same user gets the same tag within a run, so an operator can still follow one user's requests.
    const tags = requests
      .map((l) => JSON.parse(l) as { route?: string; params?: { id?: string } })
      .filter((r) => r.route === '/v1/users/:id/history')
      .map((r) => r.params?.id);
    expect(tags).toHaveLength(2);
    expect(tags[0]).toMatch(/^[A-Za-z0-9_-]{16}$/);
    expect(tags[0]).not.toBe(tags[1]);
  });

  it('rotates chatmem.log at server.logMaxBytes, keeping server.logKeep files, all 0600, with no gap or hole', async () => {
    const config = await daemonConfig({ logMaxBytes: 8192, logKeep: 2 });
    const d = await startDaemon(config, { bin: path.join(DIST, 'cli', 'bin.js'), port: 0, env: cleanEnv({ CHATMEM_ADMIN_TOKEN: ADMIN }), log: () => undefined });
    pids.push(d.pid);
    const file = logFile(config);
    // Each request line is ~200 bytes: 100 of them fill the cap about twice. Wait for two rotations.
    let n = 0;
    const deadline = Date.now() + 30_000;
    while (!existsSync(`${file}.2`) && Date.now() < deadline) {
      for (let i = 0; i < 50; i++) await http(d.api, 'GET', `/v1/stats?limit=${n++}`);
      await new Promise((r) => setTimeout(r, 300));
    }
    expect(existsSync(`${file}.1`)).toBe(true);
    expect(existsSync(`${file}.2`)).toBe(true);
    // Keep going past more rotations: the count stays at logKeep.
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 60; i++) await http(d.api, 'GET', `/v1/stats?limit=${n++}`);
      await new Promise((r) => setTimeout(r, 1500));
    }
    const last = n - 1;
    expect(await stopDaemon(config)).toMatchObject({ stopped: true });
    expect(existsSync(`${file}.3`)).toBe(false);
    for (const f of [file, `${file}.1`, `${file}.2`]) {
      const st = await fsp.stat(f);
      expect(st.mode & 0o777).toBe(0o600);
      // Well under what was written (n lines of ~200 bytes): the cap holds.
      expect(st.size).toBeLessThan(8192 + 60 * 400);
      // Copy-and-truncate of an O_APPEND file leaves no run of NUL bytes where the old end was.
      expect((await fsp.readFile(f)).includes(0)).toBe(false);
    }
    // Older lines were dropped: the kept files hold fewer request lines than were written.
    let kept = 0;
    for (const f of [file, `${file}.1`, `${file}.2`]) kept += (await fsp.readFile(f, 'utf8')).split('\n').filter((l) => l.includes('"route":"/v1/stats"')).length;
    expect(kept).toBeGreaterThan(10);
    expect(kept).toBeLessThan(n);
    // The daemon kept logging into the live file after the rotations, up to its last request and its stop.
    const live = await fsp.readFile(file, 'utf8');
    expect(live).toMatch(/chatmem stopped/);
    const rotated = await fsp.readFile(`${file}.1`, 'utf8');
    expect(live.split('\n').filter((l) => l.includes('"msg":"request"')).length + rotated.split('\n').filter((l) => l.includes('"msg":"request"')).length).toBeGreaterThan(10);
    expect(last).toBeGreaterThan(100);
  });
});

const PW = 'Pg-S3cr@t%pw:x';
describePg('PostgreSQL passwords never surface', () => {
  it('not on /healthz, in logs, manifests, the audit log, the pid file, or errors, in any URL form', async () => {
    const { url, drop } = await createSchema();
    cleanups.push(drop);
    // Trust auth ignores the password; it only has to stay out of every output.
    const withUserinfo = url.replace(/^postgres:\/\/[^@/]*@/, `postgres://postgres:${encodeURIComponent(PW)}@`);
    expect(withUserinfo).toContain(encodeURIComponent(PW));
    const withQuery = `${url}&password=${encodeURIComponent(PW)}`;
    const forms = [PW, encodeURIComponent(PW), 'S3cr@t', 'S3cr%40t'];

    for (const storeUrl of [withUserinfo, withQuery]) {
      const { dir, cleanup } = await tempDir('chatmem-pgpw-');
      cleanups.push(cleanup);
      const logPath = path.join(dir, 'daemon.log');
      const config = await resolveConfig({ cwd: dir, store: storeUrl, env: {} });
      const server = await serve(config, {
        port: 0,
        logger: { level: 'info', file: logPath },
        handleSignals: false,
        env: { CHATMEM_ADMIN_TOKEN: ADMIN },
        log: () => undefined,
      });
      const outputs: string[] = [];
      try {
        const health = await http(server.url, 'GET', '/healthz');
        expect(health.status).toBe(200);
        outputs.push(health.text);
        await http(server.url, 'PUT', '/v1/users/pw1', { json: { name: 'x' } });
        const backup = await http<{ backup: string }>(server.url, 'POST', '/v1/admin/backups', { token: ADMIN, json: {} });
        expect(backup.status).toBe(201);
        outputs.push(backup.text, (await http(server.url, 'GET', '/v1/admin/backups', { token: ADMIN })).text);
        outputs.push((await http(server.url, 'GET', `/v1/admin/backups/${backup.body.backup}`, { token: ADMIN })).text);
        outputs.push((await http(server.url, 'GET', '/v1/admin/audit', { token: ADMIN })).text);
        for (const f of await fsp.readdir(config.backupDir)) if (f.endsWith('.json')) outputs.push(await fsp.readFile(path.join(config.backupDir, f), 'utf8'));
        for (const f of await fsp.readdir(config.dataDir)) {
          const p = path.join(config.dataDir, f);
          if ((await fsp.stat(p)).isFile()) outputs.push(await fsp.readFile(p, 'utf8'));
        }
        outputs.push(await fsp.readFile(config.auditLog, 'utf8'));
      } finally {
        await server.close();
      }
      outputs.push(await fsp.readFile(logPath, 'utf8'));
      expect(outputs.join('\n')).toMatch(/postgres/);
      for (const f of forms) expect(outputs.filter((o) => o.includes(f)), `${storeUrl} leaks ${f}`).toEqual([]);
    }

    // A server that does not answer: the error names the URL, without the password, and so does its cause.
    for (const bad of [`postgres://postgres:${encodeURIComponent(PW)}@127.0.0.1:1/test`, `postgres://postgres@127.0.0.1:1/test?password=${encodeURIComponent(PW)}`]) {
      const err = await openStore(bad).then(
        () => null,
        (e: unknown) => e as Error & { code?: string; cause?: Error },
      );
      expect(err?.code).toBe('E_STORE_OPEN');
      const text = `${err?.message ?? ''}\n${err?.cause?.message ?? ''}\n${err?.cause?.stack ?? ''}`;
      expect(text).toContain('127.0.0.1');
      for (const f of forms) expect(text).not.toContain(f);
    }
    // A mistyped scheme is refused naming the URL: still without its password.
    const typo = await resolveConfig({ store: `postgress://postgres:${encodeURIComponent(PW)}@h/db`, env: {} }).catch((e: unknown) => e as Error);
    expect((typo as Error).message).toMatch(/postgress/);
    for (const f of forms) expect((typo as Error).message).not.toContain(f);
  });
});
