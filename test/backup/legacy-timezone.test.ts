import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { backupBaseName } from '../../src/backup/format.js';
import { timeZoneOffsetMs, wallClockToInstant } from '../../src/backup/timezone.js';
import { cleanEnv, FIXTURES, runCli, sandbox, type Sandbox } from '../cli/helpers.js';

const LEGACY = path.join(FIXTURES, 'backups');

describe('wall-clock times of a time zone', () => {
  it('uses the offset Intl knows, DST included', () => {
    expect(timeZoneOffsetMs('Asia/Jakarta', Date.UTC(2025, 10, 25))).toBe(7 * 3_600_000);
    expect(wallClockToInstant(new Date('2025-11-25T13:28:11Z'), 'Asia/Jakarta').toISOString()).toBe('2025-11-25T06:28:11.000Z');
    expect(wallClockToInstant(new Date('2025-11-25T13:28:11Z'), 'UTC').toISOString()).toBe('2025-11-25T13:28:11.000Z');
    // Berlin: +01:00 in winter, +02:00 in summer; 2025-03-30 02:30 does not exist (clocks jump 02:00 → 03:00).
    expect(wallClockToInstant(new Date('2025-01-10T12:00:00Z'), 'Europe/Berlin').toISOString()).toBe('2025-01-10T11:00:00.000Z');
    expect(wallClockToInstant(new Date('2025-07-10T12:00:00Z'), 'Europe/Berlin').toISOString()).toBe('2025-07-10T10:00:00.000Z');
    expect(wallClockToInstant(new Date('2025-03-30T02:30:00Z'), 'Europe/Berlin').toISOString()).toBe('2025-03-30T01:30:00.000Z');
    // 02:30 on 2025-10-26 happens twice: the first (summer time) is taken.
    expect(wallClockToInstant(new Date('2025-10-26T02:30:00Z'), 'Europe/Berlin').toISOString()).toBe('2025-10-26T00:30:00.000Z');
  });
});

describe('legacyTimezone', () => {
  let sb: Sandbox;
  beforeEach(async () => {
    sb = await sandbox('sqlite');
  });
  afterEach(async () => {
    await sb.cleanup();
  });

  const config = (doc: object) => fsp.writeFile(path.join(sb.dir, 'chatmem.config.json'), JSON.stringify(doc));
  const listed = async (args: string[] = []) => {
    const r = await sb.json<{ backups: { id: string; createdAt: string; state: string }[] }>(['backups', ...args]);
    expect(r.code, r.stderr).toBe(0);
    return r.doc.backups;
  };

  it('reads the seed fixtures\' names as Asia/Jakarta time when configured, as UTC by default', async () => {
    const byDefault = await listed(['--backup-dir', LEGACY]);
    expect(Object.fromEntries(byDefault.map((b) => [b.id, b.createdAt]))).toEqual({
      memory_backup_20251125_132811: '2025-11-25T13:28:11.000Z',
      memory_backup_20251125_145714: '2025-11-25T14:57:14.000Z',
      memory_backup_628161973069_20251125_140002: '2025-11-25T14:00:02.000Z',
    });
    await config({ legacyTimezone: 'Asia/Jakarta' });
    const jakarta = await listed(['--backup-dir', LEGACY]);
    expect(Object.fromEntries(jakarta.map((b) => [b.id, b.createdAt]))).toEqual({
      memory_backup_20251125_132811: '2025-11-25T06:28:11.000Z',
      memory_backup_20251125_145714: '2025-11-25T07:57:14.000Z',
      memory_backup_628161973069_20251125_140002: '2025-11-25T07:00:02.000Z',
    });
    expect(jakarta.every((b) => b.state === 'legacy')).toBe(true);
  });

  it('orders and prunes a legacy backup by its real time against chatmem backups (UTC, with manifest)', async () => {
    const made = await sb.json<{ backup: string }>(['backup']);
    expect(made.code, made.stderr).toBe(0);
    // The seed's cp backup taken 30 minutes ago on a server whose clock showed Jakarta time.
    const trueTime = Date.now() - 30 * 60_000;
    const legacyId = backupBaseName(new Date(trueTime + 7 * 3_600_000), 0);
    await fsp.copyFile(path.join(LEGACY, 'memory_backup_20251125_132811.json'), path.join(sb.backupDir, `${legacyId}.json`));

    // Read as UTC, the legacy backup looks 6.5 hours newer than the backup just made...
    expect((await listed()).map((b) => b.id)[0]).toBe(legacyId);
    const utcPlan = await sb.json<{ remove: { id: string }[] }>(['prune', '--keep-last', '1', '--dry-run']);
    expect(utcPlan.doc.remove.map((r) => r.id)).toEqual([made.doc.backup]);

    // ...read as Jakarta time, it is 30 minutes older, and keep-last 1 keeps the new one.
    await config({ legacyTimezone: 'Asia/Jakarta' });
    const list = await listed();
    expect(list.map((b) => b.id)).toEqual([made.doc.backup, legacyId]);
    expect(list[1]?.createdAt).toBe(new Date(trueTime - (trueTime % 1000)).toISOString());
    const plan = await sb.json<{ remove: { id: string }[] }>(['prune', '--keep-last', '1', '--dry-run']);
    expect(plan.doc.remove.map((r) => r.id)).toEqual([legacyId]);
  });

  it('an unknown zone is refused before anything is read', async () => {
    await config({ legacyTimezone: 'Asia/Jakrta' });
    const r = await runCli(['backups'], { cwd: sb.dir, env: cleanEnv({ CHATMEM_STORE: sb.storeUrl }) });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('"legacyTimezone": expected an IANA time zone name');
  });
});
