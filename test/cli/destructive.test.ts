import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { sandbox, type Sandbox } from './helpers.js';

const JOKO = '628161973069';

async function userCount(sb: Sandbox): Promise<number> {
  const { doc } = await sb.json<{ users: number }>(['stats']);
  return doc.users;
}

describe.each(['sqlite', 'json'] as const)('destructive commands on a %s store', (kind) => {
  let sb: Sandbox;
  beforeEach(async () => {
    sb = await sandbox(kind);
  });
  afterEach(async () => {
    await sb.cleanup();
  });

  it('delete without a terminal and without --yes refuses with exit 2 and changes nothing', async () => {
    const before = await fsp.readFile(sb.storeFile);
    const r = await sb.run(['delete', JOKO]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('E_CONFIRM_REQUIRED');
    expect(r.stderr).toContain('refusing to delete user 628161973069 without confirmation: run in a terminal or pass --yes');
    expect(await sb.backupFiles()).toEqual([]);
    expect(await userCount(sb)).toBe(200);
    if (kind === 'json') expect((await fsp.readFile(sb.storeFile)).equals(before)).toBe(true);
  });

  it('delete --yes backs up, deletes and prints the backup path', async () => {
    const r = await sb.run(['delete', JOKO, '--yes']);
    expect(r.code).toBe(0);
    const backupLine = /^Backup: (.+)$/m.exec(r.stdout);
    expect(backupLine).not.toBeNull();
    expect(r.stdout).toContain('Deleted 1 user');
    const file = backupLine?.[1] ?? '';
    const backup = JSON.parse(await fsp.readFile(file, 'utf8')) as Record<string, { name: string }>;
    expect(Object.keys(backup)).toEqual([JOKO]);
    expect(backup[JOKO]?.name).toBe('Joko Santoso');
    expect(await userCount(sb)).toBe(199);
    expect((await sb.run(['show', JOKO])).code).toBe(3);
  });

  it('delete --json --full-backup returns the result document', async () => {
    const { code, doc } = await sb.json<{ deleted: number; backup: string; backupFile: string; userIds: string[] }>(['delete', JOKO, '628001869793', '--full-backup', '--yes']);
    expect(code).toBe(0);
    expect(doc.deleted).toBe(2);
    expect([...doc.userIds].sort()).toEqual(['628001869793', JOKO]);
    expect(doc.backup).toMatch(/^memory_backup_\d{8}_\d{6}(_\d+)?$/);
    expect(path.isAbsolute(doc.backupFile)).toBe(true);
    const backup = JSON.parse(await fsp.readFile(doc.backupFile, 'utf8')) as Record<string, unknown>;
    expect(Object.keys(backup)).toHaveLength(200);
  });

  it('delete of an unknown user exits 3 before any question, hook or backup', async () => {
    const r = await sb.run(['delete', 'nobody', JOKO, '--yes']);
    expect(r.code).toBe(3);
    expect(r.stderr).toContain('E_UNKNOWN_USER');
    expect(await sb.backupFiles()).toEqual([]);
    expect(await userCount(sb)).toBe(200);
  });

  it('at a terminal, n cancels (exit 2, nothing changed) and y deletes', async () => {
    const no = await sb.run(['delete', JOKO], { isTTY: true, input: ['n'] });
    expect(no.code).toBe(2);
    expect(no.stderr).toContain('Delete user 628161973069? [y/N]');
    expect(no.stderr).toContain('Joko Santoso');
    expect(no.stderr).toContain('cancelled');
    expect(await sb.backupFiles()).toEqual([]);
    const eof = await sb.run(['delete', JOKO], { isTTY: true, input: [] });
    expect(eof.code).toBe(2);
    expect(await userCount(sb)).toBe(200);
    const yes = await sb.run(['delete', JOKO], { isTTY: true, input: ['y'] });
    expect(yes.code).toBe(0);
    expect(await sb.backupFiles()).toHaveLength(1);
    expect(await userCount(sb)).toBe(199);
  });

  it('clear wants exactly YES: yes in lowercase cancels, YES clears after a full backup', async () => {
    const refused = await sb.run(['clear']);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('E_CONFIRM_REQUIRED');
    const lower = await sb.run(['clear'], { isTTY: true, input: ['yes'] });
    expect(lower.code).toBe(2);
    expect(lower.stderr).toContain('This will delete all 200 users');
    expect(lower.stderr).toContain('Type YES to continue:');
    expect(await userCount(sb)).toBe(200);
    expect(await sb.backupFiles()).toEqual([]);
    const ok = await sb.run(['clear'], { isTTY: true, input: ['YES'] });
    expect(ok.code).toBe(0);
    expect(ok.stdout).toContain('Cleared 200 users');
    expect(await userCount(sb)).toBe(0);
    const [file] = await sb.backupFiles();
    const verify = await sb.json<{ ok: boolean; results: { users: number }[] }>(['verify', (file ?? '').replace(/\.json$/, '')]);
    expect(verify.code).toBe(0);
    expect(verify.doc.ok).toBe(true);
    expect(verify.doc.results[0]?.users).toBe(200);
    const again = await sb.run(['clear', '--yes']);
    expect(again.code).toBe(0);
    expect(again.stdout).toContain('already empty');
  });

  it('clear --yes --json', async () => {
    const { code, doc } = await sb.json<{ deleted: number; backupFile: string }>(['clear', '--yes']);
    expect(code).toBe(0);
    expect(doc.deleted).toBe(200);
    expect(Object.keys(JSON.parse(await fsp.readFile(doc.backupFile, 'utf8')) as object)).toHaveLength(200);
  });

  it('the menu: 1 picks a user from the list and deletes it after y; 3 cancels; 2 clears with YES', async () => {
    const cancel = await sb.run([], { isTTY: true, input: ['3'] });
    expect(cancel.code).toBe(0);
    expect(cancel.stderr).toContain('1) Delete a user');
    expect(cancel.stderr).toContain('2) Clear all memory');
    expect(cancel.stderr).toContain('3) Cancel');
    const pick = await sb.run([], { isTTY: true, input: ['1', JOKO, 'y'] });
    expect(pick.code).toBe(0);
    expect(pick.stdout).toContain('Deleted 1 user');
    expect(await userCount(sb)).toBe(199);
    const byNumber = await sb.run([], { isTTY: true, input: ['1', '1', 'n'] });
    expect(byNumber.code).toBe(2);
    expect(byNumber.stderr).toMatch(/1\)\s+628001869793/);
    expect(byNumber.stderr).toContain('Delete user 628001869793?');
    const bad = await sb.run([], { isTTY: true, input: ['7'] });
    expect(bad.code).toBe(2);
    const clear = await sb.run([], { isTTY: true, input: ['2', 'YES'] });
    expect(clear.code).toBe(0);
    expect(await userCount(sb)).toBe(0);
  });
});

