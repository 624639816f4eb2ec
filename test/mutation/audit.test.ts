import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AUDIT_ACTIONS, AuditLog, queryAudit, resolveAuditAction, type Actor, type AuditEntry } from '../../src/ops/audit.js';
import { OpsError } from '../../src/errors.js';
import { defaultFsIo, setFsIo } from '../../src/fsio.js';
import { tempDir } from '../helpers/tmp.js';

// The audit log's promises beyond test/ops/audit.test.ts: no secret reaches the file, every line it
// refuses to read is named with the reason, the filters and limits mean what they say, and a forget's
// rewrite changes exactly the lines it edits and loses no line.

const alice: Actor = { kind: 'os', name: 'alice' };
let dir: string;
let file: string;
let cleanup: () => Promise<void>;

beforeEach(async () => {
  ({ dir, cleanup } = await tempDir());
  file = path.join(dir, 'audit.log');
});
afterEach(async () => {
  await cleanup();
});

async function rejection(p: Promise<unknown>): Promise<OpsError & { details?: Record<string, unknown> }> {
  return p.then(
    () => {
      throw new Error('expected a rejection');
    },
    (err: unknown) => err as OpsError,
  );
}

describe('secrets never reach the log', () => {
  it('redacts every secret-named key at any depth, in any case, but keeps empty values and look-alikes', async () => {
    const log = new AuditLog(file);
    const details = {
      token: 't1', Secret: 't2', PASSWORD: 't3', passwd: 't4', passphrase: 't5', authorization: 't6', cookie: 't7',
      apikey: 't8', 'api-key': 't9', api_key: 't10', privateKey: 't11', 'private-key': 't12', private_key: 't13',
      list: [{ token: 't14' }, 'postgres://u:t15@h/db'],
      nullProto: Object.assign(Object.create(null) as Record<string, unknown>, { password: 't16' }),
      keep: { tokenName: 'ci', mytoken: 'x', token_id: 'y', password: null, secret: undefined },
      when: new Date('2026-01-01T00:00:00Z'),
    };
    const e = await log.append({ actor: alice, action: 'import', outcome: 'done', details });
    const text = await fsp.readFile(file, 'utf8');
    for (let i = 1; i <= 16; i++) expect(text).not.toMatch(new RegExp(`\\bt${i}\\b`));
    expect(e.details).toEqual({
      token: '[redacted]', Secret: '[redacted]', PASSWORD: '[redacted]', passwd: '[redacted]', passphrase: '[redacted]',
      authorization: '[redacted]', cookie: '[redacted]', apikey: '[redacted]', 'api-key': '[redacted]', api_key: '[redacted]',
      privateKey: '[redacted]', 'private-key': '[redacted]', private_key: '[redacted]',
      list: [{ token: '[redacted]' }, 'postgres://u:***@h/db'],
      nullProto: { password: '[redacted]' },
      keep: { tokenName: 'ci', mytoken: 'x', token_id: 'y', password: null, secret: undefined },
      when: new Date('2026-01-01T00:00:00Z'),
    });
    expect((JSON.parse(text.trim()) as AuditEntry).details?.when).toBe('2026-01-01T00:00:00.000Z');
    // The caller's object is left as it was.
    expect(details.token).toBe('t1');
  });

  it('masks a URL password anywhere in a string, for any scheme, and leaves other text alone', async () => {
    const log = new AuditLog(file);
    const e = await log.append({
      actor: alice,
      action: 'import',
      outcome: 'failed',
      error: { code: 'E_X', message: 'a redis://:pw1@h:6379 b s3+https://key:pw2@host/x c' },
      details: { a: 'mailto:someone@example.com', b: 'http://user@h/p', c: 'time 10:30@desk', d: 'x postgresql://app:pw3@db/y, and https://u:pw4@h' },
    });
    expect(e.error).toEqual({ code: 'E_X', message: 'a redis://:***@h:6379 b s3+https://key:***@host/x c' });
    expect(e.details).toEqual({ a: 'mailto:someone@example.com', b: 'http://user@h/p', c: 'time 10:30@desk', d: 'x postgresql://app:***@db/y, and https://u:***@h' });
    expect(await fsp.readFile(file, 'utf8')).not.toMatch(/pw[1-4]/);
  });

  it('stops looking 32 levels down (a bounded walk), masking everything above', async () => {
    let deep: Record<string, unknown> = { token: 'bottom' };
    for (let i = 0; i < 40; i++) deep = { n: deep, token: `level${i}` };
    const e = await new AuditLog(file).append({ actor: alice, action: 'import', outcome: 'done', details: deep });
    let at: Record<string, unknown> | undefined = e.details;
    for (let level = 0; level < 32 && at; level++) {
      expect(at.token, `level ${level}`).toBe('[redacted]');
      at = at.n as Record<string, unknown> | undefined;
    }
    // Level 32 (details is level 0) is kept as given.
    expect(at?.token).toBe('level7');
  });
});

