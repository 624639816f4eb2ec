import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BACKUP_REASONS, readManifest, writeManifest, type BackupManifest } from '../../src/backup/manifest.js';
import { ROOT, tempDir } from '../helpers/tmp.js';

// A manifest is what every reader trusts about a backup (its digest, count, whether it was verified):
// one that lacks a field is refused as damaged, naming the field, never trusted half-way.
const good: BackupManifest = {
  format: 'chatmem-backup',
  formatVersion: 1,
  file: 'memory-2026-11-30T09-00-00Z-manual.json',
  created_at: '2026-11-30T09:00:00.000Z',
  reason: 'manual',
  scope: 'full',
  users: 3,
  bytes: 120,
  sha256: 'a'.repeat(64),
  gzip: false,
  source: 'sqlite:///data/memory.db',
  chatmemVersion: '0.0.0',
  auditOp: null,
  verifiedAt: '2026-11-30T09:00:01.000Z',
};

let dir: string;
let cleanup: () => Promise<void>;
let n = 0;

beforeAll(async () => {
  ({ dir, cleanup } = await tempDir());
});
afterAll(async () => {
  await cleanup();
});

/** Writes `text` as the manifest of a fresh backup name and returns that name. */
async function withManifest(text: string): Promise<string> {
  const name = `memory-2026-11-30T09-00-${String(n++).padStart(2, '0')}Z-manual.json`;
  await fsp.writeFile(path.join(dir, name.replace(/\.json$/, '.meta.json')), text);
  return name;
}

async function refusal(name: string): Promise<{ code: string; message: string; details: unknown; cause: unknown }> {
  const err = await readManifest(dir, name).then(
    () => null,
    (e: unknown) => e as { code: string; message: string; details: unknown; cause: unknown },
  );
  if (err === null) throw new Error(`manifest of ${name} was accepted`);
  return err;
}

