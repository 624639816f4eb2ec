import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { writeBackup } from '../../src/backup/create.js';
import { AuditLog } from '../../src/ops/audit.js';
import { forgetKey, forgottenId } from '../../src/ops/forget.js';
import { Operations } from '../../src/ops/operations.js';
import { serializeSeed } from '../../src/format/seed.js';
import { SqliteDriver } from '../../src/store/sqlite/index.js';
import { createStore } from '../../src/store/store.js';
import type { Store } from '../../src/store/types.js';
import type { MemoryRecord } from '../../src/record.js';
import { tempDir } from '../helpers/tmp.js';
import { testStores } from '../helpers/stores.js';
import { loadFixture } from '../store/conformance.js';

const DRIVERS = testStores();

const ACTOR = { kind: 'os' as const, name: 'tester' };
const VICTIM = '62899911122233@lid';
// Strings that occur only in the victim's record: none may survive anywhere.
const ADDRESS = 'Jl. Lupakan Saja No 4711, Kota Rahasia';
const OLD_ADDRESS = 'Gang Kenangan Lama 0815, Desa Terlupa';
const SECRET_TEXT = 'nomor seri rahasia XQ-77-ZZ-9';

function victimRecord(): MemoryRecord {
  const base = loadFixture()['628161973069']!;
  return { ...base, user_id: VICTIM, name: 'Siti Terlupakan', address: ADDRESS, history: [{ role: 'user', text: SECRET_TEXT, ts: '2025-11-20T01:02:07Z' }] };
}

/** Every regular file under `root`, recursively. */
function allFiles(root: string): string[] {
  if (!existsSync(root)) return [];
  const out: string[] = [];
  for (const e of readdirSync(root, { withFileTypes: true })) {
    const p = path.join(root, e.name);
    if (e.isDirectory()) out.push(...allFiles(p));
    else if (e.isFile()) out.push(p);
  }
  return out;
}

/** Files (and file names) in which a forbidden string occurs, raw or, for gzip files, decompressed. */
function leaks(root: string, needles: string[]): string[] {
  const found: string[] = [];
  for (const file of allFiles(root)) {
    const bytes = readFileSync(file);
    const contents = [bytes];
    if (bytes[0] === 0x1f && bytes[1] === 0x8b) contents.push(gunzipSync(bytes));
    for (const n of needles) {
      const b = Buffer.from(n, 'utf8');
      if (file.includes(n) || contents.some((c) => c.includes(b) || c.includes(Buffer.from(JSON.stringify(n).slice(1, -1), 'utf8')))) found.push(`${file}: ${n}`);
    }
  }
  return found;
}

const sha = (file: string): string => createHash('sha256').update(readFileSync(file)).digest('hex');

