import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RemoteAdmin } from '../../src/admin/remote.js';
import { ADMIN_TOKEN, http, startApp, type TestServer } from './helpers.js';

const A = { token: ADMIN_TOKEN };
const ID = '6289912345678@lid';
const ADDRESS = 'Jl. Dilupakan 9931';

describe('POST /v1/admin/forget', () => {
  let s: TestServer;
  beforeEach(async () => {
    s = await startApp('sqlite');
  });
  afterEach(async () => {
    await s.close();
  });

  it('needs the admin token and a list of users, then forgets them from the store and the backups', async () => {
    await http(s.url, 'PUT', `/v1/users/${encodeURIComponent(ID)}`, { json: { name: 'Tamu', address: ADDRESS } });
    await http(s.url, 'PUT', '/v1/users/keep', { json: { name: 'Keep' } });
    const backup = await http<{ id: string }>(s.url, 'POST', '/v1/admin/backups', { ...A, json: {} });
    expect(backup.status).toBe(201);

    expect((await http(s.url, 'POST', '/v1/admin/forget', { json: { users: [ID] } })).status).toBe(401);
    expect((await http(s.url, 'POST', '/v1/admin/forget', { ...A, json: { users: [] } })).status).toBe(400);
    expect((await http(s.url, 'POST', '/v1/admin/forget', { ...A, json: {} })).status).toBe(400);

    const admin = new RemoteAdmin({ baseUrl: s.url, storeUrl: s.ctx.store.url, token: ADMIN_TOKEN });
    const r = await admin.forgetUsers([ID]);
    expect(r.deleted).toBe(1);
    expect(r.backupsRewritten).toEqual([backup.body.id]);
    expect((await http(s.url, 'GET', `/v1/admin/users/${encodeURIComponent(ID)}`, A)).status).toBe(404);
    expect((await http(s.url, 'GET', '/v1/admin/users/keep', A)).status).toBe(200);
    const storeDir = path.dirname(s.config.store.file!);
    for (const name of await fsp.readdir(storeDir, { recursive: true })) {
      const file = path.join(storeDir, name);
      if (!(await fsp.stat(file)).isFile()) continue;
      const text = await fsp.readFile(file, 'latin1');
      expect(text.includes(ID) || text.includes(ADDRESS), `${name} still names the user`).toBe(false);
    }
    const audit = await http<{ entries: { action: string; userIds?: string[] }[] }>(s.url, 'GET', '/v1/admin/audit?action=forget', A);
    expect(audit.body.entries.map((e) => e.userIds)).toEqual([[r.hashes[ID]], [r.hashes[ID]]]);
  });

  it('merges two ids and lists inactive users over HTTP', async () => {
    await http(s.url, 'PUT', '/v1/users/lid1', { json: { name: 'Budi', flags: { vip: false } } });
    await http(s.url, 'PUT', '/v1/users/phone1', { json: { name: null, flags: { vip: true } } });
    const admin = new RemoteAdmin({ baseUrl: s.url, storeUrl: s.ctx.store.url, token: ADMIN_TOKEN });
    expect((await http(s.url, 'POST', '/v1/admin/merge', { ...A, json: { from: 'lid1' } })).status).toBe(400);
    const m = await admin.mergeUsers('lid1', 'phone1');
    expect(m.record).toMatchObject({ user_id: 'phone1', name: 'Budi', flags: { vip: true } });
    expect((await http(s.url, 'GET', '/v1/admin/users/lid1', A)).status).toBe(404);
    expect((await http(s.url, 'POST', '/v1/admin/merge', { ...A, json: { from: 'lid1', into: 'phone1' } })).status).toBe(404);
    // Nobody has been idle for a year; the daemon has no users.inactiveAfter, so the body must name one.
    expect((await http(s.url, 'POST', '/v1/admin/expire', { ...A, json: { dryRun: true } })).status).toBe(400);
    const dry = await admin.expireUsers({ inactiveAfter: '1y' }, { dryRun: true });
    expect(dry).toMatchObject({ dryRun: true, users: [], expired: 0 });
  });
});