describe('readManifest', () => {
  it('reads back exactly what writeManifest wrote, for a .json and a .json.gz backup', async () => {
    await writeManifest(dir, good);
    expect(await readManifest(dir, good.file)).toEqual(good);
    // A text file an operator may cat or append to: it ends with a newline.
    expect(await fsp.readFile(path.join(dir, 'memory-2026-11-30T09-00-00Z-manual.meta.json'), 'utf8')).toMatch(/\}\n$/);
    const gz = { ...good, file: 'memory-2026-11-30T10-00-00Z-clear-all.json.gz', gzip: true, reason: 'clear-all' as const, scope: ['u1', 'u2'], verifiedAt: null, writer: { pid: 42, host: 'h' } };
    await writeManifest(dir, gz);
    expect(await fsp.readdir(dir)).toContain('memory-2026-11-30T10-00-00Z-clear-all.meta.json');
    expect(await readManifest(dir, gz.file)).toEqual(gz);
    expect(BACKUP_REASONS).toContain(gz.reason);
  });

  it('README names exactly the reasons a manifest may carry (the API accepts these for a backup)', async () => {
    const readme = await fsp.readFile(path.join(ROOT, 'README.md'), 'utf8');
    const line = /`reason` \(([^)]*)\)/.exec(readme)?.[1] ?? '';
    expect(line.split(', ').map((r) => r.replaceAll('`', ''))).toEqual([...BACKUP_REASONS]);
  });

  it('does not hold a descriptor open after a read (the daemon reads manifests on every listing)', async () => {
    await writeManifest(dir, good);
    const file = path.join(dir, 'memory-2026-11-30T09-00-00Z-manual.meta.json');
    // Descriptors of this process open on the manifest, checked right after each read (before any GC).
    const openOnManifest = async () => {
      let n = 0;
      for (const fd of await fsp.readdir('/proc/self/fd')) {
        if ((await fsp.readlink(`/proc/self/fd/${fd}`).catch(() => '')) === file) n++;
      }
      return n;
    };
    for (let i = 0; i < 5; i++) {
      await readManifest(dir, good.file);
      expect(await openOnManifest()).toBe(0);
    }
  });

  it('answers null for a backup without a manifest (a legacy file), but not for one it cannot read', async () => {
    expect(await readManifest(dir, 'memory-2001-01-01T00-00-00Z-manual.json')).toBeNull();
    const name = 'memory-2026-11-30T11-00-00Z-manual.json';
    await fsp.mkdir(path.join(dir, 'memory-2026-11-30T11-00-00Z-manual.meta.json'));
    const err = await refusal(name);
    expect(err.code).toBe('E_BACKUP_MANIFEST');
    expect(err.message).toMatch(/^cannot read manifest .*memory-2026-11-30T11-00-00Z-manual\.meta\.json: /);
    expect(err.details).toEqual({ file: path.join(dir, 'memory-2026-11-30T11-00-00Z-manual.meta.json') });
    expect(err.cause).toBeInstanceOf(Error);
  });

  it('never follows a symlink, even to a valid manifest', async () => {
    await writeManifest(dir, good);
    const name = 'memory-2026-11-30T12-00-00Z-manual.json';
    const link = path.join(dir, 'memory-2026-11-30T12-00-00Z-manual.meta.json');
    await fsp.symlink(path.join(dir, 'memory-2026-11-30T09-00-00Z-manual.meta.json'), link);
    const err = await refusal(name);
    expect(err.code).toBe('E_BACKUP_MANIFEST');
    expect(err.message).toBe(`cannot read manifest ${link}: it is a symlink (never followed)`);
  });

  it('refuses a FIFO as not a regular file instead of waiting on it', async () => {
    const name = 'memory-2026-11-30T13-00-00Z-manual.json';
    const fifo = path.join(dir, 'memory-2026-11-30T13-00-00Z-manual.meta.json');
    const { execFileSync } = await import('node:child_process');
    execFileSync('mkfifo', [fifo]);
    const err = await refusal(name);
    expect(err.message).toBe(`cannot read manifest ${fifo}: not a regular file`);
  });

  it('refuses text that is not JSON, keeping the parser error as the cause', async () => {
    const name = await withManifest('{"format": "chatmem-backup",');
    const err = await refusal(name);
    expect(err.code).toBe('E_BACKUP_MANIFEST');
    expect(err.message).toMatch(/^invalid manifest .*\.meta\.json: .+/);
    expect(err.cause).toBeInstanceOf(SyntaxError);
    expect(err.details).toEqual({ file: path.join(dir, name.replace(/\.json$/, '.meta.json')) });
  });

  const broken: [string, unknown, string][] = [
    ['an array', [good], 'not a JSON object'],
    ['null', null, 'not a JSON object'],
    ['a string', 'chatmem-backup', 'not a JSON object'],
    ['another format', { ...good, format: 'restic' }, 'not a chatmem manifest'],
    ['no file', { ...good, file: undefined }, '"file" is missing'],
    ['a numeric file', { ...good, file: 7 }, '"file" is missing'],
    ['no sha256', { ...good, sha256: undefined }, '"sha256" is not a SHA-256 hex digest'],
    ['a short sha256', { ...good, sha256: 'a'.repeat(63) }, '"sha256" is not a SHA-256 hex digest'],
    ['an upper-case sha256', { ...good, sha256: 'A'.repeat(64) }, '"sha256" is not a SHA-256 hex digest'],
    ['a sha256 with a prefix', { ...good, sha256: `x${'a'.repeat(64)}` }, '"sha256" is not a SHA-256 hex digest'],
    ['a sha256 with a suffix', { ...good, sha256: `${'a'.repeat(64)}x` }, '"sha256" is not a SHA-256 hex digest'],
    ['a sha256 in a list', { ...good, sha256: ['a'.repeat(64)] }, '"sha256" is not a SHA-256 hex digest'],
    ['a fractional user count', { ...good, users: 1.5 }, '"users" is not a count'],
    ['a negative user count', { ...good, users: -1 }, '"users" is not a count'],
    ['a textual user count', { ...good, users: '3' }, '"users" is not a count'],
    ['a fractional byte count', { ...good, bytes: 0.5 }, '"bytes" is not a count'],
    ['a negative byte count', { ...good, bytes: -1 }, '"bytes" is not a count'],
    ['no gzip', { ...good, gzip: undefined }, '"gzip" is not a boolean'],
    ['gzip as text', { ...good, gzip: 'false' }, '"gzip" is not a boolean'],
    ['no created_at', { ...good, created_at: undefined }, '"created_at" is not a date'],
    ['a created_at that is no date', { ...good, created_at: 'yesterday' }, '"created_at" is not a date'],
    ['a numeric created_at', { ...good, created_at: 0 }, '"created_at" is not a date'],
    ['a scope that is a word', { ...good, scope: 'some' }, '"scope" is neither "full" nor a list of user ids'],
    ['a scope with a number', { ...good, scope: ['u1', 2] }, '"scope" is neither "full" nor a list of user ids'],
    ['a numeric verifiedAt', { ...good, verifiedAt: 1 }, '"verifiedAt" is not a date'],
    ['no verifiedAt', { ...good, verifiedAt: undefined }, '"verifiedAt" is not a date'],
  ];

  it.each(broken)('refuses a manifest with %s, naming the problem', async (_what, doc, problem) => {
    const name = await withManifest(JSON.stringify(doc));
    const err = await refusal(name);
    const file = path.join(dir, name.replace(/\.json$/, '.meta.json'));
    expect(err.code).toBe('E_BACKUP_MANIFEST');
    expect(err.message).toBe(`invalid manifest ${file}: ${problem}`);
    expect(err.details).toEqual({ file });
  });

  it('accepts the edge values: zero counts, an empty scope list, a pending verification', async () => {
    for (const doc of [
      { ...good, users: 0, bytes: 0 },
      { ...good, scope: [] },
      { ...good, scope: ['62811', 'ünïcode'] },
      { ...good, verifiedAt: null },
      { ...good, gzip: true },
    ]) {
      const name = await withManifest(JSON.stringify(doc));
      expect(await readManifest(dir, name)).toEqual(doc);
    }
  });
});
