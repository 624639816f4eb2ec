import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { existsSync, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { FIXTURES, PY_LOAD_KEYS, sandbox, type Sandbox } from './helpers.js';

const LEGACY = path.join(FIXTURES, 'backups');

function pythonKeys(file: string): string[] {
  return JSON.parse(execFileSync('python3', ['-c', PY_LOAD_KEYS, file], { encoding: 'utf8' })) as string[];
}

describe.each(['sqlite', 'json'] as const)('import and export on a %s store', (kind) => {
  let sb: Sandbox;
  beforeEach(async () => {
    sb = await sandbox(kind, { empty: true });
  });
  afterEach(async () => {
    await sb.cleanup();
  });

  it('imports each of the seed\'s three legacy backup kinds', async () => {
    const expected: Record<string, number> = {};
    for (const name of await fsp.readdir(LEGACY)) {
      const keys = JSON.parse(await fsp.readFile(path.join(LEGACY, name), 'utf8')) as Record<string, unknown>;
      expected[name] = 'record' in keys && 'backup_timestamp' in keys ? 1 : Object.keys(keys).length;
    }
    expect(Object.keys(expected)).toHaveLength(3);
    for (const [name, users] of Object.entries(expected)) {
      const r = await sb.json<{ imported: number }>(['import', path.join(LEGACY, name), '--yes']);
      expect(r.code, `${name}: ${r.stderr}`).toBe(0);
      expect(r.doc.imported, name).toBe(users);
    }
    const show = await sb.json<{ user: { name: string } }>(['show', '628161973069']);
    expect(show.doc.user.name).toBe('Joko Santoso');
  });

  it('asks before importing into a store that has users, and backs up what it replaces', async () => {
    const first = await sb.run(['import', path.join(FIXTURES, 'memory.json')]);
    expect(first.code).toBe(0);
    expect(first.stdout).toContain('Imported 200 users');
    const refused = await sb.run(['import', path.join(LEGACY, 'memory_backup_20251125_145714.json')]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('E_CONFIRM_REQUIRED');
    expect(await sb.backupFiles()).toEqual([]);
    const again = await sb.json<{ imported: number; overwritten: number; backup: string; backupFile: string }>(['import', path.join(LEGACY, 'memory_backup_20251125_145714.json'), '--yes']);
    expect(again.code).toBe(0);
    expect(again.doc.overwritten).toBe(again.doc.imported);
    expect(pythonKeys(again.doc.backupFile)).toHaveLength(again.doc.overwritten);
  });

  it('import of a missing file exits 3; of a truncated file exits 1 and imports nothing', async () => {
    const missing = await sb.run(['import', 'nope.json']);
    expect(missing.code).toBe(3);
    expect(missing.stderr).toContain('E_NOT_FOUND');
    const truncated = await sb.run(['import', path.join(FIXTURES, 'memory.truncated.json')]);
    expect(truncated.code).toBe(1);
    // One error line (after the note that the store is new), no stack.
    expect(truncated.stderr.trim().split('\n').filter((l) => !l.startsWith('note: '))).toHaveLength(1);
    // Nothing imported: the store is still empty, or (JSON) was never created.
    const after = await sb.json<{ users?: number; error?: { code: string } }>(['stats']);
    if (existsSync(sb.storeFile)) expect(after.doc.users).toBe(0);
    else expect(after.doc.error?.code).toBe('E_STORE_NOT_FOUND');
  });

  it('export writes one file that Python json.load reads, atomically and privately', async () => {
    await sb.run(['import', path.join(FIXTURES, 'memory.json')]);
    const r = await sb.json<{ exported: number; file: string }>(['export', 'out/../export.json']);
    expect(r.code).toBe(0);
    expect(r.doc).toMatchObject({ exported: 200, file: path.join(sb.dir, 'export.json') });
    const keys = pythonKeys(r.doc.file);
    expect(keys).toHaveLength(200);
    expect((await fsp.stat(r.doc.file)).mode & 0o777).toBe(0o600);
    expect((await fsp.readdir(sb.dir)).filter((n) => n.endsWith('.tmp'))).toEqual([]);
    const exported = JSON.parse(await fsp.readFile(r.doc.file, 'utf8')) as Record<string, { name: string }>;
    expect(exported['628161973069']?.name).toBe('Joko Santoso');

    const exists = await sb.run(['export', 'export.json']);
    expect(exists.code).toBe(2);
    expect(exists.stderr).toContain('--force');
    expect((await sb.run(['export', 'export.json', '--force'])).code).toBe(0);
    const self = await sb.run(['export', sb.storeFile, '--force']);
    expect(self.code).toBe(2);
    const noDir = await sb.run(['export', 'nodir/x.json']);
    expect(noDir.code).toBe(3);
    expect(noDir.stderr).toContain('no directory');
  });

  it('export without FILE streams the store to stdout', async () => {
    await sb.run(['import', path.join(LEGACY, 'memory_backup_20251125_145714.json')]);
    const r = await sb.run(['export']);
    expect(r.code).toBe(0);
    const doc = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(Object.keys(doc)).toHaveLength(5);
    expect(r.stdout.split('\n')[1]).toMatch(/^"\d+":\{"user_id"/);
    const json = await sb.run(['export', '--json']);
    expect(json.code).toBe(2);
  });
});
