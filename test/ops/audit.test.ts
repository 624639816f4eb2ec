import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import ts from 'typescript';
import { AUDIT_ACTIONS, AuditLog, currentOsActor, resolveAuditAction, type Actor, type AuditEntry } from '../../src/ops/audit.js';
import { OpsError } from '../../src/errors.js';
import { Operations } from '../../src/ops/operations.js';
import { SqliteDriver } from '../../src/store/sqlite/index.js';
import { createStore } from '../../src/store/store.js';
import type { Store } from '../../src/store/types.js';
import { FIXTURES } from '../helpers/tmp.js';
import { loadFixture } from '../store/conformance.js';

const ISO_MS_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const alice: Actor = { kind: 'os', name: 'alice' };
const apiBot: Actor = { kind: 'api', name: 'ci-token', remote: '10.0.0.7' };

let dir: string;
let file: string;

beforeEach(async () => {
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'chatmem-audit-'));
  file = path.join(dir, 'audit.log');
});

afterEach(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

async function rawLines(f: string): Promise<string[]> {
  const text = await fsp.readFile(f, 'utf8');
  return text.split('\n').filter((l) => l !== '');
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('expected the promise to reject');
}

describe('currentOsActor', () => {
  it('names the OS user', () => {
    const actor = currentOsActor();
    expect(actor.kind).toBe('os');
    expect(actor.name.length).toBeGreaterThan(0);
  });
});

describe('AuditLog file and modes', () => {
  it('creates a missing directory 0700 and the file 0600', async () => {
    const nested = path.join(dir, 'data', 'storage', 'audit.log');
    const log = new AuditLog(nested);
    expect(log.file).toBe(nested);
    await log.append({ actor: alice, action: 'backup', outcome: 'done' });
    expect((await fsp.stat(path.join(dir, 'data', 'storage'))).mode & 0o777).toBe(0o700);
    expect((await fsp.stat(path.join(dir, 'data'))).mode & 0o777).toBe(0o700);
    expect((await fsp.stat(nested)).mode & 0o777).toBe(0o600);
  });

  it('tightens an existing world-readable log to 0600', async () => {
    await fsp.writeFile(file, '', { mode: 0o644 });
    await fsp.chmod(file, 0o644);
    await new AuditLog(file).append({ actor: alice, action: 'backup', outcome: 'done' });
    expect((await fsp.stat(file)).mode & 0o777).toBe(0o600);
  });

  it('reads a missing file as empty', async () => {
    const log = new AuditLog(path.join(dir, 'nope', 'audit.log'));
    expect(await log.read()).toEqual([]);
    expect(await log.unfinished()).toEqual([]);
  });

  it('wraps fs failures as E_AUDIT_WRITE with the cause', async () => {
    const notADir = path.join(dir, 'plain-file');
    await fsp.writeFile(notADir, 'x');
    const err = await rejection(
      new AuditLog(path.join(notADir, 'audit.log')).append({ actor: alice, action: 'backup', outcome: 'done' }),
    );
    expect(err).toBeInstanceOf(OpsError);
    expect((err as OpsError).code).toBe('E_AUDIT_WRITE');
    expect(((err as OpsError).cause as NodeJS.ErrnoException).code).toBe('ENOTDIR');
  });
});

describe('append and read', () => {
  it('round-trips an entry as one JSON line', async () => {
    const log = new AuditLog(file);
    const written = await log.append({
      actor: apiBot,
      action: 'delete-users',
      userIds: ['u1', 'u2'],
      backup: 'b-1',
      outcome: 'refused',
      details: { reason: 'no confirmation', count: 2 },
    });
    expect(written.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(written.op).toBe(written.id);
    expect(written.time).toMatch(ISO_MS_UTC);
    expect(await log.read()).toEqual([written]);
    const lines = await rawLines(file);
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0] ?? '')).toEqual(written);
  });

  it('normalises an explicit time to UTC with milliseconds and keeps an explicit op', async () => {
    const log = new AuditLog(file);
    const e = await log.append({
      op: 'op-1',
      time: '2024-01-01T00:00:00+02:00',
      actor: alice,
      action: 'restore',
      outcome: 'interrupted',
    });
    expect(e.time).toBe('2023-12-31T22:00:00.000Z');
    expect(e.op).toBe('op-1');
    const err = await rejection(log.append({ time: 'yesterday', actor: alice, action: 'restore', outcome: 'done' }));
    expect((err as OpsError).code).toBe('E_AUDIT_WRITE');
  });

  it('filters by since, user, action, op and limit', async () => {
    const log = new AuditLog(file);
    const a = await log.append({ time: '2024-01-01T00:00:00.000Z', actor: alice, action: 'delete-users', userIds: ['u1'], outcome: 'done' });
    const b = await log.append({ time: '2024-02-01T00:00:00.000Z', actor: alice, action: 'backup', outcome: 'done' });
    const c = await log.append({ time: '2024-03-01T00:00:00.000Z', actor: apiBot, action: 'delete-users', userIds: ['u1', 'u2'], outcome: 'done' });
    const d = await log.append({ time: '2024-04-01T00:00:00.000Z', actor: apiBot, action: 'clear-all', outcome: 'refused' });

    expect(await log.read({ since: new Date('2024-02-01T00:00:00.000Z') })).toEqual([b, c, d]);
    expect(await log.read({ user: 'u1' })).toEqual([a, c]);
    expect(await log.read({ user: 'u2' })).toEqual([c]);
    expect(await log.read({ action: 'delete-users' })).toEqual([a, c]);
    expect(await log.read({ op: d.op })).toEqual([d]);
    expect(await log.read({ limit: 2 })).toEqual([c, d]);
    expect(await log.read({ user: 'u1', limit: 1 })).toEqual([c]);
    expect(await log.read({ action: 'delete-users', since: new Date('2024-01-15T00:00:00.000Z') })).toEqual([c]);
    expect(await log.read({ limit: 0 })).toEqual([]);
    expect(await log.read({ limit: 10 })).toEqual([a, b, c, d]);
  });

  it('masks passwords in URLs and secret-named detail keys', async () => {
    const log = new AuditLog(file);
    const e = await log.append({
      actor: apiBot,
      action: 'import',
      outcome: 'done',
      details: { store: 'postgres://app:hunter2@db:5432/chatmem', nested: { token: 'sk-live-123', tokenName: 'ci-token' } },
    });
    expect(e.details).toEqual({ store: 'postgres://app:***@db:5432/chatmem', nested: { token: '[redacted]', tokenName: 'ci-token' } });
    const text = await fsp.readFile(file, 'utf8');
    expect(text).not.toContain('hunter2');
    expect(text).not.toContain('sk-live-123');
  });

  it('keeps 200 concurrent appends from one process as 200 intact lines', async () => {
    const log = new AuditLog(file);
    const written = await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        log.append({ actor: alice, action: 'import', outcome: 'done', userIds: [`u${i}`], details: { i, pad: 'x'.repeat(2000 + i) } }),
      ),
    );
    const lines = await rawLines(file);
    expect(lines).toHaveLength(200);
    const parsed = lines.map((l) => JSON.parse(l) as AuditEntry);
    expect(new Set(parsed.map((e) => e.id)).size).toBe(200);
    expect(parsed.map((e) => e.details?.i).sort((x, y) => Number(x) - Number(y))).toEqual(Array.from({ length: 200 }, (_, i) => i));
    expect(await log.read()).toHaveLength(200);
    expect(new Set(written.map((e) => e.id))).toEqual(new Set(parsed.map((e) => e.id)));
  });
});

