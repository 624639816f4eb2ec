import { createHmac } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync, writeSync } from 'node:fs';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { writeBackup } from '../../src/backup/create.js';
import { verifySource } from '../../src/backup/integrity.js';
import { openBackup } from '../../src/backup/source.js';
import { rewriteChatmemBackup } from '../../src/backup/rewrite.js';
import { AuditLog } from '../../src/ops/audit.js';
import { FORGET_KEY_FILE, forgetKey, forgetUsers, forgottenId, redactText, type ForgetContext } from '../../src/ops/forget.js';
import { newRecord, type MemoryRecord } from '../../src/record.js';
import { SqliteDriver } from '../../src/store/sqlite/index.js';
import { createStore } from '../../src/store/store.js';
import type { Store } from '../../src/store/types.js';
import { tempDir } from '../helpers/tmp.js';
import { injectFault } from '../reliability/fs-faults.js';
import { defaultFsIo, setFsIo } from '../../src/fsio.js';
import { openUnder } from '../helpers/fd.js';

// The promises of forget (src/ops/forget.ts) beyond test/ops/forget.test.ts: the key is made once and
// kept, the audit hash is a keyed 128-bit HMAC, an id is replaced where it stands alone (raw and
// JSON-escaped), only the daemon's logs are redacted, a failure names no user, and a backup that may
// hold the user and cannot be trusted stops the forget before anything changes.

const ACTOR = { kind: 'os' as const, name: 'tester' };
const rec = (id: string, name = `n-${id}`): MemoryRecord => ({ ...newRecord(id, '2026-01-01T00:00:00Z'), name });

