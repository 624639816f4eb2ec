import { promises as fsp } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RemoteAdmin } from '../../src/admin/remote.js';
import { openContext, type Context } from '../../src/context.js';
import type { AuditEntry } from '../../src/ops/audit.js';
import { addAdminToken, adminTokensFile, readAdminTokens, removeAdminToken } from '../../src/server/admin-tokens.js';
import { buildApp } from '../../src/server/app.js';
import { sandbox } from '../cli/helpers.js';
import { ADMIN_TOKEN, http, tempConfig } from './helpers.js';

describe('named admin tokens: the file', () => {
  let dataDir: string;
  let cleanup: () => Promise<void>;
  beforeAll(async () => {
    const t = await tempConfig('sqlite');
    dataDir = t.config.dataDir;
    cleanup = t.cleanup;
  });
  afterAll(async () => cleanup());

  it('stores only a hash, 0600, and returns the token once', async () => {
    const t = await addAdminToken({ dataDir }, 'alice');
    expect(t.token).toMatch(/^cm_[A-Za-z0-9_-]{43}$/);
    const file = adminTokensFile({ dataDir });
    expect((await fsp.stat(file)).mode & 0o777).toBe(0o600);
    const text = await fsp.readFile(file, 'utf8');
    expect(text).not.toContain(t.token);
    expect(text).not.toContain(t.token.slice(3));
    expect(await readAdminTokens(file)).toEqual([{ name: 'alice', sha256: expect.stringMatching(/^[0-9a-f]{64}$/), created: t.created }]);
  });

  it('refuses duplicates, the built-in name and bad names; removes by name', async () => {
    await expect(addAdminToken({ dataDir }, 'alice')).rejects.toMatchObject({ code: 'E_TOKEN_EXISTS' });
    for (const bad of ['admin', '', 'a b', 'x\n', '../etc', 'a'.repeat(65)]) await expect(addAdminToken({ dataDir }, bad)).rejects.toMatchObject({ code: 'E_TOKEN_NAME' });
    await expect(removeAdminToken({ dataDir }, 'bob')).rejects.toMatchObject({ code: 'E_TOKEN_NOT_FOUND' });
    await addAdminToken({ dataDir }, 'bob');
    await removeAdminToken({ dataDir }, 'bob');
    expect((await readAdminTokens(adminTokensFile({ dataDir }))).map((t) => t.name)).toEqual(['alice']);
  });

  it('loses no token when many are added at once (lock file)', async () => {
    const names = Array.from({ length: 12 }, (_, i) => `par${i}`);
    await Promise.all(names.map((n) => addAdminToken({ dataDir }, n)));
    const stored = (await readAdminTokens(adminTokensFile({ dataDir }))).map((t) => t.name);
    for (const n of names) expect(stored).toContain(n);
  });

  it('never overwrites a file it cannot parse', async () => {
    const t = await tempConfig('sqlite');
    try {
      await fsp.mkdir(t.config.dataDir, { recursive: true });
      const file = adminTokensFile(t.config);
      await fsp.writeFile(file, '{"tokens": [broken');
      await expect(addAdminToken(t.config, 'carol')).rejects.toMatchObject({ code: 'E_CONFIG' });
      expect(await fsp.readFile(file, 'utf8')).toBe('{"tokens": [broken');
    } finally {
      await t.cleanup();
    }
  });
});