for (const [name, open, describeFor] of DRIVERS) {
  describeFor(`forget on ${name}`, () => {
    let dir: string;
    let cleanup: () => Promise<void>;
    let store: Store;
    let ops: Operations;
    let storage: string;
    let backupDir: string;

    beforeEach(async () => {
      ({ dir, cleanup } = await tempDir());
      storage = path.join(dir, 'storage');
      mkdirSync(storage, { recursive: true });
      store = await open(storage);
      backupDir = path.join(storage, 'backups');
      ops = new Operations({ store, backupDir, audit: new AuditLog(path.join(storage, 'audit.log')), actor: ACTOR, dataDir: dir });
    });

    afterEach(async () => {
      await store.close().catch(() => undefined);
      await cleanup();
    });

    it('removes the user from the store, every kind of backup, the logs and the audit log, and nothing else', async () => {
      const fixture = loadFixture();
      const others = Object.keys(fixture).slice(0, 12);
      for (const id of others) await store.put(id, fixture[id]!);
      // Older versions of the record (another address, shorter history) are what SQLite keeps in free pages.
      // Large enough to spill onto overflow pages, which an update frees to the free list as they are.
      const long = Array.from({ length: 40 }, (_, i) => ({ role: 'user' as const, text: `${OLD_ADDRESS} ${i} ${'x'.repeat(300)}`, ts: '2025-11-20T01:02:07Z' }));
      await store.put(VICTIM, { ...victimRecord(), address: OLD_ADDRESS, history: long });
      await store.put(VICTIM, { ...victimRecord(), address: OLD_ADDRESS });
      for (let i = 0; i < 5; i++) await store.appendHistory(VICTIM, { role: 'bot', text: `balasan ${i}` });
      await store.patch(VICTIM, { address: ADDRESS });
      const victim = (await store.get(VICTIM))!;
      const other = (await store.get(others[0]!))!;

      // Backups: plain and gzip full, a per-user backup of the victim alone (deleted whole), a per-user
      // backup of the victim with someone else (rewritten), one without the victim (left as it is).
      const plain = await ops.createBackup();
      const gz = await ops.createBackup({ gzip: true });
      const alone = await ops.truncateHistory(VICTIM, 2);
      expect(alone.backup).not.toBeNull();
      await store.appendHistory(VICTIM, { role: 'user', text: SECRET_TEXT });
      const both = await writeBackup(backupDir, [other, victim].sort((a, b) => (a.user_id < b.user_id ? -1 : 1)), { reason: 'delete-user', scope: [other.user_id, VICTIM], source: store.url });
      const without = await writeBackup(backupDir, [other], { reason: 'delete-user', scope: [other.user_id], source: store.url });
      // The seed's files: pretty-printed copies of memory.json (plain and gzip) and a per-user reset file.
      const legacyMap: [string, unknown][] = [...others.slice(0, 3).map((id) => [id, fixture[id]] as [string, unknown]), [VICTIM, victim]];
      writeFileSync(path.join(backupDir, 'memory_backup_20251125_132811.json'), serializeSeed(legacyMap));
      writeFileSync(path.join(backupDir, 'memory_backup_20251124_101010.json.gz'), gzipSync(serializeSeed(legacyMap)));
      writeFileSync(path.join(backupDir, `memory_backup_${VICTIM}_20251125_140002.json`), JSON.stringify({ user_id: VICTIM, backup_timestamp: '20251125_140002', record: victim }, null, 2));
      const legacyOther = path.join(backupDir, 'memory_backup_20251120_080000.json');
      writeFileSync(legacyOther, serializeSeed(others.slice(3, 5).map((id) => [id, fixture[id]] as [string, unknown])));
      // The audit log names the victim (the truncate above); so does the daemon's log.
      writeFileSync(path.join(dir, 'chatmem.log'), `{"msg":"started"}\n{"msg":"request failed","err":"unknown user: \\"${VICTIM}\\""}\n{"msg":"ok","user":"${others[1]}"}\n`);
      writeFileSync(path.join(dir, 'chatmem.log.1'), `old line\nwrite for ${VICTIM} failed\n`);
      const before = Object.fromEntries(readdirSync(backupDir).map((n) => [n, sha(path.join(backupDir, n))]));
      const backupsBefore = await ops.listBackups();
      expect(leaks(dir, [VICTIM, ADDRESS]).length).toBeGreaterThan(0);

      const result = await ops.forget([VICTIM]);

      expect(result.deleted).toBe(1);
      expect(await store.get(VICTIM)).toBeNull();
      for (const id of others) expect(await store.get(id)).not.toBeNull();
      expect(result.backupsRewritten.sort()).toEqual([plain.id, gz.id, both.id, 'memory_backup_20251124_101010', 'memory_backup_20251125_132811'].sort());
      expect(result.filesDeleted.sort()).toEqual([`${alone.backup!}.json`, `memory_backup_${VICTIM}_20251125_140002.json`].sort());
      expect(result.logsRedacted.map((f) => path.basename(f)).sort()).toEqual(['chatmem.log', 'chatmem.log.1']);

      // Nothing of the victim anywhere: store files, backups (decompressed too), audit log, daemon logs.
      expect(leaks(dir, [VICTIM, ADDRESS, OLD_ADDRESS, SECRET_TEXT])).toEqual([]);

      // Every backup still verifies; unaffected ones are byte for byte as they were; none lost but the two deleted.
      const verified = await ops.verifyBackups();
      expect(verified.filter((v) => !v.ok)).toEqual([]);
      expect(verified.length).toBe(backupsBefore.length - 2);
      expect(sha(without.file)).toBe(before[path.basename(without.file)]);
      expect(sha(path.join(backupDir, `${without.id}.meta.json`))).toBe(before[`${without.id}.meta.json`]);
      expect(sha(legacyOther)).toBe(before[path.basename(legacyOther)]);
      // Rewritten backups keep everyone else, with the same records.
      const inPlain = await ops.inspectBackup(plain.id, { user: others[2]! });
      expect(inPlain.record).toEqual(await store.get(others[2]!));
      expect((await ops.inspectBackup(plain.id)).users).toBe(others.length);
      expect((await ops.inspectBackup(both.id)).manifest?.scope).toEqual([other.user_id]);
      expect((await ops.inspectBackup('memory_backup_20251125_132811')).users).toBe(3);
      expect((await ops.inspectBackup('memory_backup_20251124_101010.json.gz')).users).toBe(3);

      // The audit log answers "was this person forgotten, when, by whom" through the keyed hash only.
      const hash = forgottenId(await forgetKey(dir), VICTIM);
      expect(result.hashes[VICTIM]).toBe(hash);
      const entries = await ops.audit.read({ user: hash });
      expect(entries.map((e) => `${e.action}/${e.outcome}`)).toEqual(['truncate-history/started', 'truncate-history/done', 'forget/started', 'forget/done']);
      expect(entries.at(-1)?.actor.name).toBe('tester');
      expect(statSync(path.join(dir, 'forget.key')).mode & 0o777).toBe(0o600);
      // Log lines of other users stay.
      expect(readFileSync(path.join(dir, 'chatmem.log'), 'utf8')).toContain(others[1]!);
      expect(readFileSync(path.join(dir, 'chatmem.log.1'), 'utf8')).toBe('old line\n');

      // Forgetting again finds nothing left and changes nothing.
      const again = await ops.forget([VICTIM]);
      expect(again).toMatchObject({ deleted: 0, backupsRewritten: [], filesDeleted: [], logsRedacted: [] });
      await store.close();
      expect(leaks(dir, [VICTIM, ADDRESS, OLD_ADDRESS, SECRET_TEXT])).toEqual([]);
    });

    it('refuses, changing nothing, while a backup that may hold the user fails verification', async () => {
      await store.put(VICTIM, victimRecord());
      const b = await ops.createBackup();
      const text = readFileSync(b.file, 'utf8');
      writeFileSync(b.file, text.replace('Siti', 'Sita'));
      await expect(ops.forget([VICTIM])).rejects.toMatchObject({ code: 'E_BACKUP_VERIFY' });
      expect(await store.get(VICTIM)).not.toBeNull();
    });
  });
}

