import { describe, expect, it } from 'vitest';
import { BuildPacer } from '../../src/store/sqlite/pacer.js';

describe('BuildPacer: a bulk build sized by time before it overruns', () => {
  it('starts small, grows at most 2x a batch, and settles where a batch fits the target', () => {
    const p = new BuildPacer(10, 8, 4096);
    expect(p.budget).toBe(8);
    const seen: number[] = [];
    // 0.01 ms per item: 1,000 items fit in 10 ms.
    for (let i = 0; i < 12; i++) {
      p.measured(p.budget, p.budget * 0.01);
      seen.push(p.budget);
    }
    expect(seen.slice(0, 6)).toEqual([16, 32, 64, 128, 256, 512]);
    expect(seen.at(-1)).toBe(1000);
  });

  it('shrinks at once after a slow batch, so the next one fits at the slow rate, and grows back slowly', () => {
    const p = new BuildPacer(10, 8, 4096);
    for (let i = 0; i < 12; i++) p.measured(p.budget, p.budget * 0.01);
    expect(p.budget).toBe(1000);
    // The machine slows 10x: one batch overruns (100 ms), the next is sized to the slow rate.
    p.measured(1000, 100);
    expect(p.budget).toBe(100);
    // Fast again: the slow rate is forgotten by halves, never more than 2x a batch.
    p.measured(100, 1);
    expect(p.budget).toBe(181);
    p.measured(181, 1.81);
    expect(p.budget).toBeLessThanOrEqual(362);
    expect(p.budget).toBeGreaterThan(181);
  });

  it('keeps at least one item and at most the maximum', () => {
    const p = new BuildPacer(10, 8, 50);
    p.measured(8, 1000);
    expect(p.budget).toBe(1);
    for (let i = 0; i < 30; i++) p.measured(p.budget, 0);
    expect(p.budget).toBe(50);
  });

  it('times the batch it runs', () => {
    const p = new BuildPacer(10, 4, 4096);
    p.run(4, () => {
      const until = performance.now() + 20;
      while (performance.now() < until);
    });
    // At least 5 ms an item (more on a loaded machine): at most 2 fit in 10 ms.
    expect(p.budget).toBeGreaterThanOrEqual(1);
    expect(p.budget).toBeLessThanOrEqual(2);
  });

  it('grows after a batch that ran fast', () => {
    const p = new BuildPacer(10, 4, 4096);
    // An empty batch takes microseconds: twice the items fit next time.
    p.run(4, () => undefined);
    expect(p.budget).toBe(8);
  });

  it('an empty batch tells nothing: the budget stays as it was', () => {
    const p = new BuildPacer(10, 8, 4096);
    p.measured(0, 50);
    expect(p.budget).toBe(8);
    p.measured(8, 0.08);
    expect(p.budget).toBe(16);
  });

  it('a turn lets the event loop run what waits on it (the hot path\'s group commits)', async () => {
    const p = new BuildPacer(10);
    let ran = false;
    setImmediate(() => {
      ran = true;
    });
    await p.turn();
    expect(ran).toBe(true);
  });
});
