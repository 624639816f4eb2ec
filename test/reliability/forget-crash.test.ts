/**
 * A forget SIGKILLed at random moments (the built dist, as an operator's process would run): after the
 * start-up recovery every backup verifies, none that holds anyone else is lost, each is either the old
 * file or its verified rewrite, and a second forget finishes the job with nothing of the user left.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeBackup } from '../../src/backup/create.js';
import { AuditLog } from '../../src/ops/audit.js';
import { Operations } from '../../src/ops/operations.js';
import { serializeSeed } from '../../src/format/seed.js';
import { openStore } from '../../src/store/open.js';
import type { MemoryRecord } from '../../src/record.js';
import { ROOT, tempDir } from '../helpers/tmp.js';
import { loadFixture } from '../store/conformance.js';

const USERS = 1500;
const VICTIM = 'user_0750';
const MARK = 'Alamat Unik Korban 31337';
const ACTOR = { kind: 'os' as const, name: 'crash-test' };

function runChild(args: string[], killAfterMs: number | null): Promise<{ killed: boolean; ms: number | null }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(ROOT, 'test/fixtures/crash-forget.mjs'), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    let armed = false;
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (killAfterMs !== null && out.startsWith('ready\n') && !armed) {
        armed = true;
        setTimeout(() => child.kill('SIGKILL'), killAfterMs);
      }
    });
    child.on('exit', (code, signal) => {
      if (signal === 'SIGKILL') return resolve({ killed: true, ms: null });
      if (code !== 0) return reject(new Error(`child failed (${code}): ${err}`));
      const m = /done (\d+)/.exec(out);
      resolve({ killed: false, ms: m ? Number(m[1]) : null });
    });
  });
}

const sha = (file: string): string => createHash('sha256').update(readFileSync(file)).digest('hex');

function holdsMark(file: string): boolean {
  let bytes = readFileSync(file);
  if (bytes[0] === 0x1f && bytes[1] === 0x8b) bytes = gunzipSync(bytes);
  return bytes.includes(Buffer.from(MARK)) || bytes.includes(Buffer.from(VICTIM));
}

describe('forget killed at random moments', () => {
  let root: string;
  let cleanup: () => Promise<void>;
  const pristine = { store: '', backups: '' };
  // Per backup file of the pristine set: its hash, and whether it holds anyone but the victim.
  const before = new Map<string, { sha: string; others: boolean; victim: boolean }>();

  beforeAll(async () => {
    ({ dir: root, cleanup } = await tempDir('chatmem-forget-crash-'));
    pristine.store = path.join(root, 'pristine.db');
    pristine.backups = path.join(root, 'pristine-backups');
    const fixture = Object.values(loadFixture());
    const records: MemoryRecord[] = Array.from({ length: USERS }, (_, i) => {
      const id = `user_${String(i).padStart(4, '0')}`;
      return { ...(fixture[i % fixture.length] as MemoryRecord), user_id: id, name: `User ${i}`, address: id === VICTIM ? MARK : `Jl. ${i}` };
    });
    const store = await openStore(`sqlite:${pristine.store}`);
    await store.exclusive('all', (ctx) => ctx.putMany(records));
    const ops = new Operations({ store, backupDir: pristine.backups, audit: new AuditLog(path.join(root, 'pristine-audit.log')), actor: ACTOR, dataDir: root });
    const t = (s: number) => () => new Date(Date.UTC(2026, 10, 1, 0, 0, s));
    await writeBackup(pristine.backups, { json: store.scanJson() }, { reason: 'manual', scope: 'full', source: store.url, now: t(1) });
    await writeBackup(pristine.backups, { json: store.scanJson() }, { reason: 'manual', scope: 'full', source: store.url, gzip: true, now: t(2) });
    const victim = records[750]!;
    await writeBackup(pristine.backups, [records[100]!, victim], { reason: 'delete-user', scope: [records[100]!.user_id, VICTIM], source: store.url, now: t(3) });
    await writeBackup(pristine.backups, [victim], { reason: 'reset', scope: [VICTIM], source: store.url, now: t(4) });
    await writeBackup(pristine.backups, [records[200]!], { reason: 'delete-user', scope: [records[200]!.user_id], source: store.url, now: t(5) });
    writeFileSync(path.join(pristine.backups, 'memory_backup_20251125_132811.json'), serializeSeed(records.slice(700, 800).map((r) => [r.user_id, r])));
    writeFileSync(path.join(pristine.backups, `memory_backup_${VICTIM}_20251125_140002.json`), JSON.stringify({ user_id: VICTIM, backup_timestamp: '20251125_140002', record: victim }, null, 2));
    await ops.store.close();
    const holdsOthers = (file: string): boolean => {
      const text = readFileSync(file);
      const plain = text[0] === 0x1f ? gunzipSync(text).toString('utf8') : text.toString('utf8');
      return /"user_(?!0750)\d{4}"/.test(plain);
    };
    const names = readdirSync(pristine.backups);
    for (const name of names) {
      const file = path.join(pristine.backups, name);
      // A manifest goes with its backup: a backup that held only the victim is deleted with its manifest.
      const data = name.endsWith('.meta.json') ? names.find((n) => n === name.replace(/\.meta\.json$/, '.json') || n === name.replace(/\.meta\.json$/, '.json.gz')) : name;
      const others = data === undefined ? true : holdsOthers(path.join(pristine.backups, data));
      before.set(name, { sha: sha(file), others, victim: holdsMark(file) });
    }
  });

  afterAll(async () => {
    await cleanup();
  });

  it('leaves every backup verified, none lost, each old or rewritten; a second forget completes it', async () => {
    const runDir = path.join(root, 'run');
    const reset = (): { file: string; backupDir: string; audit: string } => {
      rmSync(runDir, { recursive: true, force: true });
      cpSync(pristine.backups, path.join(runDir, 'backups'), { recursive: true });
      cpSync(pristine.store, path.join(runDir, 'memory.db'));
      writeFileSync(path.join(runDir, 'chatmem.log'), `line about ${VICTIM}\nother line\n`);
      return { file: path.join(runDir, 'memory.db'), backupDir: path.join(runDir, 'backups'), audit: path.join(runDir, 'audit.log') };
    };
    const args = (s: ReturnType<typeof reset>) => [`sqlite:${s.file}`, s.backupDir, s.audit, runDir, VICTIM];

    // An uncrashed run gives the span the kills are spread over.
    const full = await runChild(args(reset()), null);
    expect(full.killed).toBe(false);
    const span = Math.max(50, full.ms ?? 1000);

    let killedBeforeAnyRewrite = 0;
    let killedAfterSomeRewrite = 0;
    let runs = 0;
    const t0 = Date.now();
    while (runs < 10 || ((killedBeforeAnyRewrite === 0 || killedAfterSomeRewrite === 0) && runs < 20 && Date.now() - t0 < 60_000)) {
      runs++;
      const s = reset();
      const r = await runChild(args(s), Math.floor(Math.random() * span * 1.1));

      const store = await openStore(`sqlite:${s.file}`);
      const ops = new Operations({ store, backupDir: s.backupDir, audit: new AuditLog(s.audit), actor: ACTOR, dataDir: runDir });
      try {
        await ops.recover();
        const names = new Set(readdirSync(s.backupDir));
        expect([...names].filter((n) => n.endsWith('.tmp') || n.endsWith('.rewrite.json')), 'leftovers after recovery').toEqual([]);
        const verified = await ops.verifyBackups();
        expect(verified.filter((v) => !v.ok), `run ${runs}: backups that fail verification`).toEqual([]);
        let rewritten = 0;
        for (const [name, b] of before) {
          if (!names.has(name)) {
            // Only a file that held nobody else may be gone.
            expect(b.others, `run ${runs}: ${name} lost`).toBe(false);
            continue;
          }
          const now = sha(path.join(s.backupDir, name));
          if (now === b.sha) continue;
          rewritten++;
          if (!name.endsWith('.meta.json')) expect(holdsMark(path.join(s.backupDir, name)), `run ${runs}: ${name} changed but still holds the user`).toBe(false);
        }
        if (r.killed && rewritten === 0) killedBeforeAnyRewrite++;
        if (r.killed && rewritten > 0) killedAfterSomeRewrite++;
        expect(await store.count()).toBeGreaterThanOrEqual(USERS - 1);
        expect(await store.get('user_0751')).not.toBeNull();

        // The operator forgets again: everything is gone.
        await ops.forget([VICTIM]);
      } finally {
        await store.close();
      }
      const leaks: string[] = [];
      const walk = (d: string): void => {
        for (const e of readdirSync(d, { withFileTypes: true })) {
          const p = path.join(d, e.name);
          if (e.isDirectory()) walk(p);
          else if (holdsMark(p) || p.includes(VICTIM)) leaks.push(p);
        }
      };
      walk(runDir);
      expect(leaks, `run ${runs}: files still naming the user`).toEqual([]);
      expect(existsSync(path.join(s.backupDir, `memory_backup_${VICTIM}_20251125_140002.json`))).toBe(false);
    }
    console.log(`forget crash: ${runs} runs over ${span} ms; killed before any rewrite ${killedBeforeAnyRewrite}, after some ${killedAfterSomeRewrite}`);
    // Both kinds of crash happened: before the first backup changed, and with some already rewritten.
    expect(killedBeforeAnyRewrite).toBeGreaterThan(0);
    expect(killedAfterSomeRewrite).toBeGreaterThan(0);
  }, 180_000);
});
