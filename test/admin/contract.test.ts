import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_API, type AdminAction } from '../../src/admin/api.js';
import { LocalAdmin } from '../../src/admin/local.js';
import { RemoteAdmin } from '../../src/admin/remote.js';
import type { Admin } from '../../src/admin/types.js';
import type { ApiRoute } from '../../src/http-api.js';
import { ADMIN_TOKEN, startApp, type TestServer } from '../server/helpers.js';

const pattern = (p: string) => new RegExp(`^${p.replace(/:[A-Za-z_]+/g, '[^/?]+')}$`);

/** The row a request was sent for, by method and path. */
function rowOf(method: string, pathname: string): [AdminAction, ApiRoute] | undefined {
  return (Object.entries(ADMIN_API) as [AdminAction, ApiRoute][]).find(([, r]) => r.method === method && pattern(r.path).test(pathname));
}

describe('one admin contract: the remote admin sends what the table accepts, and answers as the local one', () => {
  let s: TestServer;
  const sent: { action: AdminAction | null; query: Record<string, string | string[]>; body: unknown; status: number }[] = [];
  let remote: RemoteAdmin;
  let local: LocalAdmin;
  beforeAll(async () => {
    s = await startApp('sqlite');
    const recording: typeof fetch = async (input, init) => {
      const url = new URL(String(input));
      const query: Record<string, string | string[]> = {};
      for (const k of new Set(url.searchParams.keys())) {
        const all = url.searchParams.getAll(k);
        query[k] = all.length === 1 ? (all[0] ?? '') : all;
      }
      const res = await fetch(input, init);
      sent.push({ action: rowOf(init?.method ?? 'GET', url.pathname)?.[0] ?? null, query, body: init?.body === undefined ? undefined : JSON.parse(String(init.body)), status: res.status });
      return res;
    };
    remote = new RemoteAdmin({ baseUrl: s.url, token: ADMIN_TOKEN, storeUrl: s.ctx.store.url, fetch: recording });
    local = new LocalAdmin(s.ctx.ops);
    for (const id of ['c1', 'c2', 'c3']) await s.ctx.store.put(id, { name: id.toUpperCase() });
  });
  afterAll(async () => {
    await s.close();
  });

  it('every request of every RemoteAdmin method passes its row\'s schemas, and none is refused as invalid', async () => {
    const seed = path.join(s.dir, 'seed.json');
    await fsp.writeFile(seed, JSON.stringify({ imp: { name: 'Imported' } }));
    const backup = await remote.createBackup({ gzip: false, reason: 'manual' });
    const calls: Record<keyof Admin, () => Promise<unknown>> = {
      where: async () => remote.where,
      storeUrl: async () => remote.storeUrl,
      stats: () => remote.stats(),
      listUsers: () => remote.listUsers({ cursor: 'c1', limit: 2 }),
      searchUsers: () => remote.searchUsers('C2', { limit: 5 }),
      getUser: () => remote.getUser('c1'),
      whoami: () => remote.whoami(),
      createBackup: () => remote.createBackup({ gzip: true }),
      listBackups: () => remote.listBackups(),
      inspectBackup: () => remote.inspectBackup(backup.id, { user: 'c1', sample: 3 }),
      verifyBackups: async () => [await remote.verifyBackups(), await remote.verifyBackups(backup.id)],
      diff: () => remote.diff(backup.id, 'current', { users: ['c1', 'c2'] }),
      restore: () => remote.restore(backup.id, { users: ['c1'], mode: 'merge', dryRun: true, wholeStore: false, allowUnverified: false }),
      prune: () => remote.prune({ last: 100 }, { dryRun: true, only: ['full'] }),
      importFile: () => remote.importFile(seed),
      readAudit: () => remote.readAudit({ since: new Date(0), user: 'c1', action: 'backup', limit: 10 }),
      expireUsers: () => remote.expireUsers({ inactiveAfter: '180d', mode: 'delete' }, { dryRun: true }),
      mergeUsers: () => remote.mergeUsers('c2', 'c3'),
      forgetUsers: () => remote.forgetUsers(['imp']),
      deleteUsers: () => remote.deleteUsers(['c3'], { fullBackup: false }),
      clearAll: () => remote.clearAll(),
    };
    for (const [name, run] of Object.entries(calls)) await expect(run(), name).resolves.toBeDefined();
    const api = sent.filter((r) => r.action !== null);
    expect(api).toHaveLength(sent.length);
    // Every row the remote admin speaks was used, with a body or query it declares; the server took each one.
    const used = new Set(api.map((r) => r.action));
    const unused = Object.keys(ADMIN_API).filter((a) => !used.has(a as AdminAction));
    // DELETE /v1/users/:id is the page's and curl's single delete; the remote admin deletes through /v1/admin/delete.
    expect(unused).toEqual(['deleteUser']);
    for (const r of api) {
      const row: ApiRoute = ADMIN_API[r.action as AdminAction];
      expect(r.status, `${r.action}`).toBeLessThan(400);
      if (row.query) expect(row.query.safeParse(r.query).success, `${r.action} query`).toBe(true);
      else expect(r.query, `${r.action} sends no query`).toEqual({});
      if (row.body) expect(row.body.safeParse(r.body ?? {}).success, `${r.action} body`).toBe(true);
      else expect(r.body, `${r.action} sends no body`).toBeUndefined();
    }
  });

  it('answers reads as the local admin does', async () => {
    // The first test ended with a clear.
    for (const id of ['r1', 'r2']) await s.ctx.store.appendHistory(id, { role: 'user', text: `hello ${id}` });
    expect((await local.listUsers()).items.map((u) => u.user_id)).toEqual(['r1', 'r2']);
    expect(await remote.getUser('r1')).toEqual(await local.getUser('r1'));
    expect(await remote.searchUsers('hello r2')).toEqual(await local.searchUsers('hello r2'));
    expect(await remote.stats()).toEqual(await local.stats());
    expect(await remote.listUsers({ limit: 10 })).toEqual(await local.listUsers({ limit: 10 }));
    expect(await remote.getUser('nobody')).toBeNull();
    expect(await local.getUser('nobody')).toBeNull();
    // The daemon acts as the caller: the built-in token is "admin", seen from loopback.
    expect(await remote.whoami()).toEqual({ name: 'admin', osUser: null, remote: '127.0.0.1' });
    expect((await local.whoami()).remote).toBeNull();
  });
});
