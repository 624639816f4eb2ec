// The promises of src/store/open.ts: a store URL opens the driver it names (SQLite, JSON file, a real
// PostgreSQL), relative paths against the given directory, read-only when asked (nothing created,
// writes refused), and an unknown kind is refused with E_STORE_URL.
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDriver, openStore } from '../../src/store/open.js';
import { parseStoreUrl, type ParsedStoreUrl } from '../../src/store/url.js';
import { createSchema, describePg } from '../helpers/pg.js';
import { tempDir } from '../helpers/tmp.js';

describe('openDriver and openStore on file stores', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir('chatmem-open-'));
  });
  afterAll(async () => cleanup());

  it('sqlite: relative to cwd, created when writable, left uncreated when read-only', async () => {
    const ro = await openDriver('sqlite:ro/m.db', dir, { readOnly: true });
    expect(ro.kind).toBe('sqlite');
    expect(existsSync(path.join(dir, 'ro'))).toBe(false);
    await ro.close();
    const rw = await openDriver('sqlite:rw/m.db', dir);
    expect(rw.kind).toBe('sqlite');
    expect(rw.url).toBe(`sqlite:${path.join(dir, 'rw/m.db')}`);
    expect(existsSync(path.join(dir, 'rw/m.db'))).toBe(true);
    await rw.close();
  });

  it('json: relative to cwd, from a string or an already parsed URL', async () => {
    const d = await openDriver('json:j/m.json', dir);
    expect([d.kind, d.url]).toEqual(['json', `json:${path.join(dir, 'j/m.json')}`]);
    await d.close();
    const parsed = parseStoreUrl('json:p/m.json', dir);
    const p = await openDriver(parsed);
    expect([p.kind, p.url]).toEqual(['json', `json:${path.join(dir, 'p/m.json')}`]);
    await p.close();
  });

  it('refuses a kind it does not know, and a URL it cannot parse', async () => {
    await expect(openDriver({ kind: 'mysql', display: 'mysql:x' } as unknown as ParsedStoreUrl)).rejects.toMatchObject({
      code: 'E_STORE_URL',
      message: 'unsupported store kind mysql',
    });
    await expect(openDriver('mysql://h/db', dir)).rejects.toMatchObject({ code: 'E_STORE_URL' });
  });

  it('openStore: a store over that driver, with cwd and read-only passed on', async () => {
    const s = await openStore('sqlite:s/m.db', { cwd: dir });
    await s.put('6281', { name: 'Budi' });
    expect((await s.get('6281'))?.name).toBe('Budi');
    await s.close();
    expect(existsSync(path.join(dir, 's/m.db'))).toBe(true);

    const ro = await openStore('sqlite:s/m.db', { cwd: dir, readOnly: true });
    expect((await ro.get('6281'))?.name).toBe('Budi');
    await expect(ro.put('6282', { name: 'x' })).rejects.toMatchObject({ code: 'E_STORE_READONLY' });
    await ro.close();
    const none = await openStore('sqlite:none/m.db', { cwd: dir, readOnly: true });
    expect(existsSync(path.join(dir, 'none'))).toBe(false);
    await none.close();
  });
});

describePg('openDriver on PostgreSQL', () => {
  it('connects to the database the URL names', async () => {
    const { url, drop } = await createSchema();
    try {
      const d = await openDriver(url);
      try {
        expect(d.kind).toBe('postgres');
        expect(await d.count()).toBe(0);
      } finally {
        await d.close();
      }
    } finally {
      await drop();
    }
  });
});
