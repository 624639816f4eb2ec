import type { UIMessage } from 'ai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createChatmemChats, loadChat, saveChat } from '../../src/adapters/ai-sdk.js';
import { startApp, type TestServer } from '../server/helpers.js';

const user = (id: string, text: string): UIMessage => ({ id, role: 'user', parts: [{ type: 'text', text }] });
const bot = (id: string, text: string): UIMessage => ({ id, role: 'assistant', parts: [{ type: 'step-start' }, { type: 'text', text }], metadata: { model: 'm1' } });

describe('AI SDK adapter against a real daemon', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startApp('sqlite');
  });
  afterAll(async () => {
    await s.close();
  });

  it('saves a growing list without duplicating and loads it back with parts and metadata', async () => {
    const chats = createChatmemChats({ baseUrl: s.url });
    expect(await chats.loadChat('chat-1')).toEqual([]);
    const first = [user('u1', 'halo'), bot('a1', 'hai, ada yang bisa dibantu?')];
    await chats.saveChat({ chatId: 'chat-1', messages: first });
    await chats.saveChat({ chatId: 'chat-1', messages: first });
    const second = [...first, user('u2', 'modem mati'), bot('a2', 'coba restart')];
    await chats.saveChat({ chatId: 'chat-1', messages: second });
    expect(await chats.loadChat('chat-1')).toEqual(second);
    const record = await s.ctx.store.get('chat-1');
    expect(record?.history.map((e) => [e.role, e.text])).toEqual([
      ['user', 'halo'],
      ['assistant', 'hai, ada yang bisa dibantu?'],
      ['user', 'modem mati'],
      ['assistant', 'coba restart'],
    ]);
  });

  it('never re-appends messages that fell past the history cap', async () => {
    const chats = createChatmemChats({ baseUrl: s.url });
    const long = Array.from({ length: 60 }, (_, i) => (i % 2 ? bot(`b${i}`, `t${i}`) : user(`u${i}`, `t${i}`)));
    await chats.saveChat({ chatId: 'chat-long', messages: long.slice(0, 55) });
    await chats.saveChat({ chatId: 'chat-long', messages: long });
    const loaded = await chats.loadChat('chat-long');
    expect(loaded).toHaveLength(50);
    expect(loaded.map((m) => m.id)).toEqual(long.slice(10).map((m) => m.id));
  });

  it('loads turns the seed bot wrote as text messages with stable ids', async () => {
    await s.ctx.store.appendHistory('chat-seed', { role: 'user', text: 'halo' });
    const loaded = await createChatmemChats({ baseUrl: s.url }).loadChat('chat-seed');
    expect(loaded).toEqual([{ id: expect.any(String), role: 'user', parts: [{ type: 'text', text: 'halo' }] }]);
    const again = await createChatmemChats({ baseUrl: s.url }).loadChat('chat-seed');
    expect(again[0]?.id).toBe(loaded[0]?.id);
  });

  it('loadChat and saveChat use CHATMEM_URL', async () => {
    process.env.CHATMEM_URL = s.url;
    try {
      await saveChat({ chatId: 'chat-env', messages: [user('e1', 'lewat env')] });
      expect((await loadChat('chat-env')).map((m) => m.id)).toEqual(['e1']);
    } finally {
      delete process.env.CHATMEM_URL;
    }
  });
});