describe('reading', () => {
  it('refuses a limit that is not a non-negative integer, and an invalid since', async () => {
    const log = new AuditLog(file);
    await log.append({ actor: alice, action: 'backup', outcome: 'done' });
    for (const limit of [-1, 1.5, Number.NaN]) {
      await expect(log.read({ limit })).rejects.toThrow(new RangeError(`audit read limit must be a non-negative integer, got ${String(limit)}`));
    }
    await expect(log.read({ since: new Date('nope') })).rejects.toThrow(new RangeError('audit read "since" is an invalid Date'));
    expect(await log.read({ limit: 1 })).toHaveLength(1);
  });

  it('since includes an entry at exactly that time; op and userOps select whole operations', async () => {
    const log = new AuditLog(file);
    const a = await log.append({ time: '2026-01-01T00:00:00.000Z', actor: alice, action: 'clear-all', outcome: 'started' });
    const b = await log.append({ time: '2026-01-01T00:00:01.000Z', op: a.op, actor: alice, action: 'clear-all', outcome: 'done' });
    const c = await log.append({ time: '2026-01-01T00:00:02.000Z', actor: alice, action: 'delete-users', userIds: ['u1'], outcome: 'done' });
    expect(await log.read({ since: new Date('2026-01-01T00:00:01.000Z') })).toEqual([b, c]);
    expect(await log.read({ since: new Date('2026-01-01T00:00:01.001Z') })).toEqual([c]);
    expect(await log.read({ user: 'u1', userOps: new Set([a.op]) })).toEqual([a, b, c]);
    expect(await log.read({ user: 'u2', userOps: new Set([a.op]) })).toEqual([a, b]);
    expect(await log.read({ user: 'u2' })).toEqual([]);
    expect(await log.read({ op: a.op, action: 'clear-all' })).toEqual([a, b]);
    expect(await log.read({ op: a.op, action: 'delete-users' })).toEqual([]);
  });

  it('keeps the newest entries under a limit while it trims in batches', async () => {
    const log = new AuditLog(file);
    const written: AuditEntry[] = [];
    for (let i = 0; i < 70; i++) written.push(await log.append({ actor: alice, action: 'import', outcome: 'done', details: { i } }));
    // 2 * 1 + 64 = 66 entries trigger the first trim.
    expect(await log.read({ limit: 1 })).toEqual(written.slice(-1));
    expect(await log.read({ limit: 3 })).toEqual(written.slice(-3));
    expect(await log.read({ limit: 70 })).toEqual(written);
    expect(await log.read({ limit: 69 })).toEqual(written.slice(1));
  });

  const valid = { id: 'x', op: 'x', time: '2026-01-01T00:00:00.000Z', actor: { kind: 'os', name: 'a' }, action: 'backup', outcome: 'done' };
  it.each([
    ['[1]', 'not a JSON object'],
    ['null', 'not a JSON object'],
    ['"text"', 'not a JSON object'],
    [JSON.stringify({ ...valid, id: 1 }), 'missing or non-string "id"'],
    [JSON.stringify({ ...valid, op: undefined }), 'missing or non-string "op"'],
    [JSON.stringify({ ...valid, time: null }), 'missing or non-string "time"'],
    [JSON.stringify({ ...valid, action: ['a'] }), 'missing or non-string "action"'],
    [JSON.stringify({ ...valid, time: 'yesterday' }), 'invalid "time"'],
    [JSON.stringify({ ...valid, outcome: undefined }), 'missing or unknown "outcome"'],
    [JSON.stringify({ ...valid, outcome: 'maybe' }), 'missing or unknown "outcome"'],
    [JSON.stringify({ ...valid, actor: undefined }), 'missing or invalid "actor"'],
    [JSON.stringify({ ...valid, actor: null }), 'missing or invalid "actor"'],
    [JSON.stringify({ ...valid, actor: 'alice' }), 'missing or invalid "actor"'],
    [JSON.stringify({ ...valid, actor: { kind: 'root', name: 'a' } }), 'missing or invalid "actor"'],
    [JSON.stringify({ ...valid, actor: { kind: 'api' } }), 'missing or invalid "actor"'],
    [JSON.stringify({ ...valid, userIds: 'u1' }), 'invalid "userIds"'],
    [JSON.stringify({ ...valid, userIds: ['u1', 2] }), 'invalid "userIds"'],
  ])('names why line 2 is no entry: %s', async (line, reason) => {
    const log = new AuditLog(file);
    await log.append({ actor: alice, action: 'backup', outcome: 'done' });
    await fsp.appendFile(file, `${line}\n`);
    const err = await rejection(log.read());
    expect(err).toMatchObject({ code: 'E_AUDIT_PARSE', message: `malformed audit log entry at ${file}:2: ${reason}`, details: { file, line: 2 } });
  });

  it('accepts every outcome and both actor kinds, and userIds as a list of strings', async () => {
    const lines = ['started', 'done', 'failed', 'refused', 'interrupted'].map((outcome, i) =>
      JSON.stringify({ ...valid, id: `e${i}`, op: `e${i}`, outcome, actor: { kind: i % 2 ? 'api' : 'os', name: 'n' }, userIds: i === 0 ? [] : ['u'] }),
    );
    await fsp.writeFile(file, `${lines.join('\n')}\n`);
    expect((await new AuditLog(file).read()).map((e) => e.outcome)).toEqual(['started', 'done', 'failed', 'refused', 'interrupted']);
  });

  it('a torn line is dropped whether it is the last line or followed only by blank lines, and blank lines are skipped', async () => {
    const log = new AuditLog(file);
    const a = await log.append({ actor: alice, action: 'backup', outcome: 'done' });
    await fsp.appendFile(file, '\n   \n');
    const b = await log.append({ actor: alice, action: 'backup', outcome: 'done' });
    expect(await log.read()).toEqual([a, b]);
    await fsp.appendFile(file, '{"id":"torn","op":');
    expect(await log.read()).toEqual([a, b]);
  });

  it('a bad line followed by another entry glued to it is salvaged only when the glued part parses', async () => {
    const log = new AuditLog(file);
    const a = await log.append({ actor: alice, action: 'backup', outcome: 'done' });
    // Glued at position 0 is no salvage: the line must start with something else.
    await fsp.appendFile(file, 'garbage{"id":"not-an-entry"}\n');
    await log.append({ actor: alice, action: 'backup', outcome: 'done' });
    expect(await rejection(log.read())).toMatchObject({ code: 'E_AUDIT_PARSE', details: { line: 2 } });
    await fsp.writeFile(file, '');
    const b = await log.append({ actor: alice, action: 'backup', outcome: 'done' });
    expect(await log.read()).toEqual([b]);
    expect(a.id).not.toBe(b.id);
  });

  it('unfinished: a closing entry written before its start (another process) still closes it', async () => {
    const log = new AuditLog(file);
    await log.append({ op: 'op-1', actor: alice, action: 'clear-all', outcome: 'done' });
    await log.append({ op: 'op-1', actor: alice, action: 'clear-all', outcome: 'started' });
    await log.append({ op: 'op-2', actor: alice, action: 'restore', outcome: 'refused' });
    const open = await log.append({ op: 'op-3', actor: alice, action: 'restore', outcome: 'started' });
    await log.append({ op: 'op-3', actor: alice, action: 'restore', outcome: 'refused' });
    const open4 = await log.append({ op: 'op-4', actor: alice, action: 'import', outcome: 'started' });
    expect(await log.unfinished()).toEqual([open, open4]);
  });

  it('cannot read a directory: E_AUDIT_READ with the cause', async () => {
    await fsp.mkdir(file);
    const err = await rejection(new AuditLog(file).read());
    expect(err).toMatchObject({ code: 'E_AUDIT_READ', details: { file } });
    expect(err.message).toMatch(new RegExp(`^cannot read audit log ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: `));
    expect(err.cause).toBeInstanceOf(Error);
    // Nor write to it.
    const w = await rejection(new AuditLog(file).append({ actor: alice, action: 'backup', outcome: 'done' }));
    expect(w).toMatchObject({ code: 'E_AUDIT_WRITE', details: { file } });
    expect(w.message).toMatch(/^cannot open audit log .*: /);
  });
});

