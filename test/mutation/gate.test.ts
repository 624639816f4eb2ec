import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SqliteDriver } from '../../src/store/sqlite/index.js';
import { createStore } from '../../src/store/store.js';
import type { ExclusiveScope, Store, StoreDriver } from '../../src/store/types.js';
import type { MemoryRecord } from '../../src/record.js';
import { loadFixture } from '../store/conformance.js';
import { tempDir } from '../helpers/tmp.js';

/** A gate whose opening the test controls, plus a signal that someone is waiting at it. */
function latch() {
  let open!: () => void;
  let entered!: () => void;
  const opened = new Promise<void>((r) => (open = r));
  const reached = new Promise<void>((r) => (entered = r));
  return { open, opened, entered, reached };
}

/** The real SQLite driver, except that update() can be held in flight until the test lets it go. */
function holdingDriver(real: StoreDriver, log: string[]) {
  const state: { hold: ReturnType<typeof latch> | null } = { hold: null };
  const driver: StoreDriver = Object.create(real) as StoreDriver;
  driver.update = async (id, fn) => {
    const hold = state.hold;
    if (hold) {
      log.push(`update ${id} in flight`);
      hold.entered();
      await hold.opened;
    }
    const out = await real.update(id, fn);
    log.push(`update ${id} committed`);
    return out;
  };
  return { driver, state };
}

// Give a wrongly started section every chance to run: several macrotask turns, not a tight sleep.
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await sleep(20);
}

// A mutant that breaks a wait loop parks the test on a promise nobody resolves: failing it here, far
// above the sub-second a test takes, spares the mutation run StrykerJS's own timeout and restart.
describe('the write gate under an exclusive section', { timeout: 10_000 }, () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let store: Store;
  let log: string[];
  let state: { hold: ReturnType<typeof latch> | null };
  let a: MemoryRecord;
  let b: MemoryRecord;

  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir());
    log = [];
    const real = await SqliteDriver.open(path.join(dir, 'memory.db'));
    const held = holdingDriver(real, log);
    state = held.state;
    store = createStore(held.driver);
    const fixture = Object.values(loadFixture());
    a = fixture[0]!;
    b = fixture[1]!;
    await store.put(a.user_id, a);
    await store.put(b.user_id, b);
    log.length = 0;
  });
  afterEach(async () => {
    state.hold?.open();
    await store.close();
    await cleanup();
  });

  for (const scope of ['ids', 'all'] as const) {
    it(`a ${scope === 'ids' ? 'per-user' : 'whole-store'} section starts only after a write already in flight commits, and sees it`, async () => {
      const hold = latch();
      state.hold = hold;
      const write = store.put(a.user_id, { ...a, name: 'Written In Flight' });
      await hold.reached;
      state.hold = null;

      const sectionScope: ExclusiveScope = scope === 'ids' ? { ids: [a.user_id] } : 'all';
      const section = store.exclusive(sectionScope, async (ctx) => {
        log.push('section start');
        return (await ctx.getMany([a.user_id]))[0];
      });
      await settle();
      expect(log).toEqual([`update ${a.user_id} in flight`]);

      hold.open();
      await write;
      const seen = await section;
      expect(log).toEqual([`update ${a.user_id} in flight`, `update ${a.user_id} committed`, 'section start']);
      expect(seen?.name).toBe('Written In Flight');
    });
  }

  it('a per-user section does not wait for writes to other users, and holds back writes to its own', async () => {
    const inside = latch();
    const section = store.exclusive({ ids: [a.user_id] }, async () => {
      log.push('section start');
      inside.entered();
      await inside.opened;
      log.push('section end');
    });
    await inside.reached;
    // Another user's write goes through while the section is held.
    await store.put(b.user_id, { ...b, name: 'Other User' });
    expect(log).toEqual(['section start', `update ${b.user_id} committed`]);

    const blocked = store.put(a.user_id, { ...a, name: 'After Section' });
    await settle();
    expect(log).toEqual(['section start', `update ${b.user_id} committed`]);
    inside.open();
    await Promise.all([section, blocked]);
    expect(log).toEqual(['section start', `update ${b.user_id} committed`, 'section end', `update ${a.user_id} committed`]);
    expect((await store.get(a.user_id))?.name).toBe('After Section');
  });

  it('a whole-store section holds back writes to every user until it ends', async () => {
    const inside = latch();
    const section = store.exclusive('all', async () => {
      log.push('section start');
      inside.entered();
      await inside.opened;
      log.push('section end');
    });
    await inside.reached;
    const blocked = store.put(b.user_id, { ...b, name: 'After Full Section' });
    await settle();
    expect(log).toEqual(['section start']);
    inside.open();
    await Promise.all([section, blocked]);
    expect(log).toEqual(['section start', 'section end', `update ${b.user_id} committed`]);
  });
});
