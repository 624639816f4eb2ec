import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { exitCodeFor, CLIError } from '../../src/cli/errors.js';
import { OpsError, StoreError } from '../../src/errors.js';
import { cleanEnv, FIXTURES, runCli, sandbox, type Sandbox } from './helpers.js';

describe('exit codes', () => {
  it('maps error codes: 3 not found, 2 usage or refused, 1 otherwise', () => {
    expect(exitCodeFor(new OpsError('E_UNKNOWN_USER', 'x'))).toBe(3);
    expect(exitCodeFor(new CLIError('E_BACKUP_NOT_FOUND', 'x'))).toBe(3);
    expect(exitCodeFor(new StoreError('E_STORE_URL', 'x'))).toBe(2);
    expect(exitCodeFor(new CLIError('E_CONFIRM_REQUIRED', 'x'))).toBe(2);
    expect(exitCodeFor(new CLIError('E_CANCELLED', 'x'))).toBe(2);
    expect(exitCodeFor(new StoreError('E_STORE_LOCKED', 'x'))).toBe(1);
    expect(exitCodeFor(new Error('boom'))).toBe(1);
  });
});

describe('runMain basics', () => {
  let sb: Sandbox;
  beforeEach(async () => {
    sb = await sandbox('sqlite');
  });
  afterEach(async () => {
    await sb.cleanup();
  });

  it('prints the version and help', async () => {
    const v = await sb.run(['--version']);
    expect(v.code).toBe(0);
    expect(v.stdout).toMatch(/^chatmem \d+\.\d+\.\d+\n$/);
    const h = await sb.run(['--help']);
    expect(h.code).toBe(0);
    expect(h.stdout).toContain('Exit codes:');
    for (const cmd of ['users', 'show', 'stats', 'delete', 'clear', 'backup', 'backups', 'verify', 'diff', 'restore', 'prune', 'audit', 'import', 'export', 'serve', 'start', 'stop', 'status']) {
      expect(h.stdout).toMatch(new RegExp(`^  ${cmd} `, 'm'));
    }
    const dh = await sb.run(['delete', '--help']);
    expect(dh.stdout).toContain('Usage: chatmem delete USER... [--full-backup]');
    expect(dh.stdout).toContain('--full-backup');
    const ph = await sb.run(['help', 'prune']);
    expect(ph.stdout).toContain('--keep-within-daily DURATION');
  });

  it('without arguments and without a terminal prints help and exits 2', async () => {
    const r = await sb.run([]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain('Usage: chatmem');
    expect(r.stderr).toContain('E_USAGE');
  });

  it('bad arguments exit 2 with one error line and no stack', async () => {
    for (const args of [['frobnicate'], ['users', '--frob'], ['show'], ['show', 'a', 'b'], ['users', '--limit', 'x'], ['prune', '--keep-last', '-5'], ['audit', '--since', 'yesterday']]) {
      const r = await sb.run(args);
      expect(r.code, args.join(' ')).toBe(2);
      const lines = r.stderr.trim().split('\n');
      expect(lines, args.join(' ')).toHaveLength(1);
      expect(lines[0]).toMatch(/^chatmem: error E_[A-Z_]+: /);
    }
  });

  it('an invalid store URL or config is a usage error (2)', async () => {
    const r = await sb.run(['users', '--store', 'mysql://x']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('E_STORE_URL');
    await fsp.writeFile(path.join(sb.dir, 'bad.json'), '{ nope');
    const c = await sb.run(['users', '--config', 'bad.json']);
    expect(c.code).toBe(2);
    expect(c.stderr).toContain('E_CONFIG');
  });

  it('shows a stack trace only with --debug', async () => {
    const plain = await sb.run(['show', 'nobody']);
    expect(plain.code).toBe(3);
    expect(plain.stderr).not.toMatch(/\n\s+at /);
    const debug = await sb.run(['show', 'nobody', '--debug']);
    expect(debug.code).toBe(3);
    expect(debug.stderr).toMatch(/\n\s+at /);
  });

  it('users lists id, name, product, created and messages; --search filters', async () => {
    const r = await sb.run(['users']);
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^USER ID\s+NAME\s+PRODUCT\s+CREATED\s+MESSAGES$/);
    expect(lines).toHaveLength(202);
    expect(lines.at(-1)).toBe('200 users');
    expect(r.stdout).toMatch(/628161973069\s+Joko Santoso\s+Electronic Air Cleaner\s+2025-11-20 01:01\s+8\n/);

    const { doc } = await sb.json<{ users: { user_id: string; messages: number }[]; count: number }>(['users']);
    expect(doc.count).toBe(200);
    expect(doc.users).toHaveLength(200);
    expect(doc.users.find((u) => u.user_id === '628161973069')?.messages).toBe(8);

    const s = await sb.json<{ users: { user_id: string }[] }>(['users', '--search', 'gosong']);
    expect(s.code).toBe(0);
    expect(s.doc.users.length).toBeGreaterThan(0);
    expect(s.doc.users.length).toBeLessThan(200);
  });

  it('show prints a record; unknown user exits 3 with a JSON error on stdout', async () => {
    const r = await sb.run(['show', '628161973069', '--history', '2']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('Joko Santoso');
    expect(r.stdout).toContain('History (last 2 of 8)');
    const j = await sb.json<{ user: { history: unknown[] }; messages: number }>(['show', '628161973069', '--history', '3']);
    expect(j.doc.user.history).toHaveLength(3);
    expect(j.doc.messages).toBe(8);
    const missing = await sb.json<{ error: { code: string; message: string } }>(['show', 'nobody']);
    expect(missing.code).toBe(3);
    expect(missing.doc.error.code).toBe('E_UNKNOWN_USER');
    expect(missing.stderr).toContain('chatmem: error E_UNKNOWN_USER');
  });

  it('stats reports users, messages, sizes, backups and free disk', async () => {
    const { code, doc } = await sb.json<{
      users: number;
      messages: number;
      bytes: number;
      lastUpdate: string;
      backups: { count: number; bytes: number };
      disk: { free: number };
    }>(['stats']);
    expect(code).toBe(0);
    expect(doc.users).toBe(200);
    expect(doc.messages).toBeGreaterThan(200);
    expect(doc.bytes).toBeGreaterThan(0);
    expect(doc.lastUpdate).toMatch(/^2025-/);
    expect(doc.backups).toMatchObject({ count: 0, bytes: 0 });
    expect(doc.disk.free).toBeGreaterThan(0);
    const human = await sb.run(['stats']);
    expect(human.stdout).toMatch(/Users\s+200/);
    expect(human.stdout).toContain('Free disk');
  });

  it('reads CHATMEM_* env and chatmem.config.json; flags win', async () => {
    const other = path.join(sb.dir, 'other.db');
    // One user, from the seed's per-user backup.
    const seeded = await runCli(['import', path.join(FIXTURES, 'backups', 'memory_backup_628161973069_20251125_140002.json'), '--store', `sqlite:${other}`], { cwd: sb.dir, env: cleanEnv() });
    expect(seeded.code, seeded.stderr).toBe(0);
    await fsp.writeFile(path.join(sb.dir, 'chatmem.config.json'), JSON.stringify({ store: `sqlite:${other}` }));
    const fromConfig = await runCli(['stats', '--json'], { cwd: sb.dir, env: cleanEnv() });
    expect(JSON.parse(fromConfig.stdout)).toMatchObject({ users: 1, store: `sqlite:${other}` });
    const fromEnv = await runCli(['stats', '--json'], { cwd: sb.dir, env: cleanEnv({ CHATMEM_STORE: sb.storeUrl }) });
    expect(JSON.parse(fromEnv.stdout)).toMatchObject({ users: 200 });
    const fromFlag = await runCli(['stats', '--json', '--store', `sqlite:${other}`], { cwd: sb.dir, env: cleanEnv({ CHATMEM_STORE: sb.storeUrl }) });
    expect(JSON.parse(fromFlag.stdout)).toMatchObject({ users: 1 });
  });

  it('colours only on a terminal and never with NO_COLOR', async () => {
    const r = await sb.run(['users', '--limit', '2'], { isTTY: true });
    // PassThrough streams are not terminals.
    expect(r.stdout).not.toContain('\x1b[');
    const noColor = await sb.run(['users', '--limit', '2'], { isTTY: true, env: cleanEnv({ CHATMEM_STORE: sb.storeUrl, NO_COLOR: '1' }) });
    expect(noColor.stdout).not.toContain('\x1b[');
  });

  it('points at a seed memory.json next to the default store', async () => {
    const seedDir = path.join(sb.dir, 'seed');
    await fsp.mkdir(path.join(seedDir, 'data', 'storage'), { recursive: true });
    await fsp.copyFile(path.join(FIXTURES, 'memory.json'), path.join(seedDir, 'data', 'storage', 'memory.json'));
    // The default store does not exist yet: a read does not create it, and says how to.
    const r = await runCli(['stats'], { cwd: seedDir, env: cleanEnv() });
    expect(r.code).toBe(3);
    expect(r.stderr).toContain('chatmem import data/storage/memory.json');
    expect(r.stderr).toContain('E_STORE_NOT_FOUND');
    const j = await runCli(['stats', '--json'], { cwd: seedDir, env: cleanEnv() });
    expect(JSON.parse(j.stdout)).toMatchObject({ error: { code: 'E_STORE_NOT_FOUND' } });
    expect(j.stderr).not.toContain('note:');
    const imported = await runCli(['import', 'data/storage/memory.json'], { cwd: seedDir, env: cleanEnv() });
    expect(imported.code).toBe(0);
    expect(imported.stdout).toContain('Imported 200 users');
  });
});