describe('writing', () => {
  it('refuses an invalid time and an entry that cannot be serialised, writing nothing', async () => {
    const log = new AuditLog(file);
    const t = await rejection(log.append({ time: 'not a time', actor: alice, action: 'backup', outcome: 'done' }));
    expect(t).toMatchObject({ code: 'E_AUDIT_WRITE', message: 'invalid audit entry time: "not a time"', details: { time: 'not a time' } });
    const s = await rejection(log.append({ actor: alice, action: 'backup', outcome: 'done', details: { n: 10n } }));
    expect(s).toMatchObject({ code: 'E_AUDIT_WRITE', details: { file } });
    expect(s.message).toMatch(/^entry is not serialisable audit log .*: /);
    expect(s.cause).toBeInstanceOf(TypeError);
    await expect(fsp.stat(file)).rejects.toMatchObject({ code: 'ENOENT' });
    // The log still works afterwards.
    const ok = await log.append({ actor: alice, action: 'backup', outcome: 'done' });
    expect(await log.read()).toEqual([ok]);
  });

  it('creates the missing parent directories, and fails with E_AUDIT_WRITE when it cannot', async () => {
    const nested = path.join(dir, 'a', 'b', 'audit.log');
    const e = await new AuditLog(nested).append({ actor: alice, action: 'backup', outcome: 'done' });
    expect(await new AuditLog(nested).read()).toEqual([e]);
    await fsp.writeFile(path.join(dir, 'blocker'), 'x');
    const err = await rejection(new AuditLog(path.join(dir, 'blocker', 'sub', 'audit.log')).append({ actor: alice, action: 'backup', outcome: 'done' }));
    expect(err.code).toBe('E_AUDIT_WRITE');
    expect(err.message).toMatch(/^cannot (open|create) audit log /);
  });

  it('an operation ends with done or failed carrying the actor, action, backup and details; the backup set last wins over none', async () => {
    const log = new AuditLog(file);
    const op = await log.begin('delete-users', alice, { userIds: ['u1', 'u2'], details: { why: 'asked' } });
    expect(op.started).toMatchObject({ id: op.op, op: op.op, action: 'delete-users', outcome: 'started', userIds: ['u1', 'u2'], details: { why: 'asked' }, actor: alice });
    op.setBackup('bk-1');
    const done = await op.finish({ userIds: ['u1'], details: { removed: 1 } });
    expect(done).toMatchObject({ op: op.op, action: 'delete-users', outcome: 'done', userIds: ['u1'], backup: 'bk-1', details: { removed: 1 }, actor: alice });
    expect(done.id).not.toBe(op.op);
    expect(done.durationMs).toBeGreaterThanOrEqual(0);
    expect(done.error).toBeUndefined();

    const op2 = await log.begin('restore', alice);
    expect(Object.keys(op2.started)).toEqual(['id', 'op', 'time', 'actor', 'action', 'outcome']);
    op2.setBackup('bk-2');
    const failed = await op2.fail(new OpsError('E_OPS_ARG', 'bad'), { backup: 'bk-3', details: { step: 2 } });
    expect(failed).toMatchObject({ outcome: 'failed', backup: 'bk-3', details: { step: 2 }, error: { code: 'E_OPS_ARG', message: 'bad' } });
    expect(failed.userIds).toBeUndefined();

    const op3 = await log.begin('backup', alice);
    const plain = await op3.finish();
    expect(Object.keys(plain)).toEqual(['id', 'op', 'time', 'actor', 'action', 'outcome', 'durationMs']);
    const op4 = await log.begin('backup', alice, { userIds: ['x'] });
    expect((await op4.finish()).userIds).toEqual(['x']);
    expect((await log.unfinished())).toEqual([]);
  });

  it('a failure whose value cannot be printed is still recorded', async () => {
    const log = new AuditLog(file);
    const op = await log.begin('import', alice);
    const weird = { toString: () => { throw new Error('no'); } };
    const failed = await op.fail(weird);
    expect(failed.error).toEqual({ code: 'E_UNKNOWN', message: '[unprintable]' });
  });

  it('an end entry that fails to write can be written again; once written, never twice', async () => {
    await fsp.mkdir(dir, { recursive: true });
    const log = new AuditLog(file);
    const op = await log.begin('import', alice);
    // The log becomes a directory: the end entry cannot be written.
    await fsp.rename(file, `${file}.moved`);
    await fsp.mkdir(file);
    await expect(op.finish()).rejects.toMatchObject({ code: 'E_AUDIT_WRITE' });
    await fsp.rmdir(file);
    await fsp.rename(`${file}.moved`, file);
    const done = await op.finish();
    expect(done.outcome).toBe('done');
    const again = await rejection(op.fail(new Error('late')));
    expect(again).toMatchObject({ code: 'E_AUDIT_WRITE', message: `audit operation ${op.op} (import) has already ended`, details: { op: op.op } });
    expect((await log.read()).map((e) => e.outcome)).toEqual(['started', 'done']);
  });
});

