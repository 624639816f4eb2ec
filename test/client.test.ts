import { promises as fsp } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ChatmemClient, RemoteError } from '../src/client.js';
import { RemoteAdmin } from '../src/admin/remote.js';
import { ChatmemError } from '../src/errors.js';
import { LocalAdmin } from '../src/admin/local.js';
import { ADMIN_TOKEN, API_TOKEN, startApp, type TestServer } from './server/helpers.js';

describe('ChatmemClient', () => {
  let s: TestServer;
  let bot: ChatmemClient;
  beforeAll(async () => {
    s = await startApp('sqlite', { apiToken: API_TOKEN });
    bot = new ChatmemClient({ baseUrl: s.url, apiToken: API_TOKEN });
  });
  afterAll(async () => {
    await s.close();
  });

  it('speaks every data call', async () => {
    expect(await bot.getUser('628111')).toBeNull();
    let r = await bot.putUser('628111', { name: 'Budi', product: 'Modem Z' });
    expect(r).toMatchObject({ user_id: '628111', name: 'Budi' });
    r = await bot.patchUser('628111', { address: 'Bandung', slots: { step: 1 } });
    expect(r).toMatchObject({ address: 'Bandung', slots: { step: 1 } });
    r = await bot.appendHistory('628111', { role: 'user', text: 'lampu merah berkedip' });
    expect(r.last_answer).toBe('lampu merah berkedip');
    r = await bot.setFlag('628111', 'escalated', true);
    expect(r.flags).toEqual({ escalated: true });
    r = await bot.clearFlag('628111', 'escalated');
    expect(r.flags).toEqual({});
    r = await bot.setSlot('628111', 'serial', 'SN-9');
    expect(r.slots).toEqual({ step: 1, serial: 'SN-9' });
    await bot.appendHistory('a/b?c#d', { role: 'bot', text: 'odd id' });
    expect((await bot.getUser('a/b?c#d'))?.history).toHaveLength(1);

    const page = await bot.listUsers({ limit: 1 });
    expect(page.items).toHaveLength(1);
    expect(page.next).not.toBeNull();
    const rest = await bot.listUsers({ cursor: page.next, limit: 10 });
    expect([...page.items, ...rest.items].map((u) => u.user_id).sort()).toEqual(['628111', 'a/b?c#d']);
    expect((await bot.search('merah')).map((u) => u.user_id)).toEqual(['628111']);
    expect(await bot.stats()).toMatchObject({ users: 2, messages: 2 });
  });

  it('speaks the calls a seed-style bot needs: batches with ids, ensure, one flag or slot, context, truncate', async () => {
    const made = await bot.ensureUser('62999');
    expect(made.session_token).toMatch(/^[0-9a-f]{16}$/);
    expect((await bot.ensureUser('62999')).session_token).toBe(made.session_token);
    let r = await bot.appendHistoryMany('62999', [
      { role: 'user', text: 'a', id: 'm1' },
      { role: 'bot', text: 'b', id: 'm2' },
    ]);
    r = await bot.appendHistoryMany('62999', [
      { role: 'user', text: 'a', id: 'm1' },
      { role: 'bot', text: 'b', id: 'm2' },
      { role: 'user', text: 'c', id: 'm3' },
    ]);
    expect(r.history.map((h) => h.text)).toEqual(['a', 'b', 'c']);
    await bot.setFlag('62999', 'f', 0);
    expect(await bot.getFlag('62999', 'f')).toEqual({ key: 'f', found: true, value: 0 });
    expect(await bot.getFlag('62999', 'nope')).toEqual({ key: 'nope', found: false, value: null });
    await expect(bot.getFlag('nobody', 'f')).rejects.toMatchObject({ code: 'E_UNKNOWN_USER', status: 404 });
    r = await bot.fillSlots('62999', { x: 1, y: null });
    expect(await bot.getSlot('62999', 'y')).toEqual({ key: 'y', found: true, value: null });
    r = await bot.clearSlot('62999', 'x');
    expect(r.slots).toEqual({ y: null });
    const token = await bot.refreshSessionToken('62999');
    expect(token).not.toBe(made.session_token);
    r = await bot.addContext('62999', { text: 'pakai EAC', product: 'Electronic Air Cleaner', serials: ['F57A'] });
    expect([r.summary_context, r.product, r.serial]).toEqual([['pakai EAC'], 'Electronic Air Cleaner', 'F57A']);
    const t = await bot.truncateHistory('62999', 1);
    expect(t.record.history.map((h) => h.text)).toEqual(['c']);
    expect(t.dropped).toBe(2);
    expect(t.backup).toMatch(/^memory_backup_/);
    const listed = await s.ctx.ops.listBackups();
    expect(listed.find((b) => b.id === t.backup)?.reason).toBe('reset');
    const projected = (await (await fetch(`${s.url}/v1/users/62999?fields=name,last_answer`, { headers: { authorization: `Bearer ${API_TOKEN}` } })).json()) as unknown;
    expect(projected).toEqual({ name: null, last_answer: 'c' });
  });

  it('turns server errors into RemoteError with code and status', async () => {
    const err = await bot.appendHistory('x', { role: '', text: 'no role' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RemoteError);
    expect(err).toBeInstanceOf(ChatmemError);
    expect(err).toMatchObject({ code: 'E_RECORD', status: 400 });
    await expect(bot.clearFlag('nobody', 'x')).rejects.toMatchObject({ code: 'E_UNKNOWN_USER', status: 404 });
    const anonymous = new ChatmemClient({ baseUrl: s.url });
    await expect(anonymous.stats()).rejects.toMatchObject({ code: 'E_AUTH', status: 401 });
  });

  it('reports an unreachable daemon and a timeout', async () => {
    const sockets: Socket[] = [];
    // Accepts and never answers.
    const silent: Server = createServer((socket) => void sockets.push(socket));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const port = (silent.address() as { port: number }).port;
    try {
      const slow = new ChatmemClient({ baseUrl: `http://127.0.0.1:${port}`, timeoutMs: 200 });
      await expect(slow.stats()).rejects.toMatchObject({ code: 'E_TIMEOUT', status: 0 });
    } finally {
      const closed = new Promise((r) => silent.close(r));
      for (const socket of sockets) socket.destroy();
      await closed;
    }
    const gone = new ChatmemClient({ baseUrl: `http://127.0.0.1:${port}` });
    await expect(gone.stats()).rejects.toMatchObject({ code: 'E_UNREACHABLE', status: 0 });
  });
});

describe('RemoteAdmin', () => {
  let s: TestServer;
  let admin: RemoteAdmin;
  beforeAll(async () => {
    s = await startApp('json');
    admin = new RemoteAdmin({ baseUrl: s.url, token: ADMIN_TOKEN, storeUrl: s.config.store.display });
    const bot = new ChatmemClient({ baseUrl: s.url });
    for (const id of ['u1', 'u2', 'u3']) await bot.appendHistory(id, { role: 'user', text: `hello from ${id}` });
  });
  afterAll(async () => {
    await s.close();
  });

  it('answers like LocalAdmin for reads', async () => {
    const local = new LocalAdmin(s.ctx.ops);
    expect(admin.where).toBe(s.url);
    expect(await admin.stats()).toEqual(await local.stats());
    expect(await admin.listUsers({ limit: 2 })).toEqual(await local.listUsers({ limit: 2 }));
    expect(await admin.searchUsers('u2')).toEqual(await local.searchUsers('u2'));
    expect(await admin.getUser('u1')).toEqual(await local.getUser('u1'));
    expect(await admin.getUser('ghost')).toBeNull();
  });

  it('runs every operator action over HTTP', async () => {
    const backup = await admin.createBackup();
    expect(backup.id).toMatch(/^memory_backup_/);
    expect(backup.manifest.users).toBe(3);
    const list = await admin.listBackups();
    expect(list.map((b) => b.id)).toContain(backup.id);
    expect((await admin.inspectBackup(backup.id, { user: 'u2' })).record?.user_id).toBe('u2');
    expect((await admin.inspectBackup(backup.id)).users).toBe(3);
    expect(await admin.verifyBackups(backup.id)).toMatchObject([{ id: backup.id, ok: true }]);
    expect((await admin.verifyBackups()).every((v) => v.ok)).toBe(true);

    const del = await admin.deleteUsers(['u1']);
    expect(del).toMatchObject({ deleted: 1, userIds: ['u1'] });
    expect(JSON.parse(await fsp.readFile(del.backupFile, 'utf8'))).toHaveProperty('u1');
    expect(await admin.getUser('u1')).toBeNull();
    expect((await admin.diff(backup.id, 'current', { users: ['u1', 'u2'] })).removed).toEqual(['u1']);

    const cleared = await admin.clearAll();
    expect(cleared.deleted).toBe(2);
    const dry = await admin.restore(backup.id, { dryRun: true });
    expect(dry.dryRun).toBe(true);
    const restored = await admin.restore(backup.id, { users: ['u1'] });
    expect(restored.written).toBe(1);
    expect((await admin.getUser('u1'))?.history[0]?.text).toBe('hello from u1');

    const file = path.join(s.dir, 'import.json');
    await fsp.writeFile(file, JSON.stringify({ u9: { user_id: 'u9', name: 'Nine' } }));
    expect(await admin.importFile(file)).toEqual({ imported: 1, overwritten: 0, backup: null });

    const pruned = await admin.prune({ last: 1 }, { dryRun: true });
    expect(pruned.dryRun).toBe(true);
    expect(pruned.keep.length).toBeGreaterThanOrEqual(1);

    const audit = await admin.readAudit({ action: 'clear-all' });
    expect(audit.map((e) => e.outcome)).toEqual(['started', 'done']);
    expect(audit[1]?.actor).toEqual({ kind: 'api', name: 'admin', remote: '127.0.0.1' });
    expect(await admin.readAudit({ since: new Date(Date.now() + 60_000) })).toEqual([]);
  });

  it('sends relative import paths as absolute ones, and fails with the server code', async () => {
    let sent: unknown;
    const capture = (async (_url: string | URL | Request, init?: RequestInit) => {
      sent = JSON.parse(String(init?.body));
      return new Response(JSON.stringify({ imported: 0, overwritten: 0, backup: null }), { status: 200 });
    }) as typeof fetch;
    await new RemoteAdmin({ baseUrl: 'http://127.0.0.1:1', token: 't', storeUrl: 's', fetch: capture }).importFile('seed/memory.json');
    expect(sent).toEqual({ file: path.join(process.cwd(), 'seed/memory.json') });

    const wrong = new RemoteAdmin({ baseUrl: s.url, token: 'not-the-admin-token-000', storeUrl: '' });
    await expect(wrong.clearAll()).rejects.toMatchObject({ code: 'E_AUTH', status: 401 });
    await expect(admin.deleteUsers(['ghost'])).rejects.toMatchObject({ code: 'E_UNKNOWN_USER', status: 404 });
    await expect(admin.inspectBackup('memory_backup_19990101_000000')).rejects.toMatchObject({ code: 'E_BACKUP_NOT_FOUND', status: 404 });
  });
});
