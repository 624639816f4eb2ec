import * as path from 'node:path';
import { copyFileSync, readFileSync, statSync, writeFileSync, chmodSync, existsSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { JsonFileDriver } from '../../src/store/json-file.js';
import { serializeSeed } from '../../src/format/seed.js';
import { createStore } from '../../src/store/store.js';
import { openStore } from '../../src/store/open.js';
import { FIXTURES, tempDir } from '../helpers/tmp.js';
import { loadFixture, testStore } from './conformance.js';
import { testStoreEntry } from '../helpers/stores.js';

testStore('json-file', () => testStoreEntry('json-file').harness());

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

  it('keeps an outside version it cannot take over aside (0600), answers 409 naming it, and keeps every acknowledged write', async () => {
    const t = await tempDir();
    try {
      const file = path.join(t.dir, 'memory.json');
      const seen: string[] = [];
      // a was in the file when chatmem opened it, so a file without a is not merely a copy from before a existed.
      writeFileSync(file, serializeSeed([['a', { user_id: 'a', name: 'A' }]]), { mode: 0o600 });
      const store = createStore(await JsonFileDriver.open(file, { onOutsideChange: (_c, message) => seen.push(message) }));
      await store.appendHistory('a', { role: 'user', text: 'acknowledged' });
      // Another program drops user a (a deletion chatmem's guarded operations would back up first) and adds n.
      writeFileSync(file, serializeSeed([['n', { user_id: 'n', name: 'new from outside' }]]));
      const err = await store.put('b', { name: 'B' }).then(
        () => null,
        (e: unknown) => e as { code: string; details: { kept: string } },
      );
      expect(err).toMatchObject({ code: 'E_STORE_CONFLICT' });
      const kept = err?.details.kept ?? '';
      expect(path.basename(kept)).toMatch(/^memory\.json\.outside-\d{8}T\d+Z$/);
      expect(statSync(kept).mode & 0o777).toBe(0o600);
      expect(JSON.parse(readFileSync(kept, 'utf8'))).toEqual({ n: { user_id: 'n', name: 'new from outside' } });
      expect(seen.some((m) => m.includes(kept))).toBe(true);
      await store.put('b', { name: 'B' });
      await store.close();
      const final = JSON.parse(readFileSync(file, 'utf8')) as Record<string, { name: string; history: { text: string }[] }>;
      expect(Object.keys(final).sort()).toEqual(['a', 'b', 'n']);
      expect(final.a?.history.map((h) => h.text)).toEqual(['acknowledged']);
    } finally {
      await t.cleanup();
    }
  });

  it('an edit made from an older version is merged field by field when chatmem changed other fields since, else kept aside', async () => {
    const t = await tempDir();
    try {
      const file = path.join(t.dir, 'memory.json');
      const store = createStore(await JsonFileDriver.open(file, { onOutsideChange: () => undefined }));
      await store.put('a', { name: 'A', updated_at: '2025-01-01T00:00:00Z' });
      await store.put('c', { name: 'C', updated_at: '2025-01-01T00:00:00Z' });
      const old = readFileSync(file, 'utf8');
      await store.appendHistory('a', { role: 'user', text: 'turn 1' });
      await store.appendHistory('c', { role: 'user', text: 'turn 1' });
      // A script read the file before those appends and writes it back now: renames a, rewrites c's history.
      const data = JSON.parse(old) as Record<string, { name: string; history: unknown[] }>;
      data.a!.name = 'Renamed';
      data.c!.history = [{ role: 'user', text: 'rewritten', ts: '2025-01-01T00:00:00Z' }];
      writeFileSync(file, serializeSeed(Object.entries(data)));
      const err = await store.appendHistory('a', { role: 'user', text: 'turn 2' }).then(
        () => null,
        (e: unknown) => e as { code: string; details: { kept: string | null; adopted: number; conflicts: number } },
      );
      expect(err).toMatchObject({ code: 'E_STORE_CONFLICT', details: { adopted: 1, conflicts: 1 } });
      expect(existsSync(err?.details.kept ?? '')).toBe(true);
      await store.appendHistory('a', { role: 'user', text: 'turn 2' });
      await store.close();
      const final = JSON.parse(readFileSync(file, 'utf8')) as Record<string, { name: string; history: { text: string }[] }>;
      expect(final.a?.name).toBe('Renamed');
      expect(final.a?.history.map((h) => h.text)).toEqual(['turn 1', 'turn 2']);
      expect(final.c?.history.map((h) => h.text)).toEqual(['turn 1']);
    } finally {
      await t.cleanup();
    }
  });

  it('a half-written file (another program mid-write) is waited for, then refused with E_STORE_PARSE and left untouched', async () => {
    const t = await tempDir();
    try {
      const file = path.join(t.dir, 'memory.json');
      const store = createStore(await JsonFileDriver.open(file, { onOutsideChange: () => undefined }));
      await store.put('a', { name: 'A' });
      const full = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
      full.z = { user_id: 'z', name: 'Z' };
      const text = serializeSeed(Object.entries(full));
      // Truncated, then completed 150 ms later: the write waits, adopts the edit, and answers 409 (not E_STORE_PARSE).
      writeFileSync(file, text.slice(0, 40));
      const pending = store.put('b', { name: 'B' }).then(
        () => 'ok',
        (e: unknown) => (e as { code: string }).code,
      );
      await new Promise((resolve) => setTimeout(resolve, 150));
      writeFileSync(file, text);
      expect(await pending).toBe('E_STORE_CONFLICT');
      expect((await store.get('z'))?.name).toBe('Z');
      // Left half-written: refused, byte for byte untouched.
      writeFileSync(file, text.slice(0, 40));
      await expect(store.put('b', { name: 'B' })).rejects.toMatchObject({ code: 'E_STORE_PARSE' });
      expect(readFileSync(file, 'utf8')).toBe(text.slice(0, 40));
      // Completed again to what chatmem already took over (z still without timestamps): no change, the write goes ahead.
      writeFileSync(file, text);
      await store.put('b', { name: 'B' });
      await store.close();
      expect(Object.keys(JSON.parse(readFileSync(file, 'utf8')) as object).sort()).toEqual(['a', 'b', 'z']);
    } finally {
      await t.cleanup();
    }
  });
});