describe('hooks around destructive commands', () => {
  let sb: Sandbox;
  let log: string;
  beforeEach(async () => {
    sb = await sandbox('sqlite');
    log = path.join(sb.dir, 'hooks.log');
  });
  afterEach(async () => {
    await sb.cleanup();
  });

  async function configure(before: string, after: string): Promise<void> {
    await fsp.writeFile(path.join(sb.dir, 'chatmem.config.json'), JSON.stringify({ hooks: { beforeWrite: before, afterWrite: after } }));
  }

  it('runs before, then the action, then after, with CHATMEM_ACTION', async () => {
    await configure(`echo "before $CHATMEM_ACTION $(ls data/storage/backups 2>/dev/null | wc -l)" >> hooks.log`, `echo "after $CHATMEM_ACTION $(ls data/storage/backups | wc -l)" >> hooks.log; echo restarted`);
    const r = await sb.run(['delete', JOKO, '--yes']);
    expect(r.code).toBe(0);
    // The backup and its manifest exist when the after-hook runs, not yet when the before-hook does.
    expect((await fsp.readFile(log, 'utf8')).trim().split('\n')).toEqual(['before delete 0', 'after delete 2']);
    expect(r.stderr).toContain('restarted');
    expect(r.stdout).not.toContain('restarted');
  });

  it('does not run hooks when the operator says no or no confirmation is possible', async () => {
    await configure('echo before >> hooks.log', 'echo after >> hooks.log');
    expect((await sb.run(['delete', JOKO])).code).toBe(2);
    expect((await sb.run(['delete', JOKO], { isTTY: true, input: ['n'] })).code).toBe(2);
    await expect(fsp.access(log)).rejects.toThrow();
  });

  it('runs the after-hook even when the command fails', async () => {
    await configure('echo before >> hooks.log', 'echo after >> hooks.log');
    // A file where the backup directory should be makes the backup, and so the delete, fail.
    await fsp.rm(sb.backupDir, { recursive: true, force: true });
    await fsp.writeFile(sb.backupDir, 'not a directory');
    const r = await sb.run(['delete', JOKO, '--yes']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/chatmem: error E[A-Z_]+: /);
    expect((await fsp.readFile(log, 'utf8')).trim().split('\n')).toEqual(['before', 'after']);
    await fsp.rm(sb.backupDir);
    expect((await sb.json<{ users: number }>(['stats'])).doc.users).toBe(200);
  });

  it('a failing before-hook aborts with exit 1 and nothing changed', async () => {
    await configure('echo stopping; exit 4', 'echo after >> hooks.log');
    const r = await sb.run(['clear', '--yes']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('E_HOOK_FAILED');
    expect(r.stderr).toContain('exit code 4');
    expect(r.stderr).toContain('nothing was changed');
    expect(await sb.backupFiles()).toEqual([]);
    expect((await sb.json<{ users: number }>(['stats'])).doc.users).toBe(200);
    // The after-hook still brings back whatever the failed before-hook stopped.
    expect(await fsp.readFile(log, 'utf8')).toBe('after\n');
  });

  it('a failing after-hook after a successful delete shows the result and exits 1', async () => {
    await configure('true', 'exit 3');
    const r = await sb.run(['delete', JOKO, '--yes']);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('Deleted 1 user');
    expect(r.stderr).toContain('hooks.afterWrite');
  });
});
