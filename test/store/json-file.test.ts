import * as path from 'node:path';
import { copyFileSync, readFileSync, statSync, writeFileSync, chmodSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { JsonFileDriver, serializeSeed } from '../../src/store/json-file.js';
import { createStore } from '../../src/store/store.js';
import { openStore } from '../../src/store/open.js';
import { FIXTURES, tempDir } from '../helpers/tmp.js';
import { loadFixture, testStore } from './conformance.js';

testStore('json-file', async () => {
  const t = await tempDir();
  const file = path.join(t.dir, 'storage', 'memory.json');
  return {
    url: `json:${file}`,
    open: async (options) => createStore(await JsonFileDriver.open(file), options),
    cleanup: t.cleanup,
  };
});

describe('json-file driver specifics', () => {
  it('refuses memory.truncated.json with the file and position, and leaves it byte-identical', async () => {
    const t = await tempDir();
    try {
      const file = path.join(t.dir, 'memory.json');
      copyFileSync(path.join(FIXTURES, 'memory.truncated.json'), file);
      chmodSync(file, 0o644);
      const before = readFileSync(file);
      const mtime = statSync(file).mtimeMs;
      const err = await openStore(`json:${file}`).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toMatchObject({ code: 'E_STORE_PARSE' });
      const message = (err as Error).message;
      expect(message).toContain(file);
      expect(message).toMatch(/line 11757/);
      expect(message).toMatch(/column \d+/);
      expect(readFileSync(file).equals(before)).toBe(true);
      expect(statSync(file).mtimeMs).toBe(mtime);
    } finally {
      await t.cleanup();
    }
  });

  it('a missing file is an empty store, and the first write creates it 0600', async () => {
    const t = await tempDir();
    try {
      const file = path.join(t.dir, 'nested', 'memory.json');
      const store = await openStore(`json:${file}`);
      expect(await store.count()).toBe(0);
      await store.appendHistory('628', { role: 'user', text: 'halo 🙏' });
      await store.close();
      expect(statSync(file).mode & 0o777).toBe(0o600);
    } finally {
      await t.cleanup();
    }
  });

  it('writes the seed format: indent=2, UTF-8 kept, file order kept, readable by python json.load', async () => {
    const t = await tempDir();
    try {
      const file = path.join(t.dir, 'memory.json');
      copyFileSync(path.join(FIXTURES, 'memory.json'), file);
      chmodSync(file, 0o600);
      const store = await openStore(`json:${file}`);
      await store.setFlag('628161973069', 'sop_pending', true);
      await store.close();
      const text = readFileSync(file, 'utf8');
      expect(text).toContain('🙏');
      expect(text).not.toContain('\\ud83d');
      const fixture = loadFixture();
      const expected = structuredClone(fixture);
      const written = JSON.parse(text) as typeof fixture;
      expected['628161973069']!.flags.sop_pending = true;
      expected['628161973069']!.updated_at = written['628161973069']!.updated_at;
      expect(written).toEqual(expected);
      expect(Object.keys(written)).toEqual(Object.keys(fixture));
      // Byte-identical to Python's own json.dump(indent=2, ensure_ascii=False) of the same data.
      const py = execFileSync('python3', ['-c', 'import json,sys; d=json.load(open(sys.argv[1])); sys.stdout.write(json.dumps(d, indent=2, ensure_ascii=False))', file]);
      expect(py.toString('utf8')).toBe(text);
    } finally {
      await t.cleanup();
    }
  });

  it('never overwrites an outside edit: it reloads and refuses the racing write', async () => {
    const t = await tempDir();
    try {
      const file = path.join(t.dir, 'memory.json');
      const store = await openStore(`json:${file}`);
      await store.put('a', { name: 'A' });
      // An operator edits the file by hand while chatmem runs (the seed's cache clobbered this).
      const edited = JSON.parse(readFileSync(file, 'utf8')) as Record<string, { name: string }>;
      edited.a!.name = 'edited by hand';
      writeFileSync(file, serializeSeed(Object.entries(edited)) + '\n');
      await expect(store.put('b', { name: 'B' })).rejects.toMatchObject({ code: 'E_STORE_CONFLICT' });
      expect((JSON.parse(readFileSync(file, 'utf8')) as Record<string, { name: string }>).a?.name).toBe('edited by hand');
      expect((await store.get('a'))?.name).toBe('edited by hand');
      await store.put('b', { name: 'B' });
      await store.close();
      const final = JSON.parse(readFileSync(file, 'utf8')) as Record<string, { name: string }>;
      expect(final.a?.name).toBe('edited by hand');
      expect(final.b?.name).toBe('B');
    } finally {
      await t.cleanup();
    }
  });

  it('refuses a file whose top level is not an object, or whose record has a wrong type', async () => {
    const t = await tempDir();
    try {
      const file = path.join(t.dir, 'memory.json');
      writeFileSync(file, '[1,2,3]');
      await expect(openStore(`json:${file}`)).rejects.toMatchObject({ code: 'E_STORE_PARSE' });
      writeFileSync(file, JSON.stringify({ u1: { user_id: 'u1', history: 'not a list' } }));
      await expect(openStore(`json:${file}`)).rejects.toMatchObject({ code: 'E_STORE_PARSE', message: expect.stringContaining('history') });
      expect(readFileSync(file, 'utf8')).toBe(JSON.stringify({ u1: { user_id: 'u1', history: 'not a list' } }));
    } finally {
      await t.cleanup();
    }
  });
});