describe('named admin tokens in the daemon', () => {
  let ctx: Context;
  let url: string;
  let dataDir: string;
  let close: () => Promise<void>;
  beforeAll(async () => {
    const t = await tempConfig('sqlite');
    dataDir = t.config.dataDir;
    ctx = await openContext(t.config, { role: 'daemon' });
    const app = await buildApp({ ctx, adminToken: ADMIN_TOKEN, logger: false, adminTokensFile: adminTokensFile(t.config) });
    await app.listen({ host: '127.0.0.1', port: 0 });
    const a = app.server.address();
    url = `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`;
    close = async () => {
      await app.close();
      await ctx.close();
      await t.cleanup();
    };
  });
  afterAll(async () => close());

  it('answers whoami with the token name; the built-in token is "admin"', async () => {
    const alice = await addAdminToken({ dataDir }, 'alice');
    expect((await http(url, 'GET', '/v1/admin/whoami', { token: alice.token, headers: { 'x-chatmem-os-user': 'budi' } })).body).toEqual({
      name: 'alice',
      osUser: 'budi',
      remote: '127.0.0.1',
    });
    expect((await http(url, 'GET', '/v1/admin/whoami', { token: ADMIN_TOKEN })).body).toMatchObject({ name: 'admin', osUser: null });
    // The client the CLI routes through sends the OS user.
    const remote = new RemoteAdmin({ baseUrl: url, token: alice.token, storeUrl: 'x', osUser: 'sari' });
    expect(await remote.whoami()).toMatchObject({ name: 'alice', osUser: 'sari' });
    // Control characters never reach the audit log.
    expect((await http(url, 'GET', '/v1/admin/whoami', { token: alice.token, headers: { 'x-chatmem-os-user': 'ev\til' } })).body).toMatchObject({ osUser: 'evil' });
  });

  it('audits operations with the token name, the OS user and the remote address', async () => {
    const ops = await addAdminToken({ dataDir }, 'ops-bot');
    await http(url, 'PUT', '/v1/users/6281000', { json: { name: 'x' } });
    const r = await http(url, 'DELETE', '/v1/users/6281000', { token: ops.token, headers: { 'x-chatmem-os-user': 'deploy' } });
    expect(r.status).toBe(200);
    const entries = (await http<{ entries: AuditEntry[] }>(url, 'GET', '/v1/admin/audit?action=delete-users', { token: ADMIN_TOKEN })).body.entries;
    expect(entries.length).toBeGreaterThanOrEqual(2);
    for (const e of entries) expect(e.actor).toEqual({ kind: 'api', name: 'ops-bot', osUser: 'deploy', remote: '127.0.0.1' });
  });

  it('refuses a removed token from the next request on, without a restart; a damaged file locks out only named tokens', async () => {
    const bob = await addAdminToken({ dataDir }, 'bob');
    expect((await http(url, 'GET', '/v1/admin/stats', { token: bob.token })).status).toBe(200);
    await removeAdminToken({ dataDir }, 'bob');
    expect((await http(url, 'GET', '/v1/admin/stats', { token: bob.token })).status).toBe(401);
    const carol = await addAdminToken({ dataDir }, 'carol');
    await fsp.writeFile(adminTokensFile({ dataDir }), 'not json');
    expect((await http(url, 'GET', '/v1/admin/stats', { token: carol.token })).status).toBe(401);
    expect((await http(url, 'GET', '/v1/admin/stats', { token: ADMIN_TOKEN })).status).toBe(200);
  });
});

describe('chatmem token', () => {
  it('add prints the token once, list shows names only, remove revokes', async () => {
    const sb = await sandbox('sqlite', { empty: true });
    try {
      const add = await sb.run(['token', 'add', 'ops-bot']);
      expect(add.code).toBe(0);
      const tok = add.stdout.trim();
      expect(tok).toMatch(/^cm_/);
      expect(add.stderr).toMatch(/shown only this once/);
      const list = await sb.run(['token', 'list']);
      expect(list.stdout).toContain('ops-bot');
      expect(list.stdout).not.toContain(tok);
      const dup = await sb.run(['token', 'add', 'ops-bot']);
      expect(dup.code).toBe(1);
      expect(dup.stderr).toContain('E_TOKEN_EXISTS');
      expect((await sb.run(['token', 'add', 'admin'])).code).toBe(2);
      expect((await sb.run(['token', 'remove', 'ops-bot'])).code).toBe(0);
      expect((await sb.run(['token', 'remove', 'ops-bot'])).code).toBe(3);
      expect((await sb.json<{ tokens: unknown[] }>(['token', 'list'])).doc.tokens).toEqual([]);
      expect((await sb.run(['token', 'frob'])).code).toBe(2);
    } finally {
      await sb.cleanup();
    }
  });
});