describe('torn and malformed lines', () => {
  it('skips a torn last line', async () => {
    const log = new AuditLog(file);
    const a = await log.append({ actor: alice, action: 'backup', outcome: 'done' });
    const b = await log.append({ actor: alice, action: 'prune', outcome: 'done' });
    await fsp.appendFile(file, '{"id":"7b3e","op":"7b3e","time":"2024-');
    expect(await log.read()).toEqual([a, b]);
  });

  it('throws E_AUDIT_PARSE naming file and line for a malformed middle line', async () => {
    const log = new AuditLog(file);
    await log.append({ actor: alice, action: 'backup', outcome: 'done' });
    await fsp.appendFile(file, 'this is not json\n');
    await log.append({ actor: alice, action: 'prune', outcome: 'done' });
    const err = await rejection(log.read());
    expect(err).toBeInstanceOf(OpsError);
    expect((err as OpsError).code).toBe('E_AUDIT_PARSE');
    expect((err as OpsError).details).toEqual({ file, line: 2 });
    expect((err as OpsError).message).toContain(`${file}:2`);
    expect((await rejection(log.unfinished())) as OpsError).toMatchObject({ code: 'E_AUDIT_PARSE' });
  });

  it('rejects a well-formed JSON line that is not an entry', async () => {
    const log = new AuditLog(file);
    await log.append({ actor: alice, action: 'backup', outcome: 'done' });
    await fsp.appendFile(file, '{"id":"x","op":"x","time":"2024-01-01T00:00:00.000Z","action":"a","outcome":"maybe","actor":{"kind":"os","name":"a"}}\n');
    await log.append({ actor: alice, action: 'backup', outcome: 'done' });
    expect(await rejection(log.read())).toMatchObject({ code: 'E_AUDIT_PARSE', details: { file, line: 2 } });
  });

  it('throws for a malformed last line that is newline-terminated (a complete bad write, not a torn one)', async () => {
    const log = new AuditLog(file);
    await log.append({ actor: alice, action: 'backup', outcome: 'done' });
    await fsp.appendFile(file, '{"id":\n');
    expect(await rejection(log.read())).toMatchObject({ code: 'E_AUDIT_PARSE', details: { line: 2 } });
  });

  it('keeps an entry appended right after a torn fragment and drops the fragment', async () => {
    const log = new AuditLog(file);
    const a = await log.append({ actor: alice, action: 'backup', outcome: 'done' });
    // The fragment holds a nested object starting like an entry, which must not be mistaken for one.
    await fsp.appendFile(file, '{"id":"torn","op":"torn","details":{"target":{"id":"u1"},"n":');
    const b = await log.append({ actor: alice, action: 'prune', outcome: 'done', details: { target: { id: 'u2' } } });
    const c = await log.append({ actor: alice, action: 'prune', outcome: 'done' });
    const lines = await rawLines(file);
    expect(lines).toHaveLength(3);
    expect(lines[1]?.startsWith('{"id":"torn"')).toBe(true);
    expect(await log.read()).toEqual([a, b, c]);
  });

  it('keeps a whole entry that only lost its newline, and the entry glued onto it', async () => {
    const log = new AuditLog(file);
    const a = await log.append({ actor: alice, action: 'backup', outcome: 'done' });
    const text = await fsp.readFile(file, 'utf8');
    await fsp.writeFile(file, text.slice(0, -1));
    const b = await log.append({ actor: alice, action: 'prune', outcome: 'done' });
    expect(await rawLines(file)).toHaveLength(1);
    expect(await log.read()).toEqual([a, b]);
  });

  it('skips a torn tail of NUL bytes (extended file, data lost in a crash)', async () => {
    const log = new AuditLog(file);
    const a = await log.append({ actor: alice, action: 'backup', outcome: 'done' });
    await fsp.appendFile(file, Buffer.alloc(300));
    expect(await log.read()).toEqual([a]);
    const b = await log.append({ actor: alice, action: 'prune', outcome: 'done' });
    expect(await log.read()).toEqual([a, b]);
  });

  it('writes entries with id first and a fixed key order', async () => {
    const log = new AuditLog(file);
    await log.append({ details: { x: 1 }, outcome: 'done', action: 'backup', actor: alice, backup: 'b1' });
    const line = (await rawLines(file))[0] ?? '';
    expect(line.startsWith('{"id":"')).toBe(true);
    expect(Object.keys(JSON.parse(line) as object)).toEqual(['id', 'op', 'time', 'actor', 'action', 'backup', 'outcome', 'details']);
  });

  it('does not treat a hand-inserted bad line followed by a normal entry as torn', async () => {
    const log = new AuditLog(file);
    await log.append({ actor: alice, action: 'backup', outcome: 'done' });
    await fsp.appendFile(file, '{"id":"torn"\n');
    await log.append({ actor: alice, action: 'backup', outcome: 'done' });
    await log.append({ actor: alice, action: 'backup', outcome: 'done' });
    expect(await rejection(log.read())).toMatchObject({ code: 'E_AUDIT_PARSE', details: { line: 2 } });
  });
});

