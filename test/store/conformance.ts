import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Store } from '../../src/store/types.js';
import { compareIds, type MemoryRecord } from '../../src/record.js';
import type { StoreHarness } from '../helpers/stores.js';
import { FIXTURES, ROOT } from '../helpers/tmp.js';

export type { StoreHarness } from '../helpers/stores.js';

/** What a driver's own tests see of the conformance suite's store, run with its `beforeEach` and `afterEach`. */
export interface ConformanceContext {
  /** The store opened for the running test (closed after it). */
  store(): Store;
  /** Its harness (e.g. to reopen the store, or its URL). */
  harness(): StoreHarness;
}

export function loadFixture(): Record<string, MemoryRecord> {
  return JSON.parse(readFileSync(path.join(FIXTURES, 'memory.json'), 'utf8')) as Record<string, MemoryRecord>;
}

const ODD_IDS = ['628123456789', 'user "quoted"', 'with space', 'émoji 😀 user', 'محمد', 'a\\b', "o'neil", '%_like'];
const BAD_IDS: unknown[] = ['', 'x'.repeat(257), 'line\nbreak', 'tab\there', 'nul\u0000', 42, null];

/**
 * The conformance suite every driver must pass. `additionalTests` registers a driver's own tests in the
 * same describe, on the same fresh store per test.
 */
