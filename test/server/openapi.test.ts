import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ChatmemClient } from '../../src/client.js';
import { RemoteAdmin } from '../../src/admin/remote.js';
import { openContext, type Context } from '../../src/context.js';
import { buildApp } from '../../src/server/app.js';
import { documented, registeredRoutes } from '../../src/server/openapi.js';
import { ADMIN_API } from '../../src/admin/api.js';
import { DATA_API } from '../../src/server/routes/data.js';
import type { ApiRoute } from '../../src/http-api.js';
import { ADMIN_TOKEN, http, tempConfig } from './helpers.js';
import type { FastifyInstance } from 'fastify';

const key = (method: string, url: string) => `${method} ${url}`;
const pattern = (path: string) => new RegExp(`^${path.replace(/:[A-Za-z_]+/g, '[^/?]+')}(\\?.*)?$`);

describe('OpenAPI document', () => {
  let app: FastifyInstance;
  let ctx: Context;
  let url: string;
  let cleanup: () => Promise<void>;
  /** The routes the document is generated from: every registered route that carries its table row. */
  let ROUTES: ApiRoute[];
  beforeAll(async () => {
    const t = await tempConfig('sqlite');
    cleanup = t.cleanup;
    ctx = await openContext(t.config, { role: 'daemon' });
    app = await buildApp({ ctx, adminToken: ADMIN_TOKEN });
    await app.listen({ host: '127.0.0.1', port: 0 });
    const a = app.server.address();
    url = `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`;
    ROUTES = documented(registeredRoutes.get(app) ?? []);
  });
  afterAll(async () => {
    await app.close();
    await ctx.close();
    await cleanup();
  });

  it('documents exactly the routes the app registers', () => {
    const registered = registeredRoutes.get(app) ?? [];
    const served = new Set(registered.map((r) => key(r.method, r.url)));
    const docs = new Set(ROUTES.map((r) => key(r.method, r.path)));
    expect(served.size).toBeGreaterThan(30);
    // A route registered without its table row has no schema: it would be served undocumented and unchecked.
    expect(registered.filter((r) => !r.api).map((r) => key(r.method, r.url)), 'registered without a schema').toEqual([]);
    expect([...served].filter((k) => !docs.has(k)), 'served but not documented').toEqual([]);
    expect([...docs].filter((k) => !served.has(k)), 'documented but not served').toEqual([]);
    // Every row of the admin and data tables is served.
    const tables = [...Object.values(ADMIN_API), ...Object.values(DATA_API)] as ApiRoute[];
    expect(tables.map((r) => key(r.method, r.path)).filter((k) => !served.has(k)), 'in a table but not served').toEqual([]);
  });

  it('serves an OpenAPI 3.1 document with request and answer schemas and the error shape', async () => {
    const res = await http<{ openapi: string; paths: Record<string, Record<string, { responses: Record<string, unknown>; requestBody?: unknown; security?: unknown }>> }>(url, 'GET', '/openapi.json');
    expect(res.status).toBe(200);
    expect(res.body.openapi).toBe('3.1.0');
    let operations = 0;
    for (const r of ROUTES) {
      const op = res.body.paths[r.path.replace(/:([A-Za-z_]+)/g, '{$1}')]?.[r.method.toLowerCase()];
      expect(op, key(r.method, r.path)).toBeDefined();
      expect(op?.responses.default).toEqual({ description: 'an error', content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } });
      expect(Boolean(op?.requestBody)).toBe(Boolean(r.body));
      expect(Boolean(op?.security)).toBe(r.auth !== 'none');
      operations++;
    }
    expect(operations).toBe(ROUTES.length);
    const append = res.body.paths['/v1/users/{id}/history']?.post as { requestBody: { content: { 'application/json': { schema: { anyOf: unknown[] } } } } };
    expect(append.requestBody.content['application/json'].schema.anyOf).toHaveLength(2);
  });

  it('serves /docs as a local page with no script', async () => {
    const res = await http(url, 'GET', '/docs');
    expect(res.status).toBe(200);
    expect(res.headers.get('content-security-policy')).toContain("default-src 'none'");
    expect(res.text).not.toMatch(/<script|https?:\/\/(?!json-schema)/);
    for (const r of ROUTES) expect(res.text).toContain(`${r.method} ${r.path}`);
  });

  it('every method of the typed clients calls a documented route', async () => {
    const seen: string[] = [];
    const recording: typeof fetch = (input, init) => {
      seen.push(key(init?.method ?? 'GET', new URL(String(input)).pathname + new URL(String(input)).search));
      return fetch(input, init);
    };
    const bot = new ChatmemClient({ baseUrl: url, fetch: recording });
    const admin = new RemoteAdmin({ baseUrl: url, token: ADMIN_TOKEN, storeUrl: 'x', fetch: recording });
    const botCalls: Record<string, () => Promise<unknown>> = {
      getUser: () => bot.getUser('u'),
      putUser: () => bot.putUser('u', {}),
      patchUser: () => bot.patchUser('u', {}),
      appendHistory: () => bot.appendHistory('u', { role: 'user', text: 't' }),
      appendHistoryMany: () => bot.appendHistoryMany('u', [{ role: 'user', text: 't' }]),
      ensureUser: () => bot.ensureUser('u'),
      getFlag: () => bot.getFlag('u', 'k'),
      getSlot: () => bot.getSlot('u', 'k'),
      refreshSessionToken: () => bot.refreshSessionToken('u'),
      addContext: () => bot.addContext('u', { text: 'c' }),
      truncateHistory: () => bot.truncateHistory('u', 1),
      setFlag: () => bot.setFlag('u', 'k', 1),
      clearFlag: () => bot.clearFlag('u', 'k'),
      setSlot: () => bot.setSlot('u', 'k', 1),
      clearSlot: () => bot.clearSlot('u', 'k'),
      fillSlots: () => bot.fillSlots('u', { a: 1 }),
      listUsers: () => bot.listUsers(),
      search: () => bot.search('x'),
      stats: () => bot.stats(),
    };
    const adminCalls: Record<string, () => Promise<unknown>> = {
      stats: () => admin.stats(),
      listUsers: () => admin.listUsers(),
      searchUsers: () => admin.searchUsers('x'),
      getUser: () => admin.getUser('u'),
      createBackup: () => admin.createBackup(),
      listBackups: () => admin.listBackups(),
      inspectBackup: () => admin.inspectBackup('memory_backup_20250101_000000'),
      verifyBackups: async () => {
        await admin.verifyBackups();
        return admin.verifyBackups('memory_backup_20250101_000000');
      },
      diff: () => admin.diff('memory_backup_20250101_000000'),
      restore: () => admin.restore('memory_backup_20250101_000000', { dryRun: true }),
      prune: () => admin.prune({ last: 100 }, { dryRun: true }),
      importFile: () => admin.importFile('/nonexistent/memory.json'),
      readAudit: () => admin.readAudit(),
      deleteUsers: () => admin.deleteUsers(['u']),
      clearAll: () => admin.clearAll(),
      whoami: () => admin.whoami(),
      forgetUsers: () => admin.forgetUsers(['u']),
      mergeUsers: () => admin.mergeUsers('a', 'b'),
      expireUsers: () => admin.expireUsers({ inactiveAfter: '180d' }, { dryRun: true }),
    };
    const methodsOf = (proto: object) => Object.getOwnPropertyNames(proto).filter((m) => m !== 'constructor').sort();
    // A new client method without a line here fails: it must be shown to reach a documented route.
    expect(Object.keys(botCalls).sort()).toEqual(methodsOf(ChatmemClient.prototype));
    expect(Object.keys(adminCalls).sort()).toEqual(methodsOf(RemoteAdmin.prototype));
    for (const [name, run] of [...Object.entries(botCalls), ...Object.entries(adminCalls)]) {
      const before = seen.length;
      await run().catch(() => undefined);
      expect(seen.length, `${name} made no request`).toBeGreaterThan(before);
      for (const call of seen.slice(before)) {
        const [method, path] = call.split(' ') as [string, string];
        const route = ROUTES.find((r) => r.method === method && pattern(r.path).test(path));
        expect(route, `${name}: ${call} is not a documented route`).toBeDefined();
      }
    }
  });
});