describe('operations', () => {
  it('links started and done entries with durationMs, backup and userIds', async () => {
    const log = new AuditLog(file);
    const op = await log.begin('delete-users', apiBot, { userIds: ['u1', 'u2'], details: { dryRun: false } });
    expect(op.started).toMatchObject({ op: op.op, id: op.op, action: 'delete-users', outcome: 'started', actor: apiBot, userIds: ['u1', 'u2'] });
    expect(op.started.time).toMatch(ISO_MS_UTC);
    op.setBackup('bk-42');
    await new Promise((r) => setTimeout(r, 30));
    const done = await op.finish({ userIds: ['u1'], details: { deleted: 1 } });
    expect(done).toMatchObject({ op: op.op, action: 'delete-users', outcome: 'done', actor: apiBot, backup: 'bk-42', userIds: ['u1'], details: { deleted: 1 } });
    expect(done.id).not.toBe(op.op);
    expect(done.durationMs).toBeGreaterThanOrEqual(25);
    expect(await log.read({ op: op.op })).toEqual([op.started, done]);
    expect(await log.unfinished()).toEqual([]);
  });

  it('records failures with the error code and refuses a second ending', async () => {
    const log = new AuditLog(file);

    const a = await log.begin('restore', alice, { userIds: ['u9'] });
    const failedA = await a.fail(new OpsError('E_OPS_CONFIRM', 'not confirmed'), { backup: 'bk-1' });
    expect(failedA).toMatchObject({ op: a.op, outcome: 'failed', userIds: ['u9'], backup: 'bk-1', error: { code: 'E_OPS_CONFIRM', message: 'not confirmed' } });
    expect(typeof failedA.durationMs).toBe('number');
    expect((await rejection(a.finish())) as OpsError).toMatchObject({ code: 'E_AUDIT_WRITE' });

    const b = await log.begin('import', alice);
    const enoent = await rejection(fsp.readFile(path.join(dir, 'missing.jsonl')));
    expect((await b.fail(enoent)).error?.code).toBe('ENOENT');

    const c = await log.begin('prune', alice);
    const failedC = await c.fail('boom');
    expect(failedC.error).toEqual({ code: 'E_UNKNOWN', message: 'boom' });
    expect(failedC.userIds).toBeUndefined();

    const d = await log.begin('import', alice);
    const failedD = await d.fail(new Error('connect postgres://app:hunter2@db/chatmem refused'));
    expect(failedD.error?.message).toBe('connect postgres://app:***@db/chatmem refused');
    expect(await fsp.readFile(file, 'utf8')).not.toContain('hunter2');
  });

  it('reports operations without a done, failed or interrupted entry as unfinished', async () => {
    const log = new AuditLog(file);
    const done = await log.begin('backup', alice);
    await done.finish({ backup: 'bk-1' });
    const crashed = await log.begin('clear-all', alice, { userIds: ['u1'] });
    const failed = await log.begin('restore', alice);
    await failed.fail(new Error('x'));
    const interrupted = await log.begin('delete-users', alice, { userIds: ['u2'] });
    await log.append({ op: interrupted.op, actor: currentOsActor(), action: 'delete-users', outcome: 'interrupted' });
    await log.append({ actor: alice, action: 'auth-failed', outcome: 'refused' });

    expect(await log.unfinished()).toEqual([crashed.started]);
  });
});

