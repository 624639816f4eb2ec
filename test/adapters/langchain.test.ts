import { AIMessage, HumanMessage, SystemMessage, ToolMessage } from '@langchain/core/messages';
import { Annotation, StateGraph, type LangGraphRunnableConfig } from '@langchain/langgraph';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ChatmemMessageHistory, ChatmemStore } from '../../src/adapters/langchain.js';
import { ChatmemClient } from '../../src/client.js';
import { startApp, type TestServer } from '../server/helpers.js';

describe('LangChain and LangGraph adapters against a real daemon', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startApp('sqlite');
  });
  afterAll(async () => {
    await s.close();
  });

  it('round-trips human, AI with tool calls, tool and system messages across instances', async () => {
    const writer = new ChatmemMessageHistory({ baseUrl: s.url, userId: '6281111' });
    await writer.addMessage(new SystemMessage({ content: 'Kamu asisten servis.', id: 'sys-1' }));
    await writer.addMessages([
      new HumanMessage({ content: 'modem saya mati', id: 'wamid.1' }),
      new AIMessage({ content: '', id: 'ai-1', tool_calls: [{ id: 'call_1', name: 'cek_status', args: { serial: 'F57A' }, type: 'tool_call' }] }),
      new ToolMessage({ content: '{"status":"offline"}', tool_call_id: 'call_1', id: 'tool-1' }),
      new AIMessage({ content: [{ type: 'text', text: 'Modem offline, ' }, { type: 'text', text: 'coba restart.' }], id: 'ai-2' }),
    ]);
    const reader = new ChatmemMessageHistory({ client: new ChatmemClient({ baseUrl: s.url }), userId: '6281111' });
    const got = await reader.getMessages();
    expect(got.map((m) => m.getType())).toEqual(['system', 'human', 'ai', 'tool', 'ai']);
    expect(got.map((m) => m.id)).toEqual(['sys-1', 'wamid.1', 'ai-1', 'tool-1', 'ai-2']);
    const call = got[2] as AIMessage;
    expect(call.tool_calls).toEqual([{ id: 'call_1', name: 'cek_status', args: { serial: 'F57A' }, type: 'tool_call' }]);
    expect((got[3] as ToolMessage).tool_call_id).toBe('call_1');
    expect(got[4]?.content).toEqual([{ type: 'text', text: 'Modem offline, ' }, { type: 'text', text: 'coba restart.' }]);
    // The seed's tools and the admin page see plain roles and text.
    const record = await s.ctx.store.get('6281111');
    expect(record?.history.map((e) => [e.role, e.text])).toEqual([
      ['system', 'Kamu asisten servis.'],
      ['user', 'modem saya mati'],
      ['assistant', ''],
      ['tool', '{"status":"offline"}'],
      ['assistant', 'Modem offline, coba restart.'],
    ]);
    expect(record?.last_answer).toBe('modem saya mati');
  });

  it('addMessages is one request, and re-adding messages with known ids adds nothing', async () => {
    let requests = 0;
    const counting: typeof fetch = (input, init) => {
      requests++;
      return fetch(input, init);
    };
    const h = new ChatmemMessageHistory({ client: new ChatmemClient({ baseUrl: s.url, fetch: counting }), userId: '6282222' });
    const msgs = [new HumanMessage({ content: 'a', id: 'm1' }), new AIMessage({ content: 'b', id: 'm2' })];
    const before = (await s.ctx.store.stats()).messages;
    await h.addMessages(msgs);
    expect(requests).toBe(1);
    await h.addMessages(msgs);
    expect((await h.getMessages()).map((m) => m.content)).toEqual(['a', 'b']);
    expect((await s.ctx.store.stats()).messages).toBe(before + 2);
  });

  it('reads turns the seed bot wrote (no LangChain form) as human and AI messages', async () => {
    await s.ctx.store.appendHistory('6283333', { role: 'user', text: 'halo' });
    await s.ctx.store.appendHistory('6283333', { role: 'assistant', text: 'hai' });
    const got = await new ChatmemMessageHistory({ baseUrl: s.url, userId: '6283333' }).getMessages();
    expect(got.map((m) => [m.getType(), m.content])).toEqual([
      ['human', 'halo'],
      ['ai', 'hai'],
    ]);
  });

  it('clear empties the history through the guarded path: the turns are in a backup first', async () => {
    const h = new ChatmemMessageHistory({ baseUrl: s.url, userId: '6284444' });
    await h.addMessages([new HumanMessage('satu'), new AIMessage('dua')]);
    await s.ctx.store.setFlag('6284444', 'keep', true);
    const before = new Set((await s.ctx.ops.listBackups()).map((b) => b.id));
    await h.clear();
    expect(await h.getMessages()).toEqual([]);
    expect((await s.ctx.store.get('6284444'))?.flags).toEqual({ keep: true });
    const added = (await s.ctx.ops.listBackups()).filter((b) => !before.has(b.id));
    expect(added).toHaveLength(1);
    const inBackup = await s.ctx.ops.inspectBackup(added[0]!.id, { user: '6284444' });
    expect(JSON.stringify(inBackup)).toContain('satu');
  });

  it('ChatmemStore: get, put, delete, search and listNamespaces over slots and flags', async () => {
    const store = new ChatmemStore({ baseUrl: s.url });
    await store.put(['6285555', 'slots'], 'alamat', { kota: 'Bandung', rt: '03' });
    await store.put(['6285555', 'flags'], 'intent', { name: 'modem_mati' });
    await s.ctx.store.setSlot('6285555', 'plain', 'x');
    expect((await store.get(['6285555', 'slots'], 'alamat'))?.value).toEqual({ kota: 'Bandung', rt: '03' });
    expect((await store.get(['6285555', 'slots'], 'plain'))?.value).toEqual({ value: 'x' });
    expect(await store.get(['6285555', 'slots'], 'missing')).toBeNull();
    expect(await store.get(['nobody', 'slots'], 'alamat')).toBeNull();
    const all = await store.search(['6285555']);
    expect(all.map((i) => [i.namespace[1], i.key]).sort()).toEqual([
      ['flags', 'intent'],
      ['slots', 'alamat'],
      ['slots', 'plain'],
    ]);
    expect((await store.search(['6285555', 'slots'], { filter: { kota: 'Bandung' } })).map((i) => i.key)).toEqual(['alamat']);
    await store.delete(['6285555', 'slots'], 'alamat');
    expect(await store.get(['6285555', 'slots'], 'alamat')).toBeNull();
    expect((await s.ctx.store.get('6285555'))?.slots).toEqual({ plain: 'x' });
    const spaces = await store.listNamespaces({ prefix: ['6285555'] });
    expect(spaces).toEqual([
      ['6285555', 'flags'],
      ['6285555', 'slots'],
    ]);
    await expect(store.put(['6285555', 'other'], 'k', { a: 1 })).rejects.toThrow(/namespaces/);
    await expect(store.search(['6285555'], { query: 'semantic' })).rejects.toThrow(/semantic/);
  });

  it('ChatmemStore serves a compiled LangGraph graph as its long-term memory', async () => {
    const State = Annotation.Root({ userId: Annotation<string>, reply: Annotation<string> });
    const remember = async (state: typeof State.State, config: LangGraphRunnableConfig) => {
      const store = config.store!;
      const seen = await store.get([state.userId, 'slots'], 'visits');
      const visits = ((seen?.value.count as number | undefined) ?? 0) + 1;
      await store.put([state.userId, 'slots'], 'visits', { count: visits });
      return { reply: `kunjungan ke-${visits}` };
    };
    const graph = new StateGraph(State).addNode('remember', remember).addEdge('__start__', 'remember').compile({ store: new ChatmemStore({ baseUrl: s.url }) });
    expect((await graph.invoke({ userId: '6286666' })).reply).toBe('kunjungan ke-1');
    expect((await graph.invoke({ userId: '6286666' })).reply).toBe('kunjungan ke-2');
    expect((await s.ctx.store.get('6286666'))?.slots).toEqual({ visits: { count: 2 } });
  });
});
