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

  /** A section of `scope` that logs its start and end and stays open until the test lets it go. */
  function heldSection(scope: ExclusiveScope, name: string) {
    const inside = latch();
    const done = store.exclusive(scope, async () => {
      log.push(`${name} start`);
      inside.entered();
      await inside.opened;
      log.push(`${name} end`);
    });
    return { ...inside, done };
  }

  it('a waiting whole-store section holds back writes that arrive after it, even to other users', async () => {
    const hold = latch();
    state.hold = hold;
    const first = store.put(a.user_id, { ...a, name: 'First' });
    await hold.reached;
    state.hold = null;
    const full = heldSection('all', 'full');
    await settle();
    const later = store.put(b.user_id, { ...b, name: 'Later' });
    await settle();
    expect(log).toEqual([`update ${a.user_id} in flight`]);
    hold.open();
    await first;
    await full.reached;
    await settle();
    expect(log).toEqual([`update ${a.user_id} in flight`, `update ${a.user_id} committed`, 'full start']);
    full.open();
    await Promise.all([full.done, later]);
    expect(log.slice(3)).toEqual(['full end', `update ${b.user_id} committed`]);
  });

  it('a per-user section waits for every write in flight to its user, not only the first to finish', async () => {
    const one = latch();
    state.hold = one;
    const w1 = store.put(a.user_id, { ...a, name: 'One' });
    await one.reached;
    const two = latch();
    state.hold = two;
    const w2 = store.put(a.user_id, { ...a, name: 'Two' });
    await two.reached;
    state.hold = null;
    const section = heldSection({ ids: [a.user_id] }, 'section');
    one.open();
    await w1;
    await settle();
    expect(log.filter((l) => l.startsWith('section'))).toEqual([]);
    two.open();
    await w2;
    await section.reached;
    section.open();
    await section.done;
    expect(log.slice(-4)).toEqual([`update ${a.user_id} committed`, `update ${a.user_id} committed`, 'section start', 'section end']);
  });

  it('a section over several users waits while any one of them has a write in flight', async () => {
    const hold = latch();
    state.hold = hold;
    const write = store.put(b.user_id, { ...b, name: 'B' });
    await hold.reached;
    state.hold = null;
    const section = heldSection({ ids: [a.user_id, b.user_id] }, 'section');
    await settle();
    expect(log).toEqual([`update ${b.user_id} in flight`]);
    hold.open();
    await write;
    await section.reached;
    section.open();
    await section.done;
    expect(log).toEqual([`update ${b.user_id} in flight`, `update ${b.user_id} committed`, 'section start', 'section end']);
  });

  it('sections exclude each other: a whole-store one waits for a per-user one and for another whole-store one; a per-user one waits for a whole-store one held or waiting', async () => {
    // A whole-store section after a per-user one.
    const user = heldSection({ ids: [a.user_id] }, 'user');
    await user.reached;
    const full = heldSection('all', 'full');
    // A per-user section on another user, asked for while the whole-store one waits: it waits too.
    const other = heldSection({ ids: [b.user_id] }, 'other');
    await settle();
    expect(log).toEqual(['user start']);
    user.open();
    await user.done;
    await full.reached;
    // A second whole-store section while the first is held.
    const second = heldSection('all', 'second');
    await settle();
    expect(log).toEqual(['user start', 'user end', 'full start']);
    full.open();
    await full.done;
    await settle();
    // The waiting per-user section and the second whole-store section: one at a time, never together.
    const started = log.slice(4);
    expect(started.length).toBe(1);
    const first = started[0] === 'other start' ? other : second;
    const then = first === other ? second : other;
    first.open();
    await first.done;
    await then.reached;
    then.open();
    await then.done;
    expect(log.slice(0, 4)).toEqual(['user start', 'user end', 'full start', 'full end']);
    expect(log.length).toBe(8);
    for (let i = 4; i < 8; i += 2) expect(log[i + 1]?.replace(' end', '')).toBe(log[i]?.replace(' start', ''));
  });
});