export function testStore(name: string, factory: () => Promise<StoreHarness>, options: { additionalTests?: (ctx: ConformanceContext) => void } = {}): void {
  describe(`store conformance: ${name}`, () => {
    let h: StoreHarness;
    let store: Store;

    beforeEach(async () => {
      h = await factory();
      store = await h.open();
    });
    afterEach(async () => {
      await store.close();
      await h.cleanup();
    });

    it('get of a missing user is null; put then get returns the record with unknown fields kept', async () => {
      expect(await store.get('nobody')).toBeNull();
      const input = {
        name: 'Budi',
        product: 'EAC',
        favourite_color: 'blue',
        nested_unknown: { deep: [1, 2, { x: null }] },
        history: [{ role: 'user', text: 'halo', ts: '2025-11-20T01:02:07Z', channel: 'wa', meta: { intent: 'greet' } }],
      };
      const saved = await store.put('6281', input);
      expect(saved.user_id).toBe('6281');
      expect(saved.favourite_color).toBe('blue');
      const got = await store.get('6281');
      expect(got).toEqual(saved);
      expect(got?.nested_unknown).toEqual({ deep: [1, 2, { x: null }] });
      expect(got?.history[0]?.channel).toBe('wa');
      expect(got?.summary_context).toEqual([]);
      expect(got?.created_at).toMatch(/Z$/);
    });

    it('holds what it was given as JSON holds it: later changes to the caller\'s objects do not reach the store, -0 reads as 0', async () => {
      const meta = { intent: 'greet', score: -0, tags: ['a'] };
      const flag = { step: 1, seen: [-0] };
      await store.appendHistory('m1', { role: 'user', text: 'halo', meta });
      await store.setFlag('m1', 'f', flag);
      meta.intent = 'changed';
      meta.tags.push('b');
      flag.step = 2;
      const got = await store.get('m1');
      expect(got?.history[0]?.meta).toEqual({ intent: 'greet', score: 0, tags: ['a'] });
      expect(Object.is((got?.history[0]?.meta as { score: number }).score, 0)).toBe(true);
      expect(got?.flags.f).toEqual({ step: 1, seen: [0] });
      expect(Object.is((got?.flags.f as { seen: number[] }).seen[0], 0)).toBe(true);
    });

    it('put replaces the record but keeps created_at', async () => {
      const first = await store.put('u1', { name: 'A', created_at: '2025-01-01T00:00:00Z' });
      const second = await store.put('u1', { product: 'P' });
      expect(second.name).toBeNull();
      expect(second.product).toBe('P');
      expect(second.created_at).toBe(first.created_at);
    });

    it('rejects invalid records with E_RECORD and writes nothing', async () => {
      await expect(store.put('u1', { name: 42 } as never)).rejects.toMatchObject({ code: 'E_RECORD' });
      await expect(store.put('u1', { user_id: 'other' })).rejects.toMatchObject({ code: 'E_RECORD' });
      await expect(store.put('u1', { history: [{ role: 'user' }] } as never)).rejects.toMatchObject({ code: 'E_RECORD' });
      await expect(store.patch('u1', { flags: 'nope' } as never)).rejects.toMatchObject({ code: 'E_RECORD' });
      await expect(store.appendHistory('u1', { role: 'user', text: 5 } as never)).rejects.toMatchObject({ code: 'E_RECORD' });
      expect(await store.get('u1')).toBeNull();
      expect(await store.count()).toBe(0);
    });

    it('accepts unusual but valid user ids and rejects bad ones on every method', async () => {
      for (const id of ODD_IDS) await store.appendHistory(id, { role: 'user', text: `hi ${id}` });
      for (const id of ODD_IDS) expect((await store.get(id))?.user_id).toBe(id);
      for (const bad of BAD_IDS) {
        const id = bad as string;
        await expect(store.get(id)).rejects.toMatchObject({ code: 'E_USER_ID' });
        await expect(store.put(id, {})).rejects.toMatchObject({ code: 'E_USER_ID' });
        await expect(store.appendHistory(id, { role: 'user', text: 'x' })).rejects.toMatchObject({ code: 'E_USER_ID' });
        await expect(store.delete([id])).rejects.toMatchObject({ code: 'E_USER_ID' });
      }
      expect(await store.count()).toBe(ODD_IDS.length);
    });

    it('patch merges top level and flags/slots key by key; null removes a key', async () => {
      await store.put('u', { name: 'A', flags: { a: 1, b: 2 }, slots: { company: 'X' } });
      const p = await store.patch('u', { address: 'Jl. 1', flags: { b: null, c: 3 }, slots: { phone: '1' } });
      expect(p.name).toBe('A');
      expect(p.address).toBe('Jl. 1');
      expect(p.flags).toEqual({ a: 1, c: 3 });
      expect(p.slots).toEqual({ company: 'X', phone: '1' });
      const created = await store.patch('new', { name: 'N' });
      expect(created.name).toBe('N');
      expect(created.history).toEqual([]);
      await expect(store.patch('u', { user_id: 'x' } as never)).rejects.toMatchObject({ code: 'E_RECORD' });
    });

    it('appendHistory caps history, sets last_answer for user messages and touches updated_at', async () => {
      await store.close();
      store = await h.open({ historyCap: 5 });
      await store.put('u', { updated_at: '2000-01-01T00:00:00Z', created_at: '2000-01-01T00:00:00Z' });
      for (let i = 0; i < 8; i++) await store.appendHistory('u', { role: i % 2 ? 'bot' : 'user', text: `m${i}` });
      const r = await store.get('u');
      expect(r?.history.map((e) => e.text)).toEqual(['m3', 'm4', 'm5', 'm6', 'm7']);
      expect(r?.last_answer).toBe('m6');
      expect(r?.updated_at).not.toBe('2000-01-01T00:00:00Z');
      expect(r?.history[0]?.ts).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/);
      const withMeta = await store.appendHistory('u', { role: 'bot', text: 'x', ts: '2025-01-01T00:00:00Z', meta: { intent: 'i' }, extra: true });
      expect(withMeta.history.at(-1)).toEqual({ role: 'bot', text: 'x', ts: '2025-01-01T00:00:00Z', meta: { intent: 'i' }, extra: true, id: expect.any(String) });
    });

    it('every appended entry gets a stable id; a repeated client id is a no-op, within a batch too', async () => {
      const a = await store.appendHistory('u', { role: 'user', text: 'one' });
      const id = a.history[0]?.id;
      expect(id).toMatch(/^[A-Za-z0-9_-]{12}$/);
      expect((await store.get('u'))?.history[0]?.id).toBe(id);
      const first = await store.appendHistory('u', { role: 'user', text: 'two', id: 'wamid.1' });
      const again = await store.appendHistory('u', { role: 'user', text: 'two (retried)', id: 'wamid.1' });
      expect(again.history.map((e) => e.text)).toEqual(['one', 'two']);
      expect(again.updated_at).toBe(first.updated_at);
      const batch = await store.appendHistoryMany('u', [
        { role: 'user', text: 'three', id: 'wamid.3' },
        { role: 'bot', text: 'dup of two', id: 'wamid.1' },
        { role: 'bot', text: 'four', id: 'wamid.4' },
        { role: 'bot', text: 'four again', id: 'wamid.4' },
      ]);
      expect(batch.history.map((e) => e.text)).toEqual(['one', 'two', 'three', 'four']);
      expect(batch.last_answer).toBe('three');
      await expect(store.appendHistoryMany('u', [])).rejects.toMatchObject({ code: 'E_RECORD' });
      // A bad entry anywhere in a batch refuses the whole batch.
      await expect(store.appendHistoryMany('u', [{ role: 'user', text: 'ok' }, { role: '', text: 'bad' }])).rejects.toMatchObject({ code: 'E_RECORD' });
      expect((await store.get('u'))?.history).toHaveLength(4);
    });

    it("ensure creates an unknown user the seed's way and leaves a known one untouched", async () => {
      const made = await store.ensure('fresh');
      expect(made.session_token).toMatch(/^[0-9a-f]{16}$/);
      expect(made.flags).toEqual({ last_activity: made.created_at });
      const again = await store.ensure('fresh');
      expect(again).toEqual(made);
      const refreshed = await store.refreshSessionToken('fresh');
      expect(refreshed.session_token).toMatch(/^[0-9a-f]{16}$/);
      expect(refreshed.session_token).not.toBe(made.session_token);
      expect((await store.get('fresh'))?.session_token).toBe(refreshed.session_token);
    });

    it('addContext keeps distinct newest entries and merges product and serials; fillSlots stores null verbatim', async () => {
      for (let i = 0; i < 5; i++) await store.addContext('u', { text: `c${i}`, maxItems: 3 });
      let r = await store.addContext('u', { text: ' c4 ', maxItems: 3 });
      expect(r.summary_context).toEqual(['c2', 'c3', 'c4']);
      r = await store.addContext('u', { product: 'Electronic Air Cleaner', serials: ['F90A'] });
      r = await store.addContext('u', { serials: ['F57A', ' F90A'] });
      expect([r.product, r.serial, r.summary_context.length]).toEqual(['Electronic Air Cleaner', 'F57A, F90A', 3]);
      await expect(store.addContext('u', { maxItems: 0 })).rejects.toMatchObject({ code: 'E_RECORD' });
      r = await store.fillSlots('u', { a: 1, b: null });
      expect(r.slots).toEqual({ a: 1, b: null });
      expect((await store.get('u'))?.slots).toEqual({ a: 1, b: null });
    });

    it('setFlag, clearFlag and setSlot', async () => {
      await store.setFlag('u', 'active_intent', 'mati');
      await store.setFlag('u', 'sop_pending', true);
      await store.setSlot('u', 'company', 'CV Sentosa');
      await store.clearFlag('u', 'sop_pending');
      await store.clearFlag('u', 'never_set');
      const r = await store.get('u');
      expect(r?.flags).toEqual({ active_intent: 'mati' });
      expect(r?.slots).toEqual({ company: 'CV Sentosa' });
    });

    it('delete, clear and count', async () => {
      for (const id of ['a', 'b', 'c', 'd']) await store.put(id, {});
      expect(await store.count()).toBe(4);
      expect(await store.delete(['a', 'c', 'zz'])).toBe(2);
      expect(await store.get('a')).toBeNull();
      expect(await store.count()).toBe(2);
      expect(await store.clear()).toBe(2);
      expect(await store.count()).toBe(0);
    });

    it('lists users with cursor pagination in user id byte order', async () => {
      const ids = Array.from({ length: 250 }, (_, i) => `user_${String(i).padStart(3, '0')}`).concat(['\uffff', '😀']);
      for (const id of ids) await store.put(id, { name: `N ${id}`, product: 'EAC', history: [{ role: 'user', text: 't', ts: '2025-01-01T00:00:00Z' }] });
      const seen: string[] = [];
      let cursor: string | null = null;
      let pages = 0;
      do {
        const page = await store.list({ cursor, limit: 100 });
        seen.push(...page.items.map((u) => u.user_id));
        cursor = page.next;
        pages++;
      } while (cursor !== null);
      expect(pages).toBe(3);
      expect(seen).toEqual([...ids].sort(compareIds));
      expect(seen.at(-2)).toBe('\uffff');
      const first = (await store.list({ limit: 1 })).items[0];
      expect(first).toEqual({ user_id: 'user_000', name: 'N user_000', product: 'EAC', created_at: expect.any(String), updated_at: expect.any(String), messages: 1 });
      await expect(store.list({ limit: 0 })).rejects.toMatchObject({ code: 'E_STORE_ARG' });
    });

    it('scans every record in user id order, optionally after a cursor', async () => {
      for (const id of ['b', 'a', 'd', 'c']) await store.put(id, { name: id });
      const all: string[] = [];
      for await (const r of store.scan()) all.push(r.user_id);
      expect(all).toEqual(['a', 'b', 'c', 'd']);
      const after: string[] = [];
      for await (const r of store.scan({ after: 'b' })) after.push(r.user_id);
      expect(after).toEqual(['c', 'd']);
    });

    it('reports stats', async () => {
      expect(await store.stats()).toEqual({ users: 0, messages: 0, bytes: 0, lastUpdate: null });
      await store.appendHistory('a', { role: 'user', text: 'x' });
      await store.appendHistory('a', { role: 'bot', text: 'y' });
      await store.appendHistory('b', { role: 'user', text: 'z' });
      const s = await store.stats();
      expect(s.users).toBe(2);
      expect(s.messages).toBe(3);
      expect(s.bytes).toBeGreaterThan(100);
      expect(s.lastUpdate).toMatch(/Z$/);
      // Totals follow every kind of change, not only appends.
      let bytes = 0;
      for await (const r of store.scan()) bytes += Buffer.byteLength(JSON.stringify(r));
      expect(s.bytes).toBe(bytes);
      await store.delete(['a']);
      expect(await store.stats()).toMatchObject({ users: 1, messages: 1 });
      await store.clear();
      expect(await store.stats()).toEqual({ users: 0, messages: 0, bytes: 0, lastUpdate: null });
    });

    it('searches id, name, address, product, summary_context and history text, case-insensitively and literally', async () => {
      await store.put('p', { product: 'Electronic Air Cleaner' });
      await store.put('s', { summary_context: ['Pelanggan melaporkan BAU gosong'] });
      await store.put('h', { history: [{ role: 'user', text: 'unit bunyi 100% terus', ts: '2025-01-01T00:00:00Z' }] });
      await store.put('n', { name: 'air cleaner in the name only' });
      await store.put('a', { address: 'Jl. Sudirman No. 5, Jakarta' });
      await store.put('6281299887766', { name: 'Siti' });
      expect((await store.search('AIR CLEANER')).map((u) => u.user_id)).toEqual(['n', 'p']);
      expect((await store.search('gosong')).map((u) => u.user_id)).toEqual(['s']);
      expect((await store.search('100%')).map((u) => u.user_id)).toEqual(['h']);
      expect((await store.search('% t')).map((u) => u.user_id)).toEqual(['h']);
      expect((await store.search('jl. SUDIRMAN')).map((u) => u.user_id)).toEqual(['a']);
      expect((await store.search('1299887')).map((u) => u.user_id)).toEqual(['6281299887766']);
      expect(await store.search('nothing-like-this')).toEqual([]);
      // Shorter than 3 characters: user ids starting with the query, case-sensitively.
      expect((await store.search('62')).map((u) => u.user_id)).toEqual(['6281299887766']);
      expect((await store.search('0%')).map((u) => u.user_id)).toEqual([]);
      expect((await store.search('P')).map((u) => u.user_id)).toEqual([]);
      expect((await store.search('p')).map((u) => u.user_id)).toEqual(['p']);
    });

    it('search follows appends past the history cap, patches, puts and deletes', async () => {
      await store.close();
      store = await h.open({ historyCap: 3 });
      for (let i = 0; i < 5; i++) await store.appendHistory('c', { role: 'user', text: `pesan-${i}-unik` });
      // Entries pushed out by the cap are no longer found; the kept ones are.
      expect(await store.search('pesan-0-unik')).toEqual([]);
      expect(await store.search('pesan-1-unik')).toEqual([]);
      for (const i of [2, 3, 4]) expect((await store.search(`pesan-${i}-unik`)).map((u) => u.user_id)).toEqual(['c']);
      await store.patch('c', { name: 'Nurhaliza', address: 'Jl. Mawar' });
      expect((await store.search('nurhal')).map((u) => u.user_id)).toEqual(['c']);
      await store.patch('c', { name: 'Budi' });
      expect(await store.search('nurhal')).toEqual([]);
      expect((await store.search('mawar')).map((u) => u.user_id)).toEqual(['c']);
      await store.put('c', { history: [{ role: 'user', text: 'baru sama sekali', ts: '2025-01-01T00:00:00Z' }] });
      expect(await store.search('pesan-4-unik')).toEqual([]);
      expect(await store.search('mawar')).toEqual([]);
      expect((await store.search('sama sekali')).map((u) => u.user_id)).toEqual(['c']);
      await store.patch('c', { history: [] });
      expect(await store.search('sama sekali')).toEqual([]);
      await store.appendHistory('d', { role: 'user', text: 'sama sekali' });
      await store.delete(['d']);
      expect(await store.search('sama sekali')).toEqual([]);
      await store.appendHistory('e', { role: 'user', text: 'sama sekali' });
      await store.clear();
      expect(await store.search('sama sekali')).toEqual([]);
      expect(await store.search('e')).toEqual([]);
    });

    it('an exclusive section holds back writes to its users only', async () => {
      await store.put('held', {});
      await store.put('free', {});
      const order: string[] = [];
      let release!: () => void;
      const gate = new Promise<void>((r) => (release = r));
      const section = store.exclusive({ ids: ['held'] }, async (ctx) => {
        order.push('section-start');
        await gate;
        expect(await ctx.delete(['held'])).toBe(1);
        order.push('section-end');
      });
      await new Promise((r) => setTimeout(r, 20));
      const heldWrite = store.appendHistory('held', { role: 'user', text: 'late' }).then(() => order.push('held-write'));
      await store.appendHistory('free', { role: 'user', text: 'on time' });
      order.push('free-write');
      await new Promise((r) => setTimeout(r, 50));
      release();
      await Promise.all([section, heldWrite]);
      expect(order).toEqual(['section-start', 'free-write', 'section-end', 'held-write']);
      // The write was applied after the delete, never silently lost.
      expect((await store.get('held'))?.history.map((e) => e.text)).toEqual(['late']);
    });

    it('a whole-store section waits for in-flight writes and holds back new ones', async () => {
      const writes = Array.from({ length: 20 }, (_, i) => store.appendHistory(`w${i % 4}`, { role: 'user', text: `m${i}` }));
      const cleared = store.exclusive('all', async (ctx) => ctx.clear());
      const after = store.appendHistory('w0', { role: 'user', text: 'after' });
      await Promise.all(writes);
      expect(await cleared).toBe(4);
      await after;
      expect(await store.count()).toBe(1);
      expect((await store.get('w0'))?.history.map((e) => e.text)).toEqual(['after']);
    });

    it('putMany and replaceAll inside a section', async () => {
      await store.put('old', {});
      await store.exclusive('all', async (ctx) => {
        await ctx.putMany([{ ...(await store.get('old'))!, name: 'renamed' }]);
        async function* records() {
          yield { ...(await store.get('old'))!, name: 'kept' };
          for (let i = 0; i < 1200; i++) {
            const id = `r${String(i).padStart(4, '0')}`;
            yield { ...(await store.get('old'))!, user_id: id, name: id };
          }
        }
        expect(await ctx.replaceAll(records())).toBe(1201);
      });
      expect(await store.count()).toBe(1201);
      expect((await store.stats()).users).toBe(1201);
      expect((await store.get('old'))?.name).toBe('kept');
      expect((await store.get('r1199'))?.name).toBe('r1199');
    });

    it('1,000 concurrent appends across 50 users: none lost, caps respected', async () => {
      const send = (n: number) =>
        Promise.all(Array.from({ length: n }, (_, i) => store.appendHistory(`c${i % 50}`, { role: 'user', text: `m${i}` })));
      await send(1000);
      let total = 0;
      for (let u = 0; u < 50; u++) {
        const r = await store.get(`c${u}`);
        expect(r?.history).toHaveLength(20);
        expect(new Set(r?.history.map((e) => e.text))).toEqual(new Set(Array.from({ length: 20 }, (_, k) => `m${u + 50 * k}`)));
        total += r?.history.length ?? 0;
      }
      expect(total).toBe(1000);
      await store.close();
      store = await h.open({ historyCap: 7 });
      await send(1000);
      for (let u = 0; u < 50; u++) expect((await store.get(`c${u}`))?.history).toHaveLength(7);
    });

    it('persists across reopen', async () => {
      await store.put('p1', { name: 'Persist', odd_field: 'kept' });
      await store.appendHistory('p1', { role: 'user', text: 'hello' });
      await store.close();
      store = await h.open();
      const r = await store.get('p1');
      expect(r?.name).toBe('Persist');
      expect(r?.odd_field).toBe('kept');
      expect(r?.history.map((e) => e.text)).toEqual(['hello']);
    });

    it('stores the 200-user seed fixture and scans it back deep-equal', async () => {
      const fixture = loadFixture();
      for (const [id, rec] of Object.entries(fixture)) await store.put(id, rec);
      const back: Record<string, MemoryRecord> = {};
      for await (const r of store.scan()) back[r.user_id] = r;
      expect(back).toEqual(fixture);
    });

    it('a writer killed with SIGKILL mid-stream leaves a store with every acknowledged write', async (ctx) => {
      if (!h.url) ctx.skip();
      await store.close();
      const child = spawn(process.execPath, [path.join(ROOT, 'test/fixtures/writer.mjs'), h.url!, '5'], { stdio: ['ignore', 'pipe', 'pipe'] });
      const acked = new Map<string, Set<string>>();
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      let buf = '';
      await new Promise<void>((resolve, reject) => {
        child.on('exit', (code) => reject(new Error(`writer exited early (${code}): ${stderr}`)));
        child.stdout.on('data', (d: Buffer) => {
          buf += d.toString();
          let nl: number;
          while ((nl = buf.indexOf('\n')) >= 0) {
            const line = buf.slice(0, nl);
            buf = buf.slice(nl + 1);
            const m = /^ack (\S+) (\d+)$/.exec(line);
            if (!m) continue;
            const set = acked.get(m[1]!) ?? new Set<string>();
            set.add(`message ${m[2]}`);
            acked.set(m[1]!, set);
            const total = [...acked.values()].reduce((n, s) => n + s.size, 0);
            if (total === 200) {
              child.removeAllListeners('exit');
              child.kill('SIGKILL');
              child.on('exit', () => resolve());
            }
          }
        });
      });
      store = await h.open({ historyCap: 1000 });
      for (const [id, texts] of acked) {
        const r = await store.get(id);
        const have = new Set(r?.history.map((e) => e.text));
        for (const t of texts) expect(have.has(t), `${id}: ${t}`).toBe(true);
      }
    });

    options.additionalTests?.({ store: () => store, harness: () => h });
  });
}