describe('forgetKey and forgottenId', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir());
  });
  afterEach(async () => {
    await cleanup();
  });

  it('creates a 32-byte key once (0600, in a data dir it creates), then reads the same key', async () => {
    const dataDir = path.join(dir, 'data');
    const k1 = await forgetKey(dataDir);
    expect(k1.length).toBe(32);
    const file = path.join(dataDir, FORGET_KEY_FILE);
    expect(readFileSync(file, 'utf8')).toBe(`${k1.toString('hex')}\n`);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(openUnder(dir)).toEqual([]);
    expect((await forgetKey(dataDir)).equals(k1)).toBe(true);
    // Two first forgets at once keep one key.
    const other = path.join(dir, 'other');
    const [a, b, c] = await Promise.all([forgetKey(other), forgetKey(other), forgetKey(other)]);
    expect(a?.equals(b as Buffer) && b?.equals(c as Buffer)).toBe(true);
    expect(readFileSync(path.join(other, FORGET_KEY_FILE), 'utf8')).toBe(`${(a as Buffer).toString('hex')}\n`);
  });

  it('a key it cannot read or create is refused with E_AUDIT_WRITE and its cause', async () => {
    mkdirSync(path.join(dir, 'd', FORGET_KEY_FILE), { recursive: true });
    const e1 = await forgetKey(path.join(dir, 'd')).catch((e: unknown) => e);
    expect(e1).toMatchObject({ code: 'E_AUDIT_WRITE', cause: expect.objectContaining({ code: 'EISDIR' }) });
    expect((e1 as Error).message).toMatch(new RegExp(`^cannot read the forget key ${path.join(dir, 'd', FORGET_KEY_FILE)}: `));
    // A data dir under a file.
    writeFileSync(path.join(dir, 'f'), '');
    const e2 = await forgetKey(path.join(dir, 'f')).catch((e: unknown) => e);
    expect(e2).toMatchObject({ code: 'E_AUDIT_WRITE', cause: expect.objectContaining({ code: 'ENOTDIR' }) });
  });

  it('a key that cannot be written, synced or linked into place is refused with E_AUDIT_WRITE and its cause; no key, no temp file', async () => {
    for (const [call, code] of [
      ['writeAll', 'ENOSPC'],
      ['sync', 'EIO'],
      ['link', 'EIO'],
    ] as const) {
      const dataDir = path.join(dir, call);
      const f = injectFault({ call, match: (x) => path.dirname(x) === dataDir, kind: code === 'EIO' ? 'EIO' : 'ENOSPC' });
      const e = await forgetKey(dataDir).catch((x: unknown) => x);
      f.restore();
      expect(f.hits(), call).toBe(1);
      expect(e, call).toMatchObject({ code: 'E_AUDIT_WRITE', cause: expect.objectContaining({ code }) });
      expect((e as Error).message).toMatch(new RegExp(`^cannot create the forget key ${path.join(dataDir, FORGET_KEY_FILE)}: ${code}: injected failure`));
      expect(readdirSync(dataDir), call).toEqual([]);
    }
  });

  it('a damaged key that another first forget linked in meanwhile is refused with its own message', async () => {
    const dataDir = path.join(dir, 'race');
    const file = path.join(dataDir, FORGET_KEY_FILE);
    const restore = setFsIo({
      link: async (from, to) => {
        if (to === file) writeFileSync(file, 'short\n');
        return defaultFsIo.link(from, to);
      },
    });
    const e = await forgetKey(dataDir).catch((x: unknown) => x).finally(restore);
    expect(e).toMatchObject({ code: 'E_AUDIT_WRITE', message: `the forget key ${file} is damaged (5 characters, not 64 hex digits); restore it from a copy, or remove it only if no forget ever used it` });
    expect(readdirSync(dataDir)).toEqual([FORGET_KEY_FILE]);
  });

  it('a key name held by a dangling symlink is refused, not retried forever', async () => {
    mkdirSync(path.join(dir, 'd'));
    symlinkSync(path.join(dir, 'nowhere'), path.join(dir, 'd', FORGET_KEY_FILE));
    const e = await forgetKey(path.join(dir, 'd')).catch((x: unknown) => x);
    expect(e).toMatchObject({ code: 'E_AUDIT_WRITE', message: `cannot create the forget key ${path.join(dir, 'd', FORGET_KEY_FILE)}: the name exists but is no readable file` });
    expect(existsSync(path.join(dir, 'nowhere'))).toBe(false);
    expect((e as { cause?: Error }).cause?.message).toBe('the name exists but is no readable file');
    expect(readdirSync(path.join(dir, 'd'))).toEqual([FORGET_KEY_FILE]);
  });

  it('a damaged key (empty, short, not hex) is refused, never used as a weaker key', async () => {
    for (const text of ['', '\n', 'ab\n', `${'zz'.repeat(32)}\n`, `${'ab'.repeat(31)}\n`, `zz${'ab'.repeat(32)}\n`, `${'ab'.repeat(32)}zz\n`, `${'ab'.repeat(33)}\n`]) {
      writeFileSync(path.join(dir, FORGET_KEY_FILE), text);
      const e = await forgetKey(dir).catch((x: unknown) => x);
      expect(e, JSON.stringify(text)).toMatchObject({ code: 'E_AUDIT_WRITE' });
      expect((e as Error).message).toMatch(/is damaged \(\d+ characters, not 64 hex digits\)/);
      expect(readFileSync(path.join(dir, FORGET_KEY_FILE), 'utf8')).toBe(text);
    }
    writeFileSync(path.join(dir, FORGET_KEY_FILE), `  ${'AB'.repeat(32)}\n`);
    expect((await forgetKey(dir)).equals(Buffer.alloc(32, 0xab))).toBe(true);
  });

  it('the hash is HMAC-SHA256 with the key, 128 bits in hex', () => {
    const key = Buffer.alloc(32, 7);
    const h = forgottenId(key, 'user-1');
    expect(h).toMatch(/^forgotten:[0-9a-f]{32}$/);
    expect(forgottenId(key, 'user-1')).toBe(h);
    expect(forgottenId(key, 'user-2')).not.toBe(h);
    expect(forgottenId(Buffer.alloc(32, 8), 'user-1')).not.toBe(h);
    // The keyed hash the module comment promises: HMAC-SHA256(key, id), its first 128 bits.
    expect(h).toBe(`forgotten:${createHmac('sha256', key).update('user-1').digest('hex').slice(0, 32)}`);
  });
});