describe('a forget killed between replacing a backup and writing its manifest', () => {
  it('is completed at the next start from the intent file: the new content gets its manifest', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      const store = createStore(await SqliteDriver.open(path.join(dir, 'memory.db')));
      const backupDir = path.join(dir, 'backups');
      const ops = new Operations({ store, backupDir, audit: new AuditLog(path.join(dir, 'audit.log')), actor: ACTOR, dataDir: dir });
      await store.put(VICTIM, victimRecord());
      await store.put('628161973069', loadFixture()['628161973069']!);
      const b = await ops.createBackup();
      const metaFile = path.join(backupDir, `${b.id}.meta.json`);
      const oldMeta = readFileSync(metaFile, 'utf8');
      await ops.forget([VICTIM]);
      const newMeta = JSON.parse(readFileSync(metaFile, 'utf8')) as { sha256: string; users: number; bytes: number; scope: string[] };
      // The state a kill right after the rename leaves: new content, old manifest, the intent beside them.
      writeFileSync(metaFile, oldMeta);
      const intent = { format: 'chatmem-rewrite', file: `${b.id}.json`, next: { sha256: newMeta.sha256, users: newMeta.users, bytes: newMeta.bytes, scope: newMeta.scope }, writer: { pid: 2 ** 22 + 1, host: (await import('node:os')).hostname() } };
      writeFileSync(path.join(backupDir, `${b.id}.rewrite.json`), JSON.stringify(intent));
      expect((await ops.verifyBackups(b.id))[0]?.ok).toBe(false);
      const report = await ops.finishLeftovers();
      expect(report.completedRewrites).toEqual([`${b.id}.json`]);
      expect((await ops.verifyBackups(b.id))[0]).toMatchObject({ ok: true, users: 1 });
      expect(existsSync(path.join(backupDir, `${b.id}.rewrite.json`))).toBe(false);
      await store.close();
    } finally {
      await cleanup();
    }
  });
});
