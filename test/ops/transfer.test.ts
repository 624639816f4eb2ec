import { execFileSync } from 'node:child_process';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { AuditLog } from '../../src/ops/audit.js';
import { exportStore } from '../../src/ops/export.js';
import { Operations } from '../../src/ops/operations.js';
import { openStore } from '../../src/store/open.js';
import type { MemoryRecord } from '../../src/record.js';
import { FIXTURES, tempDir } from '../helpers/tmp.js';
import { createSchema, describePg } from '../helpers/pg.js';
import { loadFixture } from '../store/conformance.js';

/** The seed fixture plus fields no loader knows, at record and history level: they must survive every hop. */
function fixtureWithUnknownFields(): Record<string, MemoryRecord> {
  const data = loadFixture();
  const first = data['628161973069']!;
  first.loyalty_tier = 'gold';
  first.crm = { ticket: 4411, tags: ['eac', 'vip'], nested: { deeper: [null, true, 1.5] } };
  first.history[0]!.channel = 'whatsapp';
  return data;
}

async function importThenExport(url: string, input: string, dir: string): Promise<{ exported: Record<string, MemoryRecord>; file: string }> {
  const store = await openStore(url);
  try {
    const ops = new Operations({ store, backupDir: path.join(dir, 'backups'), audit: new AuditLog(path.join(dir, 'audit.log')), actor: { kind: 'os', name: 't' } });
    await ops.importFile(input);
    const file = path.join(dir, `export-${Math.random().toString(36).slice(2)}.json`);
    await exportStore(store, file);
    return { exported: JSON.parse(readFileSync(file, 'utf8')) as Record<string, MemoryRecord>, file };
  } finally {
    await store.close();
  }
}

describe('import and export', () => {
  for (const kind of ['sqlite', 'json'] as const) {
    it(`the 200-user fixture round-trips through ${kind}, unknown fields included`, async () => {
      const { dir, cleanup } = await tempDir();
      try {
        const data = fixtureWithUnknownFields();
        const input = path.join(dir, 'input.json');
        writeFileSync(input, JSON.stringify(data, null, 2));
        const { exported, file } = await importThenExport(`${kind}:${path.join(dir, `memory.${kind}`)}`, input, dir);
        expect(exported).toEqual(data);
        expect(statSync(file).mode & 0o777).toBe(0o600);
        const count = execFileSync('python3', ['-c', 'import json,sys; print(len(json.load(open(sys.argv[1]))))', file]).toString().trim();
        expect(count).toBe('200');
      } finally {
        await cleanup();
      }
    });
  }

  it('moves between backends losing nothing: json → sqlite → json', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      const data = fixtureWithUnknownFields();
      const input = path.join(dir, 'input.json');
      writeFileSync(input, JSON.stringify(data));
      const a = await importThenExport(`json:${path.join(dir, 'a.json')}`, input, dir);
      const b = await importThenExport(`sqlite:${path.join(dir, 'b.db')}`, a.file, dir);
      const c = await importThenExport(`json:${path.join(dir, 'c.json')}`, b.file, dir);
      expect(c.exported).toEqual(data);
    } finally {
      await cleanup();
    }
  });

  it('imports every legacy backup kind, and backs up the users an import overwrites', async () => {
    const { dir, cleanup } = await tempDir();
    const store = await openStore(`sqlite:${path.join(dir, 'memory.db')}`);
    try {
      const ops = new Operations({ store, backupDir: path.join(dir, 'backups'), audit: new AuditLog(path.join(dir, 'audit.log')), actor: { kind: 'os', name: 't' } });
      const python = await ops.importFile(path.join(FIXTURES, 'backups/memory_backup_20251125_132811.json'));
      expect(python).toMatchObject({ imported: 200, overwritten: 0, backup: null });
      await store.setFlag('628161973069', 'active_intent', 'changed');
      const perUser = await ops.importFile(path.join(FIXTURES, 'backups/memory_backup_628161973069_20251125_140002.json'));
      expect(perUser).toMatchObject({ imported: 1, overwritten: 1 });
      const pre = JSON.parse(readFileSync(path.join(dir, 'backups', `${perUser.backup}.json`), 'utf8')) as Record<string, MemoryRecord>;
      expect(pre['628161973069']?.flags.active_intent).toBe('changed');
      expect((await store.get('628161973069'))?.flags.active_intent).toBe(loadFixture()['628161973069']!.flags.active_intent);
      const bash = await ops.importFile(path.join(FIXTURES, 'backups/memory_backup_20251125_145714.json'));
      expect(bash.imported).toBe(5);
      expect(await store.count()).toBe(200);
    } finally {
      await store.close();
      await cleanup();
    }
  });

  it('refuses the truncated file before writing anything', async () => {
    const { dir, cleanup } = await tempDir();
    const store = await openStore(`sqlite:${path.join(dir, 'memory.db')}`);
    try {
      const ops = new Operations({ store, backupDir: path.join(dir, 'backups'), audit: new AuditLog(path.join(dir, 'audit.log')), actor: { kind: 'os', name: 't' } });
      await expect(ops.importFile(path.join(FIXTURES, 'memory.truncated.json'))).rejects.toMatchObject({ code: 'E_BACKUP_PARSE', message: expect.stringMatching(/line 11757/) });
      await expect(ops.importFile(path.join(dir, 'missing.json'))).rejects.toMatchObject({ code: 'E_NOT_FOUND' });
      // A record with a wrong type near the end: refused before the first write, naming the user.
      const data = loadFixture();
      const last = Object.keys(data)[180]!;
      (data[last] as unknown as Record<string, unknown>).history = 'not a list';
      const bad = path.join(dir, 'bad.json');
      writeFileSync(bad, JSON.stringify(data));
      await expect(ops.importFile(bad)).rejects.toMatchObject({ code: 'E_IMPORT', message: expect.stringContaining(last) });
      expect(await store.count()).toBe(0);
    } finally {
      await store.close();
      await cleanup();
    }
  });
});

describePg('import and export through postgres', () => {
  it('the fixture round-trips json → postgres → sqlite, unknown fields included', async () => {
    const { dir, cleanup } = await tempDir();
    const pg = await createSchema();
    try {
      const data = fixtureWithUnknownFields();
      const input = path.join(dir, 'input.json');
      writeFileSync(input, JSON.stringify(data));
      const viaPg = await importThenExport(pg.url, input, dir);
      expect(viaPg.exported).toEqual(data);
      const viaSqlite = await importThenExport(`sqlite:${path.join(dir, 'x.db')}`, viaPg.file, dir);
      expect(viaSqlite.exported).toEqual(data);
    } finally {
      await pg.drop();
      await cleanup();
    }
  });
});