describe('redactText', () => {
  const tokens = new Map([['62811', 'forgotten:aa'], ['a"b', 'forgotten:bb']]);
  it('replaces an id where it stands alone, raw and JSON-escaped (once and twice), and nowhere inside a longer run', () => {
    expect(redactText('user 62811 wrote', ['62811'], tokens)).toBe('user forgotten:aa wrote');
    expect(redactText('x628110 y162811 z', ['62811'], tokens)).toBe('x628110 y162811 z');
    expect(redactText('memory_backup_62811_20250101_000000.json', ['62811'], tokens)).toBe('memory_backup_forgotten:aa_20250101_000000.json');
    expect(redactText('62811,62811', ['62811'], tokens)).toBe('forgotten:aa,forgotten:aa');
    expect(redactText('é62811é', ['62811'], tokens)).toBe('é62811é');
    // An id with a quote, as it appears in JSON text and in JSON inside a JSON string.
    expect(redactText('{"u":"a\\"b"}', ['a"b'], tokens)).toBe('{"u":"forgotten:bb"}');
    expect(redactText('{"msg":"{\\"u\\":\\"a\\\\\\"b\\"}"}', ['a"b'], tokens)).toBe('{"msg":"{\\"u\\":\\"forgotten:bb\\"}"}');
    expect(redactText('raw a"b here', ['a"b'], tokens)).toBe('raw forgotten:bb here');
    // Regex characters in an id are literal.
    expect(redactText('a.b axb', ['a.b'], new Map())).toBe('forgotten axb');
    expect(redactText('nothing', [], tokens)).toBe('nothing');
  });
});

