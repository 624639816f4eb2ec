import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { sandbox, type Sandbox } from './helpers.js';

describe('chatmem expire', () => {
  let sb: Sandbox;
  beforeEach(async () => {
    sb = await sandbox('sqlite');
  });
  afterEach(async () => {
    await sb.cleanup();
  });

  it('needs a duration, lists with --dry-run, refuses without --yes, deletes with a backup with --yes', async () => {
    expect((await sb.run(['expire'])).code).toBe(2);
    // The fixture's users last wrote in 2025: none is ten years old, all are older than one day.
    expect((await sb.json<{ users: unknown[] }>(['expire', '--dry-run', '--inactive-after', '10y'])).doc.users).toHaveLength(0);
    const dry = await sb.json<{ users: { user_id: string }[] }>(['expire', '--dry-run', '--inactive-after', '1d']);
    expect(dry.doc.users).toHaveLength(200);
    expect((await sb.run(['expire', '--inactive-after', '1d'])).code).toBe(2);
    expect(await sb.backupFiles()).toEqual([]);
    const { code, doc } = await sb.json<{ expired: number; backup: string }>(['expire', '--inactive-after', '1d', '--yes']);
    expect(code).toBe(0);
    expect(doc.expired).toBe(200);
    const backup = JSON.parse(await fsp.readFile(path.join(sb.backupDir, `${doc.backup}.json`), 'utf8')) as object;
    expect(Object.keys(backup)).toHaveLength(200);
  });

  it('takes users.inactiveAfter from the config, and the config refuses a bad duration', async () => {
    await fsp.writeFile(path.join(sb.dir, 'chatmem.config.json'), JSON.stringify({ users: { inactiveAfter: '10y' } }));
    expect((await sb.json<{ users: unknown[] }>(['expire', '--dry-run'])).doc.users).toHaveLength(0);
    await fsp.writeFile(path.join(sb.dir, 'chatmem.config.json'), JSON.stringify({ users: { inactiveAfter: '6 months' } }));
    const bad = await sb.run(['expire', '--dry-run']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('E_CONFIG');
  });
});
