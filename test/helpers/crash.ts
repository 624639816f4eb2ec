import { spawn } from 'node:child_process';
import type { MemoryRecord } from '../../src/record.js';
import type { Store } from '../../src/store/types.js';
import { loadFixture } from '../store/conformance.js';

/** A store's content: user id to the JSON text of its record. */
export type State = Map<string, string>;

export async function snapshot(store: Store): Promise<State> {
  const m: State = new Map();
  for await (const r of store.scan()) m.set(r.user_id, JSON.stringify(r));
  return m;
}

export function same(a: State, b: State): boolean {
  if (a.size !== b.size) return false;
  for (const [k, v] of a) if (b.get(k) !== v) return false;
  return true;
}

/** `n` records cut from the seed fixture, ids from `idOf`. */
export function fixtureRecords(n: number, idOf: (i: number) => string = (i) => `user_${String(i).padStart(4, '0')}`): MemoryRecord[] {
  const fixture = Object.values(loadFixture());
  return Array.from({ length: n }, (_, i) => ({ ...(fixture[i % fixture.length] as MemoryRecord), user_id: idOf(i), name: `User ${i}` }));
}

export interface ChildRun {
  killed: boolean;
  code: number | null;
  /** Wall time from spawn to exit. */
  ms: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `node ...args` and SIGKILLs it `killAfterMs` after it printed `readyMarker` (or after spawn
 * without one). `killAfterMs` null lets it finish.
 */
export function runChild(args: string[], opts: { killAfterMs: number | null; readyMarker?: string; env?: NodeJS.ProcessEnv; cwd?: string }): Promise<ChildRun> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env ?? process.env, cwd: opts.cwd });
    let stdout = '';
    let stderr = '';
    let armed = false;
    const arm = () => {
      if (armed || opts.killAfterMs === null) return;
      armed = true;
      setTimeout(() => child.kill('SIGKILL'), opts.killAfterMs);
    };
    if (!opts.readyMarker) arm();
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      if (opts.readyMarker && stdout.includes(opts.readyMarker)) arm();
    });
    child.on('error', reject);
    child.on('exit', (code, signal) => resolve({ killed: signal === 'SIGKILL', code, ms: performance.now() - t0, stdout, stderr }));
  });
}