describe('forgetUsers', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let store: Store;
  let ctx: ForgetContext;
  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir());
    store = createStore(await SqliteDriver.open(path.join(dir, 'memory.db')));
    ctx = { store, backupDir: path.join(dir, 'backups'), audit: new AuditLog(path.join(dir, 'audit.log')), dataDir: dir, legacyTimezone: 'UTC', actor: ACTOR };
  });
  afterEach(async () => {
    await store.close().catch(() => undefined);
    await cleanup();
  });

  it('refuses no ids (E_OPS_ARG) and an invalid one, before anything is written', async () => {
    await expect(forgetUsers(ctx, [])).rejects.toMatchObject({ code: 'E_OPS_ARG', message: 'no user ids given' });
    await expect(forgetUsers(ctx, ['ok', ''])).rejects.toMatchObject({ code: 'E_USER_ID' });
    expect(existsSync(path.join(dir, FORGET_KEY_FILE))).toBe(false);
    expect(existsSync(path.join(dir, 'audit.log'))).toBe(false);
  });

  it('forgets each id once, with no backup directory, and records only counts and hashes', async () => {
    await store.put('u1', rec('u1'));
    await store.put('u2', rec('u2'));
    const r = await forgetUsers(ctx, ['u1', 'u1', 'gone'], { actor: { kind: 'api', name: 'ops' } });
    expect(r.deleted).toBe(1);
    const key = await forgetKey(dir);
    expect(r.hashes).toEqual({ u1: forgottenId(key, 'u1'), gone: forgottenId(key, 'gone') });
    expect(r).toMatchObject({ backupsRewritten: [], filesDeleted: [], logsRedacted: [], auditEntriesRedacted: 0 });
    expect(await store.get('u2')).not.toBeNull();
    const entries = await ctx.audit.read({});
    expect(entries.map((e) => [e.action, e.outcome, e.actor.name])).toEqual([['forget', 'started', 'ops'], ['forget', 'done', 'ops']]);
    expect(entries[0]?.userIds).toEqual([forgottenId(key, 'u1'), forgottenId(key, 'gone')]);
    expect(entries[1]?.details).toEqual({ deleted: 1, backupsRewritten: 0, filesDeleted: 0, logsRedacted: 0, auditEntriesRedacted: 0 });
    expect(entries[1]?.op).toBe(r.auditOp);
    expect(readFileSync(path.join(dir, 'audit.log'), 'utf8')).not.toMatch(/"u1"|"gone"/);
  });

  it("redacts the daemon's log and its rotated copies only, dropping the lines that name the user", async () => {
    await store.put('u1', rec('u1'));
    writeFileSync(path.join(dir, 'chatmem.log'), 'a\nfor u1 here\nb\n');
    writeFileSync(path.join(dir, 'chatmem.log.2'), 'u1\nc');
    writeFileSync(path.join(dir, 'chatmem.log.old'), 'u1 stays: not a daemon log\n');
    writeFileSync(path.join(dir, 'xchatmem.log'), 'u1\n');
    writeFileSync(path.join(dir, 'chatmem.log.3'), 'nobody\n');
    writeFileSync(path.join(dir, 'chatmem.log.10'), 'u1\nd\n');
    for (const other of ['old-chatmem.log.1', 'chatmem.log.2.bak']) writeFileSync(path.join(dir, other), 'u1\n');
    const r = await forgetUsers(ctx, ['u1']);
    expect(r.logsRedacted.sort()).toEqual([path.join(dir, 'chatmem.log'), path.join(dir, 'chatmem.log.10'), path.join(dir, 'chatmem.log.2')]);
    expect(readFileSync(path.join(dir, 'chatmem.log.10'), 'utf8')).toBe('d\n');
    for (const other of ['old-chatmem.log.1', 'chatmem.log.2.bak']) expect(readFileSync(path.join(dir, other), 'utf8')).toBe('u1\n');
    expect(readFileSync(path.join(dir, 'chatmem.log'), 'utf8')).toBe('a\nb\n');
    expect(readFileSync(path.join(dir, 'chatmem.log.2'), 'utf8')).toBe('c');
    expect(statSync(path.join(dir, 'chatmem.log.2')).mode & 0o777).toBe(0o600);
    expect(readFileSync(path.join(dir, 'chatmem.log.old'), 'utf8')).toBe('u1 stays: not a daemon log\n');
    expect(readFileSync(path.join(dir, 'xchatmem.log'), 'utf8')).toBe('u1\n');
    expect(readFileSync(path.join(dir, 'chatmem.log.3'), 'utf8')).toBe('nobody\n');
  });

  it("rewrites the live log in place: the daemon's next line, through its O_APPEND descriptor, lands in it", async () => {
    await store.put('u1', rec('u1'));
    const live = path.join(dir, 'chatmem.log');
    writeFileSync(live, 'a\nu1 line\n', { mode: 0o600 });
    const fd = openSync(live, 'a');
    try {
      await forgetUsers(ctx, ['u1']);
      writeSync(fd, 'next\n');
    } finally {
      closeSync(fd);
    }
    expect(readFileSync(live, 'utf8')).toBe('a\nnext\n');
  });

  it('replaces the id in the audit log by its hash, in values, keys, arrays and torn lines; other lines stay byte for byte', async () => {
    const log = path.join(dir, 'audit.log');
    // Written with spaces, as no writer of ours does: a line without the id must stay as it is.
    const other = '{"v": 1, "ts": "2026-01-01T00:00:00.000Z", "op": "o0", "action": "put", "outcome": "done", "actor": {"kind": "os", "name": "x"}, "userIds": ["u2"]}';
    const mine = '{"v":1,"ts":"2026-01-01T00:00:01.000Z","op":"o1","action":"delete-users","outcome":"done","actor":{"kind":"os","name":"x"},"userIds":["u2","u1"],"details":{"u1":"about u1 and u10","n":5,"list":[["u1"]],"ok":true,"none":null,"count":{"u1":1}}}';
    writeFileSync(log, `${other}\n${mine}\n{"torn":"u1 and more\n`);
    const r = await forgetUsers(ctx, ['u1']);
    const h = r.hashes.u1 as string;
    expect(r.auditEntriesRedacted).toBe(2);
    const lines = readFileSync(log, 'utf8').split('\n');
    expect(lines[0]).toBe(other);
    expect(JSON.parse(lines[1] ?? '')).toEqual({ ...(JSON.parse(mine) as object), userIds: ['u2', h], details: { [h]: `about ${h} and u10`, n: 5, list: [[h]], ok: true, none: null, count: { [h]: 1 } } });
    expect(lines[2]).toBe(`{"torn":"${h} and more`);
  });

  it('in the audit log, a number, boolean or null equal to an id in text stays as it is: the line stays JSON', async () => {
    const log = path.join(dir, 'audit.log');
    const line = '{"v":1,"ts":"2026-01-01T00:00:01.000Z","op":"o1","action":"delete-users","outcome":"done","actor":{"kind":"os","name":"x"},"userIds":["62811"],"details":{"deleted":62811,"ok":true,"none":null,"ids":[62811,"62811"]}}';
    writeFileSync(log, `${line}\n`);
    // Two ids forgotten, the line naming one of them.
    const r = await forgetUsers(ctx, ['62811', 'nobody-here']);
    const h = r.hashes['62811'] as string;
    const [first] = readFileSync(log, 'utf8').split('\n');
    expect(JSON.parse(first ?? '')).toEqual({ ...(JSON.parse(line) as object), userIds: [h], details: { deleted: 62811, ok: true, none: null, ids: [62811, h] } });
  });

  it('finds an id with a quote in the audit log, where JSON text holds it escaped', async () => {
    const log = path.join(dir, 'audit.log');
    const line = JSON.stringify({ v: 1, ts: '2026-01-01T00:00:01.000Z', op: 'o1', action: 'delete-users', outcome: 'done', actor: { kind: 'os', name: 'x' }, userIds: ['u2'], details: { note: 'asked by say "hi" today' } });
    expect(line.includes('say "hi"')).toBe(false);
    writeFileSync(log, `${line}\n`);
    const r = await forgetUsers(ctx, ['say "hi"']);
    expect(r.auditEntriesRedacted).toBe(1);
    const [first] = readFileSync(log, 'utf8').split('\n');
    expect((JSON.parse(first ?? '') as { details: unknown }).details).toEqual({ note: `asked by ${r.hashes['say "hi"'] ?? ''} today` });
  });

  it('removes the users from backups, rewriting or deleting them, and twice finds none', async () => {
    await store.put('u1', rec('u1'));
    await store.put('u2', rec('u2'));
    const full = await writeBackup(ctx.backupDir, [rec('u1'), rec('u2')], { reason: 'manual', scope: 'full', source: 's' });
    const alone = await writeBackup(ctx.backupDir, [rec('u1')], { reason: 'delete-user', scope: ['u1'], source: 's', now: () => new Date('2026-01-01T00:00:00Z') });
    const without = await writeBackup(ctx.backupDir, [rec('u2')], { reason: 'delete-user', scope: ['u2'], source: 's', now: () => new Date('2026-01-02T00:00:00Z') });
    writeFileSync(path.join(ctx.backupDir, 'notes.txt'), 'u1');
    const r = await forgetUsers(ctx, ['u1']);
    expect(r.backupsRewritten).toEqual([full.id]);
    expect(r.filesDeleted).toEqual([`${alone.id}.json`]);
    expect(existsSync(without.file)).toBe(true);
    expect(readFileSync(path.join(ctx.backupDir, 'notes.txt'), 'utf8')).toBe('u1');
    expect(readFileSync(full.file, 'utf8')).not.toContain('"u1"');
    const again = await forgetUsers(ctx, ['u1']);
    expect(again).toMatchObject({ deleted: 0, backupsRewritten: [], filesDeleted: [] });
  });

  it('refuses, changing nothing, while a backup that may hold the user does not verify; the message names no user', async () => {
    await store.put('u1', rec('u1'));
    const b = await writeBackup(ctx.backupDir, [rec('u1'), rec('u2')], { reason: 'manual', scope: 'full', source: 's' });
    writeFileSync(b.file, readFileSync(b.file, 'utf8').replace('"n-u2"', '"n-u3"'));
    const e = await forgetUsers(ctx, ['u1']).catch((x: unknown) => x);
    expect(e).toMatchObject({ code: 'E_BACKUP_VERIFY', details: { id: b.id } });
    expect((e as Error).message).toMatch(new RegExp(`^backup ${b.id} failed verification \\(.+\\); it may hold a user to forget, so nothing was changed\\. Restore or remove it, then forget again\\.$`));
    expect(await store.get('u1')).not.toBeNull();
    expect(await ctx.audit.read({})).toEqual([]);
  });

  it('a backup directory it cannot list is refused with E_BACKUP_READ before anything changes', async () => {
    writeFileSync(ctx.backupDir, 'not a directory');
    await store.put('u1', rec('u1'));
    const e = await forgetUsers(ctx, ['u1']).catch((x: unknown) => x);
    expect(e).toMatchObject({ code: 'E_BACKUP_READ', cause: expect.objectContaining({ code: 'ENOTDIR' }) });
    expect((e as Error).message).toMatch(new RegExp(`^cannot list ${ctx.backupDir}: `));
    expect(await store.get('u1')).not.toBeNull();
  });

  it('waits for a backup still being written, then forgets from it too', async () => {
    await store.put('u1', rec('u1'));
    const b = await writeBackup(ctx.backupDir, [rec('u1'), rec('u2')], { reason: 'manual', scope: 'full', source: 's' });
    const metaFile = path.join(ctx.backupDir, `${b.id}.meta.json`);
    const verified = readFileSync(metaFile, 'utf8');
    writeFileSync(metaFile, JSON.stringify({ ...(JSON.parse(verified) as object), verifiedAt: null }));
    // The writer finishes 500 ms later.
    const done = new Promise<void>((resolve) =>
      setTimeout(() => {
        writeFileSync(metaFile, verified);
        resolve();
      }, 500),
    );
    const r = await forgetUsers(ctx, ['u1']);
    await done;
    expect(r.backupsRewritten).toEqual([b.id]);
    // Rewritten after the writer finished: the manifest on disk describes the rewritten content.
    const src = await openBackup(ctx.backupDir, b.id);
    expect(src.manifest?.users).toBe(1);
    expect(await verifySource(src)).toMatchObject({ ok: true, users: 1 });
  });

  it('a planned backup removed before its rewrite (a prune racing the forget) is skipped; the others are forgotten', async () => {
    await store.put('u1', rec('u1'));
    const kept = await writeBackup(ctx.backupDir, [rec('u1'), rec('u2')], { reason: 'manual', scope: 'full', source: 's', now: () => new Date('2026-01-01T00:00:00Z') });
    const pruned = await writeBackup(ctx.backupDir, [rec('u1'), rec('u2')], { reason: 'manual', scope: 'full', source: 's', now: () => new Date('2026-01-02T00:00:00Z') });
    // After the plan, when the forget writes its audit intent: the second backup goes.
    let removed = false;
    const restore = setFsIo({
      writeSome: async (fh, file, buf) => {
        if (!removed && file === path.join(dir, 'audit.log')) {
          removed = true;
          rmSync(pruned.file);
          rmSync(path.join(ctx.backupDir, `${pruned.id}.meta.json`));
        }
        return defaultFsIo.writeSome(fh, file, buf);
      },
    });
    const r = await forgetUsers(ctx, ['u1']).finally(restore);
    expect(removed).toBe(true);
    expect(r.backupsRewritten).toEqual([kept.id]);
    expect(readdirSync(ctx.backupDir).sort()).toEqual([`${kept.id}.json`, `${kept.id}.meta.json`]);
    expect(readFileSync(kept.file, 'utf8')).not.toContain('"u1"');
  });

  it('a planned backup that cannot be opened by its rewrite (swapped for a symlink) stops the forget with that error', async () => {
    await store.put('u1', rec('u1'));
    const b = await writeBackup(ctx.backupDir, [rec('u1'), rec('u2')], { reason: 'manual', scope: 'full', source: 's', now: () => new Date('2026-01-01T00:00:00Z') });
    const elsewhere = path.join(dir, 'elsewhere.json');
    let swapped = false;
    const restore = setFsIo({
      writeSome: async (fh, file, buf) => {
        if (!swapped && file === path.join(dir, 'audit.log')) {
          swapped = true;
          writeFileSync(elsewhere, readFileSync(b.file));
          rmSync(b.file);
          symlinkSync(elsewhere, b.file);
        }
        return defaultFsIo.writeSome(fh, file, buf);
      },
    });
    const e = await forgetUsers(ctx, ['u1']).catch((x: unknown) => x).finally(restore);
    expect(swapped).toBe(true);
    expect(e).toMatchObject({ code: 'E_BACKUP_NOT_REGULAR' });
  });

  it('a planned backup another forget of the same user rewrote meanwhile is untouched: neither rewritten nor deleted in the answer', async () => {
    await store.put('u1', rec('u1'));
    const b = await writeBackup(ctx.backupDir, [rec('u1'), rec('u2')], { reason: 'manual', scope: 'full', source: 's', now: () => new Date('2026-01-01T00:00:00Z') });
    let raced = false;
    const restore = setFsIo({
      writeSome: async (fh, file, buf) => {
        if (!raced && file === path.join(dir, 'audit.log')) {
          raced = true;
          expect(await rewriteChatmemBackup(await openBackup(ctx.backupDir, b.id), new Set(['u1']))).toBe('rewritten');
        }
        return defaultFsIo.writeSome(fh, file, buf);
      },
    });
    const r = await forgetUsers(ctx, ['u1']).finally(restore);
    expect(raced).toBe(true);
    expect(r).toMatchObject({ backupsRewritten: [], filesDeleted: [] });
    expect(existsSync(b.file)).toBe(true);
  });

  it('a backup that lands during the first pass (its snapshot taken before the delete) is forgotten by the second', async () => {
    await store.put('u1', rec('u1'));
    const first = await writeBackup(ctx.backupDir, [rec('u1'), rec('u2')], { reason: 'manual', scope: 'full', source: 's', now: () => new Date('2026-01-01T00:00:00Z') });
    let late: { id: string; file: string } | null = null;
    // Right before the first rewrite takes its backup's name, a scheduled backup of the old store lands.
    let landing = false;
    const restore = setFsIo({
      rename: async (from, to) => {
        if (to === first.file && !late && !landing) {
          landing = true;
          late = await writeBackup(ctx.backupDir, [rec('u1'), rec('u3')], { reason: 'scheduled', scope: 'full', source: 's', now: () => new Date('2026-01-03T00:00:00Z') });
        }
        return defaultFsIo.rename(from, to);
      },
    });
    const r = await forgetUsers(ctx, ['u1']).finally(restore);
    expect(late).not.toBeNull();
    expect(r.backupsRewritten).toEqual([first.id, (late as unknown as { id: string }).id]);
    for (const f of [first.file, (late as unknown as { file: string }).file]) expect(readFileSync(f, 'utf8')).not.toContain('"u1"');
  });

  it('a failure after the intent closes the audit entry as failed, with the code and no user in the message', async () => {
    await store.put('u1', rec('u1'));
    writeFileSync(path.join(dir, 'chatmem.log.1'), 'u1\n');
    // The rotated log cannot be replaced, with an error whose message names the user.
    const { setFsIo, resetFsIo, defaultFsIo } = await import('../../src/fsio.js');
    setFsIo({
      rename: async (from, to) => {
        if (to.endsWith('chatmem.log.1')) throw Object.assign(new Error(`EIO: cannot rename to ${to} for u1`), { code: 'EIO' });
        return defaultFsIo.rename(from, to);
      },
    });
    try {
      const e = await forgetUsers(ctx, ['u1']).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(Error);
      expect(await store.get('u1')).toBeNull();
      const entries = await ctx.audit.read({});
      expect(entries.map((x) => x.outcome)).toEqual(['started', 'failed']);
      const failed = entries[1];
      // A raw file-system error is no catalogue error: recorded as E_UNKNOWN, its message redacted.
      expect(failed?.error?.code).toBe('E_UNKNOWN');
      expect(failed?.error?.message).toContain('forgotten:');
      expect(JSON.stringify(failed)).not.toMatch(/\bu1\b/);
    } finally {
      resetFsIo();
    }
  });
});
