import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { resolveConfig } from '../../src/config.js';
import { daemonMemoFile } from '../../src/server/daemon-info.js';
import { serve } from '../../src/server/serve.js';
import { BIN, cleanEnv, ensureBuilt, FIXTURES, runCli, sandbox, type Sandbox } from './helpers.js';

const JOKO = '628161973069';

describe('a store path that does not exist', () => {
  let sb: Sandbox;
  beforeEach(async () => {
    sb = await sandbox('json');
  });
  afterEach(async () => {
    await sb.cleanup();
  });

  it('read and delete commands exit 3 with E_STORE_NOT_FOUND, name the path and the similar file, and create nothing', async () => {
    const typo = path.join(sb.dir, 'data', 'storage', 'memroy.json');
    for (const args of [['users'], ['show', JOKO], ['stats'], ['export'], ['delete', JOKO, '--yes'], ['clear', '--yes'], ['backup'], ['diff', 'memory_backup_20251125_132811']]) {
      const r = await sb.run([...args, '--store', 'json:data/storage/memroy.json']);
      expect(r.code, args.join(' ')).toBe(3);
      expect(r.stdout, args.join(' ')).toBe('');
      expect(r.stderr, args.join(' ')).toBe(
        `chatmem: error E_STORE_NOT_FOUND: no store at ${typo} (json, from --store); this command does not create one (did you mean "json:data/storage/memory.json"?)\n`,
      );
    }
    expect(existsSync(typo)).toBe(false);
    expect(existsSync(`${typo}.owner`)).toBe(false);
    expect(await sb.backupFiles()).toEqual([]);
    // The real store is untouched.
    expect((await sb.json<{ users: number }>(['stats'])).doc.users).toBe(200);
  });

  it('names the source (CHATMEM_STORE, the config file) and says when the directory is missing too', async () => {
    const fromEnv = await runCli(['stats', '--json'], { cwd: sb.dir, env: cleanEnv({ CHATMEM_STORE: 'sqlite:nowhere/memory.db' }) });
    expect(fromEnv.code).toBe(3);
    const err = (JSON.parse(fromEnv.stdout) as { error: { code: string; message: string } }).error;
    expect(err.code).toBe('E_STORE_NOT_FOUND');
    expect(err.message).toContain(`no store at ${path.join(sb.dir, 'nowhere', 'memory.db')} (sqlite, from CHATMEM_STORE); the directory nowhere does not exist either`);
    await fsp.writeFile(path.join(sb.dir, 'chatmem.config.json'), JSON.stringify({ store: 'json:data/storage/Memory.json' }));
    const fromConfig = await runCli(['users'], { cwd: sb.dir, env: cleanEnv() });
    expect(fromConfig.code).toBe(3);
    expect(fromConfig.stderr).toContain('(json, from the config file)');
    expect(fromConfig.stderr).toContain('did you mean "json:data/storage/memory.json"?');
  });

  it('import and restore may create a store; backups, verify and audit do not need one', async () => {
    const fresh = 'json:data/storage/fresh.json';
    const listed = await sb.run(['backups', '--store', fresh, '--backup-dir', path.join(FIXTURES, 'backups')]);
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stdout).toContain('memory_backup_20251125_132811');
    expect((await sb.run(['verify', '--store', fresh])).code).toBe(0);
    expect((await sb.run(['audit', '--store', fresh])).code).toBe(0);
    expect(existsSync(path.join(sb.dir, 'data', 'storage', 'fresh.json'))).toBe(false);

    const imported = await sb.run(['import', path.join(FIXTURES, 'memory.json'), '--store', fresh]);
    expect(imported.code, imported.stderr).toBe(0);
    expect(imported.stderr).toContain(`json:${path.join(sb.dir, 'data', 'storage', 'fresh.json')} does not exist yet; this command creates it`);
    expect(existsSync(path.join(sb.dir, 'data', 'storage', 'fresh.json'))).toBe(true);

    // Disaster recovery: the store file is gone, its backup is not.
    await sb.run(['backup', '--store', fresh]);
    const [backupName] = await sb.backupFiles();
    await fsp.rm(path.join(sb.dir, 'data', 'storage', 'fresh.json'));
    const restored = await sb.run(['restore', (backupName ?? '').replace(/\.json$/, ''), '--yes', '--store', fresh]);
    expect(restored.code, restored.stderr).toBe(0);
    expect((await sb.json<{ users: number }>(['stats', '--store', fresh])).doc.users).toBe(200);
  });
});

