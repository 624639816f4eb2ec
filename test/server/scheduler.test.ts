import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { resolveConfig } from '../../src/config.js';
import { openContext, type Context } from '../../src/context.js';
import { Metrics } from '../../src/server/metrics.js';
import { BackupScheduler, parseInterval, type SchedulerLog } from '../../src/server/scheduler.js';
import { tempDir } from '../helpers/tmp.js';

function memoryLog(): SchedulerLog & { lines: { level: string; msg: string; obj: object }[] } {
  const lines: { level: string; msg: string; obj: object }[] = [];
  return {
    lines,
    info: (obj, msg) => void lines.push({ level: 'info', msg, obj }),
    warn: (obj, msg) => void lines.push({ level: 'warn', msg, obj }),
    error: (obj, msg) => void lines.push({ level: 'error', msg, obj }),
  };
}

async function withContext(fn: (ctx: Context, dir: string) => Promise<void>, backupDir?: (dir: string) => string): Promise<void> {
  const { dir, cleanup } = await tempDir('chatmem-sched-');
  const config = await resolveConfig({ cwd: dir, store: `sqlite:${path.join(dir, 'memory.db')}`, backupDir: backupDir?.(dir), env: {} });
  const ctx = await openContext(config, { role: 'daemon' });
  try {
    await ctx.store.put('u1', { name: 'One' });
    await fn(ctx, dir);
  } finally {
    await ctx.close();
    await cleanup();
  }
}

describe('parseInterval', () => {
  it('reads s, min, h, d and combinations', () => {
    expect(parseInterval('30s')).toBe(30_000);
    expect(parseInterval('15min')).toBe(900_000);
    expect(parseInterval('1h')).toBe(3_600_000);
    expect(parseInterval('1h30min')).toBe(5_400_000);
    expect(parseInterval(' 2d ')).toBe(172_800_000);
  });
  it('refuses m (months in the one duration syntax) and suggests min', () => {
    expect(() => parseInterval('30m')).toThrow(/backup\.every "30m": "m" means months; for minutes write "30min"/);
    expect(() => parseInterval('1h30m')).toThrow(/write "1h30min"/);
    expect(() => parseInterval('1y')).toThrow(/backup\.every/);
  });
  it('reads off', () => {
    expect(parseInterval('')).toBeNull();
    expect(parseInterval('off')).toBeNull();
    expect(parseInterval('0')).toBeNull();
  });
  it('refuses anything else with a clear message', () => {
    for (const bad of ['1', 'h', '1x', '-1h', '1.5h', '0s', '500ms', '1h1h', 'every hour', '2D']) {
      expect(() => parseInterval(bad), bad).toThrow(/backup\.every/);
    }
  });
});