describe('rewrite (forget)', () => {
  it('changes exactly the lines its edit changes, counts them, and keeps every other line byte for byte', async () => {
    const log = new AuditLog(file);
    for (let i = 0; i < 5; i++) await log.append({ actor: alice, action: 'delete-users', userIds: [i % 2 ? 'secret-user' : `u${i}`], outcome: 'done' });
    const before = (await fsp.readFile(file, 'utf8')).split('\n');
    const n = await log.rewrite((line) => line.replaceAll('secret-user', 'h:abc'));
    expect(n).toBe(2);
    const after = (await fsp.readFile(file, 'utf8')).split('\n');
    expect(after).toHaveLength(before.length);
    expect(after.filter((l, i) => l !== before[i])).toHaveLength(2);
    expect(after.join('\n')).not.toContain('secret-user');
    expect((await fsp.stat(file)).mode & 0o777).toBe(0o600);
    expect((await fsp.readdir(dir)).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    expect(await log.rewrite((line) => line)).toBe(0);
    expect(await fsp.readFile(file, 'utf8')).toBe(after.join('\n'));
  });

  it('edits an unterminated last line too, keeping it unterminated', async () => {
    const log = new AuditLog(file);
    await log.append({ actor: alice, action: 'backup', outcome: 'done' });
    await fsp.appendFile(file, '{"id":"torn secret-user');
    expect(await log.rewrite((line) => line.replaceAll('secret-user', 'h'))).toBe(1);
    const text = await fsp.readFile(file, 'utf8');
    expect(text.endsWith('{"id":"torn h')).toBe(true);
    expect(await log.rewrite((line) => line.replaceAll('nothing', 'x'))).toBe(0);
    expect(await fsp.readFile(file, 'utf8')).toBe(text);
  });

  it('a missing log has nothing to rewrite; a failed rewrite leaves the log and no temp file', async () => {
    expect(await new AuditLog(path.join(dir, 'none.log')).rewrite(() => 'x')).toBe(0);
    const log = new AuditLog(file);
    await log.append({ actor: alice, action: 'backup', outcome: 'done' });
    const text = await fsp.readFile(file, 'utf8');
    const err = await rejection(log.rewrite(() => {
      throw new Error('edit failed');
    }));
    expect(err).toMatchObject({ code: 'E_AUDIT_WRITE', details: { file } });
    expect(err.message).toBe(`cannot rewrite audit log ${file}: edit failed`);
    expect(await fsp.readFile(file, 'utf8')).toBe(text);
    expect(await fsp.readdir(dir)).toEqual(['audit.log']);
    // An unreadable log (a directory) is a read error.
    const d = path.join(dir, 'dir.log');
    await fsp.mkdir(d);
    const r = await rejection(new AuditLog(d).rewrite((l) => l));
    expect(r.code).toMatch(/^E_AUDIT_(READ|WRITE)$/);
  });

  it('appends queued behind a rewrite land after it, in the rewritten log', async () => {
    const log = new AuditLog(file);
    await log.append({ actor: alice, action: 'delete-users', userIds: ['secret-user'], outcome: 'done' });
    const rewriting = log.rewrite((line) => line.replaceAll('secret-user', 'h'));
    const appended = log.append({ actor: alice, action: 'forget', userIds: ['h'], outcome: 'done' });
    expect(await rewriting).toBe(1);
    const e = await appended;
    const entries = await log.read();
    expect(entries.map((x) => x.action)).toEqual(['delete-users', 'forget']);
    expect(entries[1]).toEqual(e);
  });
});

describe('resolveAuditAction and queryAudit', () => {
  it('takes the CLI name or the stored name, in any case and with spaces, and lists every name when it refuses', () => {
    for (const { name, stored } of AUDIT_ACTIONS) {
      expect(resolveAuditAction(name)).toBe(stored);
      expect(resolveAuditAction(stored)).toBe(stored);
      expect(resolveAuditAction(`  ${name.toUpperCase()} `)).toBe(stored);
    }
    expect(AUDIT_ACTIONS.map((a) => `${a.name}=${a.stored}`)).toEqual([
      'delete=delete-users', 'clear=clear-all', 'restore=restore', 'import=import', 'backup=backup', 'prune=prune',
      'auth-failed=auth-failed', 'truncate=truncate-history', 'reset=reset-user', 'forget=forget', 'expire=expire', 'merge=merge',
    ]);
    let err: (OpsError & { details?: Record<string, unknown> }) | undefined;
    try {
      resolveAuditAction('remove');
    } catch (e) {
      err = e as OpsError & { details?: Record<string, unknown> };
    }
    expect(err).toMatchObject({
      code: 'E_OPS_ARG',
      message:
        'unknown audit action "remove"; valid actions: delete (delete-users), clear (clear-all), restore, import, backup, prune, auth-failed, truncate (truncate-history), reset (reset-user), forget, expire, merge',
      details: { action: 'remove', valid: AUDIT_ACTIONS.map((a) => a.name) },
    });
  });

  /** Which users each backup holds: what Operations answers from the real backup files. */
  const holdsFrom = (backups: Record<string, string[]>) => {
    const asked: string[] = [];
    const holds = async (id: string, user: string) => {
      asked.push(id);
      return (backups[id] ?? []).includes(user);
    };
    return { holds, asked };
  };

  it('without a user it is a plain read (with the action resolved)', async () => {
    const log = new AuditLog(file);
    const d = await log.append({ actor: alice, action: 'delete-users', userIds: ['u1'], outcome: 'done' });
    await log.append({ actor: alice, action: 'backup', outcome: 'done' });
    const { holds, asked } = holdsFrom({});
    expect(await queryAudit(log, { action: 'delete' }, holds)).toEqual([d]);
    expect(await queryAudit(log, { action: 'delete', userOps: new Set(['x']) }, holds)).toEqual([d]);
    expect(asked).toEqual([]);
    await expect(queryAudit(log, { action: 'nope' }, holds)).rejects.toMatchObject({ code: 'E_OPS_ARG' });
  });

  it('finds a user in the backup of a clear, an import and a replace restore, and in a restore\'s source', async () => {
    const log = new AuditLog(file);
    const clear = await log.append({ actor: alice, action: 'clear-all', backup: 'b-clear', outcome: 'done' });
    const imp = await log.append({ actor: alice, action: 'import', backup: 'b-import', outcome: 'done' });
    const restore = await log.append({ actor: alice, action: 'restore', backup: 'b-restore', details: { from: 'b-src' }, outcome: 'done' });
    const merge = await log.append({ actor: alice, action: 'restore', backup: 'b-merge', details: { from: 'b-msrc', mode: 'merge' }, outcome: 'done' });
    const listed = await log.append({ actor: alice, action: 'clear-all', userIds: ['someone'], backup: 'b-clear', outcome: 'done' });
    const noBackup = await log.append({ actor: alice, action: 'clear-all', outcome: 'refused' });
    const del = await log.append({ actor: alice, action: 'delete-users', userIds: ['u1'], backup: 'b-del', outcome: 'done' });
    const { holds, asked } = holdsFrom({ 'b-clear': ['u1'], 'b-import': ['u1'], 'b-restore': [], 'b-src': ['u1'], 'b-merge': ['u1'], 'b-msrc': [] });

    const got = await queryAudit(log, { user: 'u1' }, holds);
    expect(got).toEqual([
      { ...clear, foundInBackup: 'b-clear' },
      { ...imp, foundInBackup: 'b-import' },
      { ...restore, foundInBackup: 'b-src' },
      del,
    ]);
    // The merge restore left u1 alone (not in its source), though its own backup holds u1.
    expect(got.map((e) => e.op)).not.toContain(merge.op);
    expect(got.map((e) => e.op)).not.toContain(listed.op);
    expect(got.map((e) => e.op)).not.toContain(noBackup.op);
    // Each backup is asked about once, however many entries name it.
    expect(asked.filter((id) => id === 'b-clear')).toHaveLength(1);
    expect(new Set(asked).size).toBe(asked.length);
  });

  it('a merge restore counts when its source holds the user; an operation is found once, by its first hit', async () => {
    const log = new AuditLog(file);
    const merge = await log.append({ actor: alice, action: 'restore', backup: 'b-merge', details: { from: 'b-msrc', mode: 'merge' }, outcome: 'started' });
    const mergeDone = await log.append({ op: merge.op, actor: alice, action: 'restore', backup: 'b-merge', details: { from: 'b-msrc', mode: 'merge' }, outcome: 'done' });
    const { holds } = holdsFrom({ 'b-merge': [], 'b-msrc': ['u2'] });
    expect(await queryAudit(log, { user: 'u2' }, holds)).toEqual([
      { ...merge, foundInBackup: 'b-msrc' },
      { ...mergeDone, foundInBackup: 'b-msrc' },
    ]);
    // A restore whose `from` is not text does not count its source.
    const odd = new AuditLog(path.join(dir, 'odd.log'));
    await odd.append({ actor: alice, action: 'restore', backup: 'b-none', details: { from: 7 }, outcome: 'done' });
    expect(await queryAudit(odd, { user: 'u2' }, holdsFrom({ 'b-none': [], '7': ['u2'] }).holds)).toEqual([]);
  });

  it('an action filter limits the backups asked to that action, and since and op are kept', async () => {
    const log = new AuditLog(file);
    const early = await log.append({ time: '2026-01-01T00:00:00.000Z', actor: alice, action: 'clear-all', backup: 'b1', outcome: 'done' });
    const late = await log.append({ time: '2026-02-01T00:00:00.000Z', actor: alice, action: 'clear-all', backup: 'b2', outcome: 'done' });
    const imp = await log.append({ time: '2026-02-02T00:00:00.000Z', actor: alice, action: 'import', backup: 'b3', outcome: 'done' });
    const all = { b1: ['u'], b2: ['u'], b3: ['u'] };
    const a = holdsFrom(all);
    expect((await queryAudit(log, { user: 'u', action: 'clear' }, a.holds)).map((e) => e.op)).toEqual([early.op, late.op]);
    expect(a.asked.sort()).toEqual(['b1', 'b2']);
    const b = holdsFrom(all);
    expect((await queryAudit(log, { user: 'u', since: new Date('2026-01-15T00:00:00.000Z') }, b.holds)).map((e) => e.op)).toEqual([late.op, imp.op]);
    expect(b.asked.sort()).toEqual(['b2', 'b3']);
    const c = holdsFrom(all);
    expect((await queryAudit(log, { user: 'u', op: imp.op }, c.holds)).map((e) => e.op)).toEqual([imp.op]);
    expect(c.asked).toEqual(['b3']);
    // A user the entry lists is not marked as found in a backup.
    const listed = await log.append({ actor: alice, action: 'delete-users', userIds: ['u'], backup: 'b1', outcome: 'done' });
    const got = await queryAudit(log, { user: 'u', action: 'delete' }, holdsFrom(all).holds);
    expect(got).toEqual([listed]);
  });
});

// Survivors of the mutation run of 2026-11-30 (RELIABILITY.md, "Mutation testing"), each test a promise.
describe('queryAudit: each operation and backup looked at once, and only where the user may be', () => {
  const holdsFrom = (backups: Record<string, string[]>) => {
    const asked: string[] = [];
    const holds = async (id: string, user: string) => {
      if (typeof id !== 'string' || typeof user !== 'string') throw new Error(`asked about ${String(id)} / ${String(user)}`);
      asked.push(id);
      return (backups[id] ?? []).includes(user);
    };
    return { holds, asked };
  };

  it('without a user no backup is asked, even when every backup would answer yes', async () => {
    const log = new AuditLog(file);
    const clear = await log.append({ actor: alice, action: 'clear-all', backup: 'b', outcome: 'done' });
    const asked: string[] = [];
    const got = await queryAudit(log, {}, async (id) => {
      asked.push(id);
      return true;
    });
    expect(got).toStrictEqual([clear]);
    expect(asked).toEqual([]);
  });

  it('asks about a backup once however many entries name it, and keeps an operation\'s first hit', async () => {
    const log = new AuditLog(file);
    const s = await log.append({ actor: alice, action: 'clear-all', backup: 'b-same', outcome: 'started' });
    const d = await log.append({ op: s.op, actor: alice, action: 'clear-all', backup: 'b-same', outcome: 'done' });
    const other = await log.append({ actor: alice, action: 'import', backup: 'b-same', outcome: 'done' });
    // One restore operation: its first entry is found through its source, a later one names a backup
    // that holds the user too; the first hit stays.
    const r1 = await log.append({ actor: alice, action: 'restore', backup: 'b-own1', details: { from: 'b-src' }, outcome: 'started' });
    const r2 = await log.append({ op: r1.op, actor: alice, action: 'restore', backup: 'b-own2', outcome: 'done' });
    // A refused clear took no backup: nothing to ask (the helper throws when asked about no backup).
    await log.append({ actor: alice, action: 'clear-all', outcome: 'refused' });
    // An import whose start lists nobody but whose end lists the user: only the start is "found".
    const i1 = await log.append({ actor: alice, action: 'import', backup: 'b-imp', outcome: 'started' });
    const i2 = await log.append({ op: i1.op, actor: alice, action: 'import', userIds: ['u'], backup: 'b-imp', outcome: 'done' });
    const { holds, asked } = holdsFrom({ 'b-same': ['u'], 'b-own1': [], 'b-src': ['u'], 'b-own2': ['u'], 'b-imp': ['u'] });
    const got = await queryAudit(log, { user: 'u' }, holds);
    expect(got).toStrictEqual([
      { ...s, foundInBackup: 'b-same' },
      { ...d, foundInBackup: 'b-same' },
      { ...other, foundInBackup: 'b-same' },
      { ...r1, foundInBackup: 'b-src' },
      { ...r2, foundInBackup: 'b-src' },
      { ...i1, foundInBackup: 'b-imp' },
      i2,
    ]);
    expect(asked.filter((id) => id === 'b-same')).toHaveLength(1);
  });

  it('a restore without details counts its own backup; a clear\'s "from" or "mode" changes nothing', async () => {
    const log = new AuditLog(file);
    const bare = await log.append({ actor: alice, action: 'restore', backup: 'b-bare', outcome: 'done' });
    const clearFrom = await log.append({ actor: alice, action: 'clear-all', backup: 'b-clear', details: { from: 'b-x', mode: 'merge' }, outcome: 'done' });
    const noFrom = await log.append({ actor: alice, action: 'restore', backup: 'b-nf', details: { mode: 'replace' }, outcome: 'done' });
    await log.append({ actor: alice, action: 'restore', backup: 'b-mo', details: { mode: 'merge' }, outcome: 'done' });
    const { holds, asked } = holdsFrom({ 'b-bare': ['u'], 'b-clear': ['u'], 'b-x': ['v'], 'b-nf': ['v'], 'b-mo': ['u', 'v'] });
    expect(await queryAudit(log, { user: 'u' }, holds)).toStrictEqual([
      { ...bare, foundInBackup: 'b-bare' },
      { ...clearFrom, foundInBackup: 'b-clear' },
    ]);
    // v is only in the clear's "from" (no source for a clear), the replace restore's own backup, and a
    // merge restore's own backup (which a merge does not count).
    const v = holdsFrom({ 'b-bare': [], 'b-clear': [], 'b-x': ['v'], 'b-nf': ['v'], 'b-mo': ['v'] });
    expect(await queryAudit(log, { user: 'v' }, v.holds)).toStrictEqual([{ ...noFrom, foundInBackup: 'b-nf' }]);
    expect(v.asked).not.toContain('b-x');
    expect(v.asked).not.toContain('b-mo');
    expect(asked).not.toContain('b-x');
    expect(asked).not.toContain('b-mo');
  });

  it('an entry that lists the user carries no foundInBackup key at all', async () => {
    const log = new AuditLog(file);
    const del = await log.append({ actor: alice, action: 'delete-users', userIds: ['u'], backup: 'b', outcome: 'done' });
    const got = await queryAudit(log, { user: 'u' }, holdsFrom({ b: ['u'] }).holds);
    expect(got).toStrictEqual([del]);
    expect(Object.keys(got[0] ?? {})).not.toContain('foundInBackup');
  });
});

describe('reading: limits, outcomes, torn lines', () => {
  const entryLine = (over: Record<string, unknown> = {}) =>
    JSON.stringify({ id: 'x', op: 'x', time: '2026-01-01T00:00:00.000Z', actor: { kind: 'os', name: 'a' }, action: 'backup', outcome: 'done', ...over });

  it('limit 0 reads nothing; a valid since is accepted', async () => {
    const log = new AuditLog(file);
    const a = await log.append({ actor: alice, action: 'backup', outcome: 'done' });
    expect(await log.read({ limit: 0 })).toStrictEqual([]);
    expect(await log.read({ limit: 1, since: new Date(0) })).toStrictEqual([a]);
  });

  it('an interrupted operation is not unfinished', async () => {
    const log = new AuditLog(file);
    const s = await log.append({ actor: alice, action: 'restore', outcome: 'started' });
    expect(await log.unfinished()).toStrictEqual([s]);
    await log.append({ op: s.op, actor: alice, action: 'restore', outcome: 'interrupted' });
    expect(await log.unfinished()).toStrictEqual([]);
    const f = await log.append({ actor: alice, action: 'import', outcome: 'started' });
    expect(await log.unfinished()).toStrictEqual([f]);
    await log.append({ op: f.op, actor: alice, action: 'import', outcome: 'failed' });
    expect(await log.unfinished()).toStrictEqual([]);
  });

  it('a log that does not exist yet reads as empty, and nothing is unfinished', async () => {
    const log = new AuditLog(path.join(dir, 'not-yet', 'audit.log'));
    expect(await log.read()).toStrictEqual([]);
    expect(await log.unfinished()).toStrictEqual([]);
    expect(await log.rewrite((l) => l)).toBe(0);
  });

  it('a bad line followed by an entry is corruption even when the file ends without a newline', async () => {
    await fsp.writeFile(file, `{bad\n${entryLine()}`);
    expect(await rejection(new AuditLog(file).read())).toMatchObject({ code: 'E_AUDIT_PARSE', details: { line: 1 } });
  });

  it('names JSON.parse\'s own reason for a line that is not JSON', async () => {
    await fsp.writeFile(file, `{bad\n${entryLine()}\n`);
    const err = await rejection(new AuditLog(file).read());
    expect(err.message).toMatch(/:1: /);
    expect(err.message).not.toMatch(/not a JSON object/);
    expect(err.message).toMatch(/JSON|property name|token/i);
  });

  it('an entry appended after a torn fragment is kept, and the fragment dropped', async () => {
    const log = new AuditLog(file);
    const a = await log.append({ actor: alice, action: 'backup', outcome: 'done' });
    await fsp.appendFile(file, '{"id":"torn","op":"torn","details":{"x":"{\\"id\\":\\"');
    const b = await log.append({ actor: alice, action: 'import', outcome: 'done' });
    const c = await log.append({ actor: alice, action: 'backup', outcome: 'done' });
    expect(await log.read()).toStrictEqual([a, b, c]);
  });

  it('a whole entry that lost only its newline is kept with the one glued after it', async () => {
    const first = entryLine({ id: 'one', op: 'one' });
    const second = entryLine({ id: 'two', op: 'two', action: 'import' });
    await fsp.writeFile(file, `${first}${second}\n`);
    expect((await new AuditLog(file).read()).map((e) => [e.id, e.action])).toEqual([['one', 'backup'], ['two', 'import']]);
  });

  it('a path through a regular file cannot be read, rewritten or appended to: errors, not an empty log', async () => {
    const blocker = path.join(dir, 'plain');
    await fsp.writeFile(blocker, 'x');
    const log = new AuditLog(path.join(blocker, 'audit.log'));
    expect(await rejection(log.read())).toMatchObject({ code: 'E_AUDIT_READ' });
    expect(await rejection(log.rewrite((l) => l))).toMatchObject({ code: 'E_AUDIT_READ' });
    const err = await rejection(log.append({ actor: alice, action: 'backup', outcome: 'done' }));
    expect(err).toMatchObject({ code: 'E_AUDIT_WRITE' });
    expect(err.message).toMatch(/^cannot open audit log /);
  });

  it('a directory that cannot be created: E_AUDIT_WRITE "cannot create"', async () => {
    // A dangling symlink where the log's directory should be: open says ENOENT, mkdir cannot make it.
    await fsp.symlink(path.join(dir, 'nowhere', 'deeper'), path.join(dir, 'link'));
    const log = new AuditLog(path.join(dir, 'link', 'audit.log'));
    const err = await rejection(log.append({ actor: alice, action: 'backup', outcome: 'done' }));
    expect(err).toMatchObject({ code: 'E_AUDIT_WRITE' });
    expect(err.message).toMatch(/^cannot create audit log /);
  });

  it('the secret walk counts array levels too', async () => {
    let deep: unknown = { token: 'bottom' };
    for (let i = 0; i < 40; i++) deep = [deep];
    const e = await new AuditLog(file).append({ actor: alice, action: 'import', outcome: 'done', details: { deep } });
    // 32 levels down the walk stops (bounded); an array level counts as one.
    expect(JSON.stringify(e.details)).toContain('bottom');
  });
});

describe('writing: mode, directory sync, descriptors, short writes, durations', () => {
  it('tightens a log another tool left readable to 0600 on the next append', async () => {
    await fsp.writeFile(file, '', { mode: 0o644 });
    await fsp.chmod(file, 0o644);
    await new AuditLog(file).append({ actor: alice, action: 'backup', outcome: 'done' });
    expect((await fsp.stat(file)).mode & 0o777).toBe(0o600);
  });

  it('syncs the directory once per instance, and the parent too when it created the directory', async () => {
    const synced: string[] = [];
    const restore = setFsIo({
      fsyncDir: async (d: string) => {
        synced.push(d);
        await defaultFsIo.fsyncDir(d);
      },
    });
    try {
      const sub = path.join(dir, 'new');
      const created = new AuditLog(path.join(sub, 'audit.log'));
      await created.append({ actor: alice, action: 'backup', outcome: 'done' });
      expect(synced).toEqual([sub, dir]);
      await created.append({ actor: alice, action: 'backup', outcome: 'done' });
      expect(synced).toEqual([sub, dir]);
      synced.length = 0;
      const existing = new AuditLog(path.join(sub, 'audit.log'));
      await existing.append({ actor: alice, action: 'backup', outcome: 'done' });
      await existing.append({ actor: alice, action: 'backup', outcome: 'done' });
      expect(synced).toEqual([sub]);
    } finally {
      restore();
    }
  });

  it('a failed directory sync fails the append with E_AUDIT_WRITE', async () => {
    const restore = setFsIo({
      fsyncDir: async () => {
        throw Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' });
      },
    });
    try {
      const err = await rejection(new AuditLog(file).append({ actor: alice, action: 'backup', outcome: 'done' }));
      expect(err).toMatchObject({ code: 'E_AUDIT_WRITE' });
      expect(err.message).toMatch(/^cannot sync directory of audit log /);
    } finally {
      restore();
    }
  });

  it('a short write fails the append with E_AUDIT_WRITE naming the bytes', async () => {
    const restore = setFsIo({ writeSome: (fh, _f, buf) => fh.write(buf, 0, Math.floor(buf.length / 2)) });
    try {
      const err = await rejection(new AuditLog(file).append({ actor: alice, action: 'backup', outcome: 'done' }));
      expect(err).toMatchObject({ code: 'E_AUDIT_WRITE' });
      expect(err.message).toMatch(/^cannot append audit log .*: short write \(\d+ of \d+ bytes\)$/);
    } finally {
      restore();
    }
  });

  it('leaves no descriptor open after appends, reads and rewrites', async () => {
    const fds = async () => (await fsp.readdir('/proc/self/fd')).length;
    const log = new AuditLog(file);
    await log.append({ actor: alice, action: 'backup', outcome: 'done' });
    await log.read();
    await log.rewrite((l) => l);
    const before = await fds();
    for (let i = 0; i < 10; i++) {
      await log.append({ actor: alice, action: 'backup', outcome: 'done' });
      await log.read();
      await log.rewrite((l) => l);
    }
    expect(await fds()).toBe(before);
  });

  it('durationMs is the time the operation took', async () => {
    const t0 = Date.now();
    const op = await new AuditLog(file).begin('backup', alice);
    const done = await op.finish();
    expect(done.durationMs).toBeGreaterThanOrEqual(0);
    expect(done.durationMs).toBeLessThanOrEqual(Date.now() - t0 + 1);
  });

  it('rewrite edits every terminated line and counts them, adding no line at the end', async () => {
    const log = new AuditLog(file);
    await log.append({ actor: alice, action: 'backup', outcome: 'done' });
    await log.append({ actor: alice, action: 'import', outcome: 'done' });
    const before = await fsp.readFile(file, 'utf8');
    expect(await log.rewrite((l) => `${l} `)).toBe(2);
    expect(await fsp.readFile(file, 'utf8')).toBe(before.replace(/\n/g, ' \n'));
  });

  it('an error of the audit\'s own catalogue thrown by an edit passes through unchanged', async () => {
    const log = new AuditLog(file);
    await log.append({ actor: alice, action: 'backup', outcome: 'done' });
    const own = new OpsError('E_OPS_ARG', 'edit refused');
    expect(await rejection(log.rewrite(() => {
      throw own;
    }))).toBe(own);
  });
});
