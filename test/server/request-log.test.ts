import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { resolveConfig } from '../../src/config.js';
import { serve } from '../../src/server/serve.js';
import { tempDir } from '../helpers/tmp.js';
import { http } from './helpers.js';

const ADMIN = 'request-log-admin-token-0123456789';

interface Line {
  msg: string;
  route?: string;
  status?: number;
  sample?: number;
  params?: Record<string, string>;
  query?: string[];
  otherQuery?: number;
}

describe('request log sampling (server.logSample)', () => {
  it('logs one in N successful data-plane requests, and every error and every admin request', async () => {
    const { dir, cleanup } = await tempDir('chatmem-reqlog-');
    try {
      await fsp.writeFile(path.join(dir, 'chatmem.config.json'), JSON.stringify({ server: { logSample: 5 } }));
      const config = await resolveConfig({ cwd: dir, store: `sqlite:${path.join(dir, 'data', 'storage', 'memory.db')}`, env: {} });
      expect(config.server.logSample).toBe(5);
      const logPath = path.join(dir, 'daemon.log');
      const server = await serve(config, { port: 0, logger: { level: 'info', file: logPath }, handleSignals: false, env: { CHATMEM_ADMIN_TOKEN: ADMIN }, log: () => undefined });
      const expected = { dataOk: 0, errors: 0, admin: 0 };
      try {
        for (let i = 0; i < 20; i++) {
          const r = await http(server.url, 'POST', `/v1/users/u${i % 3}/history`, { json: { role: 'user', text: `turn ${i}` } });
          expect(r.status).toBe(201);
          expected.dataOk++;
        }
        // Data-plane errors: an unknown user, a bad query, a bad body, an unknown route.
        expect((await http(server.url, 'GET', '/v1/users/nobody')).status).toBe(404);
        expect((await http(server.url, 'GET', '/v1/users?limit=0')).status).toBe(400);
        expect((await http(server.url, 'PUT', '/v1/users/u1/flags/f', { json: { notValue: 1 } })).status).toBe(400);
        expect((await http(server.url, 'GET', '/v1/nothing')).status).toBe(404);
        expected.errors += 4;
        // Admin requests, successful and refused.
        expect((await http(server.url, 'GET', '/v1/admin/stats', { token: ADMIN })).status).toBe(200);
        expect((await http(server.url, 'POST', '/v1/admin/backups', { token: ADMIN, json: {} })).status).toBe(201);
        expect((await http(server.url, 'GET', '/v1/admin/users', { token: ADMIN })).status).toBe(200);
        expected.admin += 3;
        expect((await http(server.url, 'GET', '/v1/admin/stats', { token: 'wrong-token-but-long-enough-0000' })).status).toBe(401);
        expected.errors++;
      } finally {
        await server.close();
      }
      const lines = (await fsp.readFile(logPath, 'utf8'))
        .split('\n')
        .filter((l) => l.trim() !== '')
        .map((l) => JSON.parse(l) as Line)
        .filter((l) => l.msg === 'request' && l.route !== '/healthz');
      const ok = lines.filter((l) => l.route === '/v1/users/:id/history');
      // 20 appends, one line for every 5th: the 1st, 6th, 11th and 16th, each saying how many it stands for.
      expect(ok).toHaveLength(expected.dataOk / 5);
      expect(ok.every((l) => l.sample === 5 && l.status === 201)).toBe(true);
      const errors = lines.filter((l) => (l.status ?? 0) >= 400);
      expect(errors).toHaveLength(expected.errors);
      expect(errors.every((l) => l.sample === undefined)).toBe(true);
      const admin = lines.filter((l) => l.route?.startsWith('/v1/admin/') && (l.status ?? 0) < 400);
      expect(admin.map((l) => l.route)).toEqual(['/v1/admin/stats', '/v1/admin/backups', '/v1/admin/users']);
      expect(admin.every((l) => l.sample === undefined)).toBe(true);
    } finally {
      await cleanup();
    }
  });

  it('names a user by the same keyed hash on every request of a run, and a query by its declared names and a count of the others', async () => {
    const { dir, cleanup } = await tempDir('chatmem-reqlog-');
    try {
      const config = await resolveConfig({ cwd: dir, store: `sqlite:${path.join(dir, 'data', 'storage', 'memory.db')}`, env: {} });
      const logPath = path.join(dir, 'daemon.log');
      const server = await serve(config, { port: 0, logger: { level: 'info', file: logPath }, handleSignals: false, env: { CHATMEM_ADMIN_TOKEN: ADMIN }, log: () => undefined });
      const users = ['+6281234567890', '+6281234567891', '+6281234567890', '+6281234567890', '+6281234567891'];
      try {
        for (const u of users) expect((await http(server.url, 'POST', `/v1/users/${encodeURIComponent(u)}/history`, { json: { role: 'user', text: 'hi' } })).status).toBe(201);
        expect((await http(server.url, 'GET', `/v1/users/${encodeURIComponent(users[0]!)}/flags/asked?ensure=1&secret=x&other=y`)).status).toBe(200);
        expect((await http(server.url, 'GET', '/v1/stats')).status).toBe(200);
      } finally {
        await server.close();
      }
      const text = await fsp.readFile(logPath, 'utf8');
      for (const u of users) expect(text).not.toContain(u);
      const lines = text
        .split('\n')
        .filter((l) => l.trim() !== '')
        .map((l) => JSON.parse(l) as Line)
        .filter((l) => l.msg === 'request' && l.route !== '/healthz');
      const appends = lines.filter((l) => l.route === '/v1/users/:id/history');
      const tags = appends.map((l) => l.params?.id ?? '');
      expect(tags).toHaveLength(5);
      for (const t of tags) expect(t).toMatch(/^[A-Za-z0-9_-]{16}$/);
      // Each user's tag, the first time and again (the repeats are looked up): one per user, different between users.
      expect(tags[2]).toBe(tags[0]);
      expect(tags[3]).toBe(tags[0]);
      expect(tags[4]).toBe(tags[1]);
      expect(tags[1]).not.toBe(tags[0]);
      expect(appends.every((l) => l.query === undefined && l.otherQuery === undefined)).toBe(true);
      const flag = lines.find((l) => l.route === '/v1/users/:id/flags/:key');
      expect(flag?.params).toEqual({ id: tags[0], key: expect.stringMatching(/^[A-Za-z0-9_-]{16}$/) });
      expect(flag?.query).toEqual(['ensure']);
      expect(flag?.otherQuery).toBe(2);
      const stats = lines.find((l) => l.route === '/v1/stats');
      expect(stats).toBeDefined();
      expect(stats?.params).toBeUndefined();
      expect(stats?.query).toBeUndefined();
    } finally {
      await cleanup();
    }
  });
});