describe('typos in commands and backup ids', () => {
  let sb: Sandbox;
  let backupId: string;
  beforeEach(async () => {
    sb = await sandbox('sqlite');
    const r = await sb.json<{ backup: string }>(['backup']);
    backupId = r.doc.backup;
  });
  afterEach(async () => {
    await sb.cleanup();
  });

  it('a mistyped --backup-dir is pointed out when it lists nothing', async () => {
    const r = await sb.run(['backups', '--backup-dir', 'data/storage/bakups']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('No backups in');
    expect(r.stderr).toContain(`note: ${path.join(sb.dir, 'data', 'storage', 'bakups')} does not exist (did you mean "backups"?)`);
  });

  it('an unknown command gets a did-you-mean and exit 2', async () => {
    for (const [typo, meant] of [['delte', 'delete'], ['stat', 'stats'], ['backpus', 'backups'], ['restroe', 'restore'], ['Users', 'users']]) {
      const r = await sb.run([typo ?? '', 'x']);
      expect(r.code, typo).toBe(2);
      expect(r.stderr, typo).toBe(`chatmem: error E_USAGE: unknown command "${typo}" (did you mean \`chatmem ${meant}\`?) (see \`chatmem --help\`)\n`);
    }
    const far = await sb.run(['frobnicate']);
    expect(far.stderr).not.toContain('did you mean');
  });

  it('a backup id may be a path inside the backup directory, with or without extension, relative or absolute', async () => {
    const rel = path.relative(sb.dir, sb.backupDir);
    for (const arg of [`${rel}/${backupId}.json`, `${rel}/${backupId}`, path.join(sb.backupDir, `${backupId}.json`), `./${rel}/../backups/${backupId}.json`]) {
      const show = await sb.json<{ backup: { id: string } }>(['backups', 'show', arg]);
      expect(show.code, `${arg}: ${show.stderr}`).toBe(0);
      expect(show.doc.backup.id).toBe(backupId);
      const verify = await sb.json<{ ok: boolean; results: { id: string }[] }>(['verify', arg]);
      expect(verify.doc.results.map((r) => r.id), arg).toEqual([backupId]);
    }
    const restore = await sb.json<{ dryRun: boolean }>(['restore', `${rel}/${backupId}.json`, '--dry-run']);
    expect(restore.code, restore.stderr).toBe(0);
    const diff = await sb.json<{ a: string; unchanged: number }>(['diff', `${rel}/${backupId}.json`]);
    expect(diff.code, diff.stderr).toBe(0);
    expect(diff.doc.a).toBe(`${backupId}.json`);
  });

  it('a path outside the backup directory is still refused with E_BACKUP_ID', async () => {
    const outside = path.join(sb.dir, `${backupId}.json`);
    await fsp.copyFile(path.join(sb.backupDir, `${backupId}.json`), outside);
    for (const arg of [outside, `${backupId}.json`.replace(/^/, './'), `../${path.basename(sb.dir)}/${backupId}.json`, path.join(FIXTURES, 'backups', 'memory_backup_20251125_132811.json')]) {
      const r = await sb.run(['restore', arg, '--yes']);
      expect(r.code, arg).toBe(2);
      expect(r.stderr, arg).toMatch(/^chatmem: error E_BACKUP_ID: invalid backup id .* is not in the backup directory /);
    }
  });
});

describe('hooks and a daemon', () => {
  let sb: Sandbox;
  let server: { url: string; close(): Promise<void> } | null = null;
  beforeEach(async () => {
    sb = await sandbox('json');
    const marker = (name: string) => `echo "$CHATMEM_ACTION" >> ${name}`;
    await fsp.writeFile(path.join(sb.dir, 'chatmem.config.json'), JSON.stringify({ hooks: { beforeWrite: marker('before.marker'), afterWrite: marker('after.marker') } }));
  });
  afterEach(async () => {
    await server?.close();
    server = null;
    await sb.cleanup();
  });

  it('are not run when the command goes through the daemon, and the operator is told', async () => {
    const config = await resolveConfig({ store: sb.storeUrl, cwd: sb.dir, env: cleanEnv() });
    server = await serve(config, { port: 0, logger: false, handleSignals: false, log: () => undefined, env: cleanEnv() });
    for (const args of [['delete', JOKO, '--yes'], ['restore', '', '--yes'], ['clear', '--yes']]) {
      if (args[0] === 'restore') args[1] = (await sb.backupFiles())[0]?.replace(/\.json$/, '') ?? '';
      const r = await sb.run(args);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(0);
      expect(r.stderr).toContain(`via daemon at ${server.url}`);
      expect(r.stderr).toContain(`not running the hooks (hooks.beforeWrite / hooks.afterWrite): the daemon at ${server.url} serves the store`);
    }
    expect(existsSync(path.join(sb.dir, 'before.marker'))).toBe(false);
    expect(existsSync(path.join(sb.dir, 'after.marker'))).toBe(false);
  });

  it('still run around a local change (the same config, no daemon)', async () => {
    const r = await sb.run(['delete', JOKO, '--yes']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).not.toContain('not running the hooks');
    expect(await fsp.readFile(path.join(sb.dir, 'before.marker'), 'utf8')).toBe('delete\n');
    expect(await fsp.readFile(path.join(sb.dir, 'after.marker'), 'utf8')).toBe('delete\n');
  });
});

describe('the store of a daemon started with chatmem start is remembered', () => {
  let sb: Sandbox;
  beforeAll(async () => {
    await ensureBuilt();
  }, 120_000);
  beforeEach(async () => {
    sb = await sandbox('json');
  });
  afterEach(async () => {
    spawnSync(process.execPath, [BIN, 'stop', '--store', sb.storeUrl], { cwd: sb.dir, env: cleanEnv(), timeout: 20_000 });
    await sb.cleanup();
  });

  // The operator's shell: no CHATMEM_STORE, no config file.
  const plain = (args: string[]) => runCli(args, { cwd: sb.dir, env: cleanEnv() });

  it('status, stats and delete act on it without --store, say so, and stop forgets it', async () => {
    // A store outside data/storage, so the default store (data/storage/memory.db) is a different one.
    const store = path.join(sb.dir, 'bot', 'memory.json');
    await fsp.mkdir(path.dirname(store));
    await fsp.rename(sb.storeFile, store);
    const started = spawnSync(process.execPath, [BIN, 'start', '--store', 'json:bot/memory.json', '--port', '0', '--json'], { cwd: sb.dir, env: cleanEnv(), encoding: 'utf8', timeout: 30_000 });
    expect(started.status, started.stderr).toBe(0);
    const { api, pid } = JSON.parse(started.stdout) as { api: string; pid: number };
    expect(existsSync(path.join(sb.dir, 'data', 'chatmem.daemon.json'))).toBe(true);
    expect((await fsp.stat(path.join(sb.dir, 'data', 'chatmem.daemon.json'))).mode & 0o777).toBe(0o600);

    const status = await plain(['status']);
    expect(status.code, status.stderr).toBe(0);
    expect(status.stdout).toMatch(new RegExp(`Store\\s+json:${store}`));
    expect(status.stderr).toContain(`using json:${store}, the store of the daemon started with \`chatmem start\` (pid ${pid})`);

    const stats = await plain(['stats']);
    expect(stats.code, stats.stderr).toBe(0);
    expect(stats.stdout).toMatch(new RegExp(`Store\\s+json:${store}`));
    expect(stats.stdout).toMatch(/Users\s+200/);

    const del = await plain(['delete', JOKO, '--yes']);
    expect(del.code, del.stderr).toBe(0);
    expect(del.stderr).toContain(`via daemon at ${api}`);
    expect(del.stdout).toContain(`Deleted 1 user from json:${store}`);
    expect(del.stdout).toContain(`Backup: ${path.join(sb.dir, 'bot', 'backups')}`);

    // A store named explicitly wins, with a note about the daemon's.
    const other = await runCli(['stats', '--store', sb.storeUrl.replace('memory.json', 'other.json')], { cwd: sb.dir, env: cleanEnv() });
    expect(other.code).toBe(3);
    expect(other.stderr).toContain(`the daemon started with \`chatmem start\` (pid ${pid}) serves json:${store}`);

    const stopped = await plain(['stop']);
    expect(stopped.code, stopped.stderr).toBe(0);
    expect(stopped.stdout).toContain(`Stopped the chatmem daemon (pid ${pid})`);
    const config = await resolveConfig({ cwd: sb.dir, env: cleanEnv() });
    expect(existsSync(daemonMemoFile(config))).toBe(false);
    // Forgotten: the default store again, which has no daemon.
    const after = await plain(['status']);
    expect(after.code).toBe(3);
    expect(after.stdout).toContain('data/storage/memory.db');
    const memory = JSON.parse(await fsp.readFile(store, 'utf8')) as Record<string, unknown>;
    expect(Object.keys(memory)).toHaveLength(199);
  });
});
