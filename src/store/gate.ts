import type { ExclusiveScope } from './types.js';

/**
 * In-process write gate. Hot-path writes pass unless their user is inside an exclusive section;
 * an exclusive section waits for in-flight writes to its users to commit first.
 * A waiting whole-store section holds back new writes so it cannot be starved.
 */
export class WriteGate {
  private fullHeld = false;
  private fullWaiting = 0;
  private readonly held = new Set<string>();
  private readonly inflight = new Map<string, number>();
  private inflightTotal = 0;
  private waiters: (() => void)[] = [];

  private wait(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  async write<T>(id: string, fn: () => Promise<T>): Promise<T> {
    while (this.fullHeld || this.fullWaiting > 0 || this.held.has(id)) await this.wait();
    this.inflight.set(id, (this.inflight.get(id) ?? 0) + 1);
    this.inflightTotal++;
    try {
      return await fn();
    } finally {
      const n = (this.inflight.get(id) ?? 1) - 1;
      if (n === 0) this.inflight.delete(id);
      else this.inflight.set(id, n);
      this.inflightTotal--;
      this.wake();
    }
  }

  async exclusive<T>(scope: ExclusiveScope, fn: () => Promise<T>): Promise<T> {
    if (scope === 'all') {
      this.fullWaiting++;
      try {
        while (this.fullHeld || this.held.size > 0 || this.inflightTotal > 0) await this.wait();
      } finally {
        this.fullWaiting--;
      }
      this.fullHeld = true;
      try {
        return await fn();
      } finally {
        this.fullHeld = false;
        this.wake();
      }
    }
    const ids = [...new Set(scope.ids)];
    while (this.fullHeld || this.fullWaiting > 0 || ids.some((id) => this.held.has(id) || this.inflight.has(id))) {
      await this.wait();
    }
    for (const id of ids) this.held.add(id);
    try {
      return await fn();
    } finally {
      for (const id of ids) this.held.delete(id);
      this.wake();
    }
  }
}