describe('two processes appending to one log', () => {
  /** Transpiles the module and its relative imports so plain `node` children run the real implementation. */
  async function compileForNode(entry: string, outDir: string): Promise<string> {
    const srcRoot = fileURLToPath(new URL('../../src/', import.meta.url));
    const seen = new Set<string>();
    const queue = [path.join(srcRoot, entry)];
    while (queue.length > 0) {
      const tsFile = queue.pop();
      if (tsFile === undefined || seen.has(tsFile)) continue;
      seen.add(tsFile);
      const source = await fsp.readFile(tsFile, 'utf8');
      const js = ts.transpileModule(source, {
        compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022, verbatimModuleSyntax: true },
      }).outputText;
      const out = path.join(outDir, path.relative(srcRoot, tsFile)).replace(/\.ts$/, '.js');
      await fsp.mkdir(path.dirname(out), { recursive: true });
      await fsp.writeFile(out, js);
      for (const m of source.matchAll(/from '(\.{1,2}\/[^']+)\.js'/g)) {
        queue.push(path.resolve(path.dirname(tsFile), `${m[1] ?? ''}.ts`));
      }
    }
    await fsp.writeFile(path.join(outDir, 'package.json'), '{"type":"module"}\n');
    return path.join(outDir, entry.replace(/\.ts$/, '.js'));
  }

  function runChild(moduleFile: string, logFile: string, tag: string, n: number): Promise<void> {
    const script = `
      const { AuditLog } = await import(process.env.AUDIT_MODULE_URL);
      const log = new AuditLog(process.env.AUDIT_FILE);
      const tag = process.env.AUDIT_TAG;
      const n = Number(process.env.AUDIT_N);
      await Promise.all(Array.from({ length: n }, (_, i) =>
        log.append({ actor: { kind: 'os', name: tag }, action: 'import', outcome: 'done', details: { i, pad: tag.repeat(3000 + i) } })));
    `;
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
        env: { ...process.env, AUDIT_MODULE_URL: pathToFileURL(moduleFile).href, AUDIT_FILE: logFile, AUDIT_TAG: tag, AUDIT_N: String(n) },
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('error', reject);
      child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`child ${tag} exited ${String(code)}: ${stderr}`))));
    });
  }

  it('never interleaves partial lines', async () => {
    const moduleFile = await compileForNode('ops/audit.ts', path.join(dir, 'build'));
    const logFile = path.join(dir, 'shared', 'audit.log');
    const n = 150;
    await Promise.all([runChild(moduleFile, logFile, 'A', n), runChild(moduleFile, logFile, 'B', n)]);

    const lines = await rawLines(logFile);
    expect(lines).toHaveLength(2 * n);
    const parsed = lines.map((l) => JSON.parse(l) as AuditEntry);
    for (const tag of ['A', 'B']) {
      const mine = parsed.filter((e) => e.actor.name === tag);
      expect(mine.map((e) => e.details?.i).sort((x, y) => Number(x) - Number(y))).toEqual(Array.from({ length: n }, (_, i) => i));
      for (const e of mine) expect(e.details?.pad).toBe(tag.repeat(3000 + Number(e.details?.i)));
    }
    expect(await new AuditLog(logFile).read()).toHaveLength(2 * n);
    expect((await fsp.stat(logFile)).mode & 0o777).toBe(0o600);
  });
});

