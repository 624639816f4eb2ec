import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MemoryRecord } from '../../src/record.js';
import { http, startApp, type TestServer } from './helpers.js';

describe('POST /v1/users/:id/history with Prefer: return=minimal', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startApp('sqlite');
  });
  afterAll(async () => {
    await s.close();
  });

  it('answers 201 with the user id and the new entry id, and the entry is stored', async () => {
    const id = '628555000111';
    const r = await http<{ user_id: string; id: string }>(s.url, 'POST', `/v1/users/${id}/history`, {
      json: { role: 'user', text: 'halo kak 🙏' },
      headers: { prefer: 'return=minimal' },
    });
    expect(r.status).toBe(201);
    expect(r.headers.get('preference-applied')).toBe('return=minimal');
    expect(Object.keys(r.body).sort()).toEqual(['id', 'user_id']);
    expect(r.body.user_id).toBe(id);
    const stored = await http<MemoryRecord>(s.url, 'GET', `/v1/users/${id}`);
    expect(stored.body.history.at(-1)).toMatchObject({ id: r.body.id, role: 'user', text: 'halo kak 🙏' });
  });

  it('a retried entry answers the id it was sent with; a batch answers its last entry', async () => {
    const id = '628555000222';
    const first = await http<{ id: string }>(s.url, 'POST', `/v1/users/${id}/history`, { json: { role: 'user', text: 'a', id: 'turn-1' }, headers: { prefer: 'return=minimal' } });
    await http(s.url, 'POST', `/v1/users/${id}/history`, { json: { role: 'bot', text: 'b' } });
    const retry = await http<{ id: string }>(s.url, 'POST', `/v1/users/${id}/history`, { json: { role: 'user', text: 'a', id: 'turn-1' }, headers: { prefer: 'handling=lenient, return=minimal' } });
    expect(first.body.id).toBe('turn-1');
    expect(retry.body.id).toBe('turn-1');
    const batch = await http<{ id: string }>(s.url, 'POST', `/v1/users/${id}/history`, { json: [{ role: 'user', text: 'c' }, { role: 'bot', text: 'd' }], headers: { prefer: 'return=minimal' } });
    const stored = await http<MemoryRecord>(s.url, 'GET', `/v1/users/${id}`);
    expect(stored.body.history.map((h) => h.text)).toEqual(['a', 'b', 'c', 'd']);
    expect(batch.body.id).toBe(stored.body.history.at(-1)?.id);
  });

  it('without the header the whole record comes back, as before', async () => {
    const r = await http<MemoryRecord>(s.url, 'POST', '/v1/users/628555000333/history', { json: { role: 'user', text: 'x' }, headers: { prefer: 'return=representation' } });
    expect(r.status).toBe(201);
    expect(r.headers.get('preference-applied')).toBeNull();
    expect(r.body.history).toHaveLength(1);
  });
});