describe('BackupScheduler', () => {
  it('runs the first backup at start when none exists, then every interval, and applies retention', async () => {
    await withContext(async (ctx) => {
      const metrics = new Metrics();
      const log = memoryLog();
      const s = new BackupScheduler({ ops: ctx.ops, everyMs: 1000, retention: { last: 2 }, metrics, log });
      await s.start();
      const deadline = Date.now() + 10_000;
      while (metrics.scheduledBackups < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      await s.stop();
      expect(metrics.scheduledBackups).toBeGreaterThanOrEqual(3);
      const backups = await ctx.ops.listBackups();
      expect(backups.every((b) => b.reason === 'scheduled')).toBe(true);
      // Retention ran after each backup: never more than the two newest remain.
      expect(backups.length).toBe(2);
      expect(log.lines.some((l) => l.msg === 'retention applied')).toBe(true);
      expect(metrics.lastBackupAt).not.toBeNull();
      const audit = await ctx.audit.read({ action: 'backup' });
      expect(audit.at(-1)?.actor.name).toBeTruthy();
    });
  });

  it('plans the next run from the newest scheduled backup on disk', async () => {
    await withContext(async (ctx) => {
      await ctx.ops.createBackup({ reason: 'scheduled' });
      const t0 = Date.now();
      const s = new BackupScheduler({ ops: ctx.ops, everyMs: 3_600_000, retention: {}, log: memoryLog() });
      await s.start();
      await s.stop();
      expect(s.nextRunAt).toBeGreaterThan(t0 + 3_500_000);
      expect(s.nextRunAt).toBeLessThanOrEqual(Date.now() + 3_600_000);
    });
  });

  it('skips runs when another daemon is the leader', async () => {
    await withContext(async (ctx) => {
      const s = new BackupScheduler({ ops: ctx.ops, everyMs: 60_000, retention: {}, log: memoryLog(), tryLeader: async () => false });
      expect(await s.runOnce()).toEqual({ skipped: 'not-leader' });
      expect(await ctx.ops.listBackups()).toEqual([]);
      await s.stop();
    });
  });

  it('counts and logs a failed backup without throwing, and skips retention then', async () => {
    // A regular file where the backup directory should be: every backup fails, even for root.
    await withContext(
      async (ctx, dir) => {
        await fsp.writeFile(path.join(dir, 'not-a-dir'), 'x');
        const metrics = new Metrics();
        const log = memoryLog();
        const s = new BackupScheduler({ ops: ctx.ops, everyMs: 60_000, retention: { last: 1 }, metrics, log });
        const run = await s.runOnce();
        expect(run.error?.message).toBeTruthy();
        expect(run.pruned).toBeUndefined();
        expect(metrics.backupFailures).toBe(1);
        expect(log.lines.find((l) => l.level === 'error')?.msg).toBe('scheduled backup failed');
        expect(metrics.render({ store: null, lastBackupAt: null })).toMatch(/^chatmem_backup_failures_total 1$/m);
        await s.stop();
      },
      (dir) => path.join(dir, 'not-a-dir'),
    );
  });

  it('refuses a bad retention policy or interval up front', async () => {
    await withContext(async (ctx) => {
      expect(() => new BackupScheduler({ ops: ctx.ops, everyMs: 60_000, retention: { last: -5 }, log: memoryLog() })).toThrow(/last/);
      expect(() => new BackupScheduler({ ops: ctx.ops, everyMs: 10, retention: {}, log: memoryLog() })).toThrow(/1000/);
    });
  });
});

describe('Metrics', () => {
  it('writes cumulative histogram buckets and escapes labels', () => {
    const m = new Metrics();
    m.observe('GET', '/v1/users/:id', 200, 0.003);
    m.observe('GET', '/v1/users/:id', 200, 0.2);
    m.observe('GET', '/v1/users/:id', 404, 20);
    m.observe('GET', 'we"ird\\', 200, 0);
    const text = m.render({ store: { users: 3, bytes: 1234 }, lastBackupAt: new Date(Date.now() - 5000) });
    expect(text).toContain('chatmem_http_requests_total{method="GET",route="/v1/users/:id",status="200"} 2');
    expect(text).toContain('chatmem_http_requests_total{method="GET",route="/v1/users/:id",status="404"} 1');
    expect(text).toContain('chatmem_http_request_duration_seconds_bucket{method="GET",route="/v1/users/:id",le="0.001"} 0');
    expect(text).toContain('chatmem_http_request_duration_seconds_bucket{method="GET",route="/v1/users/:id",le="0.005"} 1');
    expect(text).toContain('chatmem_http_request_duration_seconds_bucket{method="GET",route="/v1/users/:id",le="0.25"} 2');
    expect(text).toContain('chatmem_http_request_duration_seconds_bucket{method="GET",route="/v1/users/:id",le="10"} 2');
    expect(text).toContain('chatmem_http_request_duration_seconds_bucket{method="GET",route="/v1/users/:id",le="+Inf"} 3');
    expect(text).toContain('chatmem_http_request_duration_seconds_count{method="GET",route="/v1/users/:id"} 3');
    expect(text).toContain('route="we\\"ird\\\\"');
    expect(text).toContain('chatmem_store_users 3\n');
    expect(text).toContain('chatmem_store_bytes 1234\n');
    expect(text).toMatch(/^chatmem_last_backup_age_seconds 5(\.\d+)?$/m);
    expect(text.endsWith('\n')).toBe(true);
    // Every sample line belongs to a declared family.
    const families = new Set([...text.matchAll(/^# TYPE (\S+) /gm)].map((x) => x[1]));
    for (const line of text.split('\n').filter((l) => l && !l.startsWith('#'))) {
      const name = /^[a-z_]+/.exec(line)?.[0] ?? '';
      expect([...families].some((f) => f !== undefined && name.startsWith(f)), line).toBe(true);
    }
  });

  it('reports no backup as +Inf and leaves out store gauges it could not sample', () => {
    const text = new Metrics().render({ store: null, lastBackupAt: null });
    expect(text).toMatch(/^chatmem_last_backup_age_seconds \+Inf$/m);
    expect(text).not.toContain('chatmem_store_users');
  });
});