describe('ordering within one process', () => {
  it('serialises appends across AuditLog instances on the same file in call order', async () => {
    const one = new AuditLog(file);
    const two = new AuditLog(path.join(dir, '.', 'audit.log'));
    const written = await Promise.all(
      Array.from({ length: 40 }, (_, i) => (i % 2 === 0 ? one : two).append({ actor: alice, action: 'import', outcome: 'done', details: { i } })),
    );
    expect((await one.read()).map((e) => e.id)).toEqual(written.map((e) => e.id));
  });

  it('keeps the newest entries for a limit larger than the trimming batch', async () => {
    const log = new AuditLog(file);
    const written: AuditEntry[] = [];
    for (let i = 0; i < 150; i++) written.push(await log.append({ actor: alice, action: 'import', outcome: 'done', details: { i } }));
    expect(await log.read({ limit: 30 })).toEqual(written.slice(-30));
    expect(await log.read({ limit: 149 })).toEqual(written.slice(1));
  });
});

describe('Operations.readAudit: who did what to whom', () => {
  let store: Store;
  let ops: Operations;
  let backupDir: string;
  const fixture = loadFixture();
  const ids = Object.keys(fixture);
  const [u1, u2, u3] = ids as [string, string, string];

  beforeEach(async () => {
    store = createStore(await SqliteDriver.open(path.join(dir, 'memory.db')));
    backupDir = path.join(dir, 'backups');
    ops = new Operations({ store, backupDir, audit: new AuditLog(file), actor: alice });
    for (const id of ids) await store.put(id, fixture[id]!);
  });
  afterEach(async () => {
    await store.close();
  });

  it('finds a user removed by a clear-all in the clear\'s backup, without writing ids into the log', async () => {
    expect(ids).toHaveLength(200);
    const clear = await ops.clearAll();
    const mine = await ops.readAudit({ user: u2 });
    expect(mine.map((e) => [e.action, e.outcome, e.op])).toEqual([
      ['clear-all', 'started', clear.auditOp],
      ['clear-all', 'done', clear.auditOp],
    ]);
    expect(mine[1]).toMatchObject({ backup: clear.backup, foundInBackup: clear.backup });
    expect(mine[1]?.userIds).toBeUndefined();
    expect(await ops.readAudit({ user: 'never-a-user' })).toEqual([]);
    expect((await fsp.readFile(file, 'utf8')).includes(u2)).toBe(false);
    // The filters still apply on top.
    expect(await ops.readAudit({ user: u2, action: 'delete' })).toEqual([]);
    expect(await ops.readAudit({ user: u2, action: 'clear', limit: 1 })).toHaveLength(1);
  });

  it('finds a user removed by a full restore, and a user it put back from its source', async () => {
    const before = await ops.createBackup();
    await ops.deleteUsers([u1]);
    await store.put('late-user', { ...fixture[u3]!, user_id: 'late-user' });
    const restored = await ops.restore(before.id);
    expect(restored.removed).toBe(1);
    const late = await ops.readAudit({ user: 'late-user', action: 'restore' });
    expect(late.map((e) => e.outcome)).toEqual(['started', 'done']);
    // Removed: it is in the backup the restore took of what it replaced.
    expect(late[1]).toMatchObject({ backup: restored.backup, foundInBackup: restored.backup });
    // Put back: it is in the restore's source, not in the store it replaced.
    const back = await ops.readAudit({ user: u1 });
    expect(back.map((e) => `${e.action}:${e.outcome}`)).toEqual(['delete-users:started', 'delete-users:done', 'restore:started', 'restore:done']);
    expect(back[3]).toMatchObject({ foundInBackup: before.id });
    expect(back[1]?.foundInBackup).toBeUndefined();
  });

  it('a merge restore touches only the users of its source', async () => {
    const partial = await ops.createBackup();
    await store.put('kept-user', { ...fixture[u3]!, user_id: 'kept-user' });
    await ops.restore(partial.id, { mode: 'merge' });
    expect(await ops.readAudit({ user: 'kept-user' })).toEqual([]);
    expect((await ops.readAudit({ user: u3, action: 'restore' })).map((e) => e.foundInBackup)).toEqual([partial.id, partial.id]);
  });

  it('finds users overwritten by a large import, whose entry lists no users', async () => {
    const r = await ops.importFile(path.join(FIXTURES, 'memory.json'));
    expect(r.overwritten).toBe(200);
    const entries = await ops.readAudit({ user: u3 });
    expect(entries.map((e) => `${e.action}:${e.outcome}`)).toEqual(['import:started', 'import:done']);
    expect(entries[1]?.foundInBackup).toBe(r.backup);
  });

  it('cannot tie a clear to a user once its backup is pruned, and says nothing rather than failing', async () => {
    const clear = await ops.clearAll();
    await fsp.rm(path.join(backupDir, `${clear.backup}.json`));
    expect(await ops.readAudit({ user: u2 })).toEqual([]);
  });

  it('accepts the CLI\'s action names and refuses unknown ones, listing the valid names', async () => {
    await ops.deleteUsers([u1]);
    await ops.clearAll();
    const stored = await ops.readAudit({ action: 'delete-users' });
    expect(stored).toHaveLength(2);
    expect(await ops.readAudit({ action: 'delete' })).toEqual(stored);
    expect(await ops.readAudit({ action: 'Clear' })).toEqual(await ops.readAudit({ action: 'clear-all' }));
    expect(await ops.readAudit({ action: 'clear' })).toHaveLength(2);
    const err = await rejection(ops.readAudit({ action: 'remove' }));
    expect(err).toBeInstanceOf(OpsError);
    expect((err as OpsError).code).toBe('E_OPS_ARG');
    expect((err as OpsError).message).toMatch(/unknown audit action "remove"; valid actions: delete \(delete-users\), clear \(clear-all\), restore, import, backup, prune, auth-failed/);
    expect(resolveAuditAction(' PRUNE ')).toBe('prune');
    for (const a of AUDIT_ACTIONS) expect(resolveAuditAction(a.name)).toBe(a.stored);
  });
});
