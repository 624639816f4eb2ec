import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { PassThrough } from 'node:stream';
import { gunzipSync } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { resetFsIo, setFsIo } from '../../src/fsio.js';
import { exportStore } from '../../src/ops/export.js';
import { parseRecord } from '../../src/record.js';
import { SqliteDriver } from '../../src/store/sqlite/index.js';
import { createStore } from '../../src/store/store.js';
import type { Store } from '../../src/store/types.js';
import { tempDir } from '../helpers/tmp.js';

// The promises of src/ops/export.ts on a real SQLite store and real files: the whole store in the seed
// format, a file target replaced atomically (temp, fsync, rename, directory fsync) with mode 0600 and
// never half-written, a stream target written as is and left open, gzip on request.

let dir: string;
let cleanup: () => Promise<void>;
let store: Store;

beforeEach(async () => {
  ({ dir, cleanup } = await tempDir('chatmem-export-mut-'));
  store = createStore(await SqliteDriver.open(path.join(dir, 'memory.db')));
  await store.exclusive('all', (ctx) => ctx.putMany(['b', 'a', 'c'].map((id) => parseRecord(id, { name: `N ${id}` }))));
});
afterEach(async () => {
  resetFsIo();
  await store.close();
  await cleanup();
});

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('exportStore', () => {
  it('writes the whole store to a file (0600, path resolved), through a temp file, the directory synced after the rename', async () => {
    const events: string[] = [];
    setFsIo({
      rename: async (from, to) => {
        events.push(`rename ${path.basename(from)} -> ${path.basename(to)}`);
        const { promises } = await import('node:fs');
        return promises.rename(from, to);
      },
      fsyncDir: async (d) => {
        events.push(`fsyncDir ${d}`);
      },
    });
    const progress: number[] = [];
    const rel = path.relative(process.cwd(), path.join(dir, 'out.json'));
    const r = await exportStore(store, rel, { onProgress: (n) => void progress.push(n) });
    const file = path.join(dir, 'out.json');
    expect(r.file).toBe(file);
    expect(r.users).toBe(3);
    const bytes = readFileSync(file);
    expect(r.bytes).toBe(bytes.length);
    expect(r.sha256).toBe(sha(bytes));
    const data = JSON.parse(bytes.toString('utf8')) as Record<string, { name: string }>;
    expect(Object.keys(data)).toEqual(['a', 'b', 'c']);
    expect(data.b?.name).toBe('N b');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(progress.at(-1)).toBe(3);
    expect(events).toHaveLength(2);
    expect(events[0]).toMatch(/^rename \.out\.json\.\d+\.[0-9a-f]{8}\.tmp -> out\.json$/);
    expect(events[1]).toBe(`fsyncDir ${dir}`);
    expect(readdirSync(dir).filter((n) => n.endsWith('.tmp'))).toEqual([]);
  });

  it('replaces an existing file whole, and gzips when asked', async () => {
    const file = path.join(dir, 'out.json.gz');
    writeFileSync(file, 'old content');
    const r = await exportStore(store, file, { gzip: true });
    // The checksum and size are the JSON text's, as a backup manifest counts them.
    const text = gunzipSync(readFileSync(file));
    expect(r.sha256).toBe(sha(text));
    expect(r.bytes).toBe(text.length);
    expect(Object.keys(JSON.parse(text.toString('utf8')) as object)).toEqual(['a', 'b', 'c']);
  });

  it('a failed rename leaves no temp file and the old file as it was', async () => {
    const file = path.join(dir, 'out.json');
    writeFileSync(file, 'old content');
    setFsIo({ rename: async () => Promise.reject(Object.assign(new Error('EIO: injected'), { code: 'EIO' })) });
    await expect(exportStore(store, file)).rejects.toThrow('EIO: injected');
    expect(readFileSync(file, 'utf8')).toBe('old content');
    expect(readdirSync(dir).filter((n) => n.endsWith('.tmp'))).toEqual([]);
  });

  it('a failed directory sync is an error, not a success', async () => {
    setFsIo({ fsyncDir: async () => Promise.reject(Object.assign(new Error('EIO: dir sync'), { code: 'EIO' })) });
    await expect(exportStore(store, path.join(dir, 'out.json'))).rejects.toThrow('EIO: dir sync');
  });

  it('a stream target gets the same text, is not ended, and no file is named', async () => {
    const out = new PassThrough();
    const chunks: Buffer[] = [];
    out.on('data', (c: Buffer) => chunks.push(c));
    let ended = false;
    out.on('finish', () => (ended = true));
    const r = await exportStore(store, out);
    expect(r.file).toBeNull();
    expect(r.users).toBe(3);
    await new Promise((resolve) => setImmediate(resolve));
    expect(ended).toBe(false);
    const text = Buffer.concat(chunks);
    expect(r.sha256).toBe(sha(text));
    const file = await exportStore(store, path.join(dir, 'same.json'));
    expect(readFileSync(path.join(dir, 'same.json')).equals(text)).toBe(true);
    expect(file.sha256).toBe(r.sha256);
    out.end();
    expect(existsSync(path.join(dir, 'same.json'))).toBe(true);
  });
});
