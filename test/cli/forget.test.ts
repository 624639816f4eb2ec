import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { sandbox, type Sandbox } from './helpers.js';

const JOKO = '628161973069';

async function userCount(sb: Sandbox): Promise<number> {
  const { doc } = await sb.json<{ users: number }>(['stats']);
  return doc.users;
}

describe.each(['sqlite', 'json'] as const)('chatmem forget on a %s store', (kind) => {
  let sb: Sandbox;
  beforeEach(async () => {
    sb = await sandbox(kind);
  });
  afterEach(async () => {
    await sb.cleanup();
  });

  it('without a terminal and without --yes refuses with exit 2 and changes nothing', async () => {
    const r = await sb.run(['forget', JOKO]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('E_CONFIRM_REQUIRED');
    expect(await userCount(sb)).toBe(200);
  });

  it('asks for the id itself: anything else cancels, the id forgets', async () => {
    const wrong = await sb.run(['forget', JOKO], { isTTY: true, input: ['yes'] });
    expect(wrong.code).toBe(2);
    expect(wrong.stderr).toContain('E_CANCELLED');
    expect(await userCount(sb)).toBe(200);
    const right = await sb.run(['forget', JOKO], { isTTY: true, input: [JOKO] });
    expect(right.code).toBe(0);
    expect(right.stdout).toContain('1 removed');
    expect(await userCount(sb)).toBe(199);
  });

  it('--yes --json forgets from the store and from a backup written before, and the audit log keeps only the hash', async () => {
    expect((await sb.run(['backup'])).code).toBe(0);
    expect((await sb.run(['delete', JOKO, '--yes'])).code).toBe(0);
    // Deleted last week, forgotten today: the per-user backup of the delete held only them.
    const { code, doc } = await sb.json<{ deleted: number; backupsRewritten: string[]; filesDeleted: string[]; hashes: Record<string, string> }>(['forget', JOKO, '--yes']);
    expect(code).toBe(0);
    expect(doc.deleted).toBe(0);
    expect(doc.backupsRewritten).toHaveLength(1);
    expect(doc.filesDeleted).toHaveLength(1);
    const audit = await fsp.readFile(sb.auditLog, 'utf8');
    expect(audit).not.toContain(JOKO);
    expect(audit).toContain(doc.hashes[JOKO]!);
    for (const name of await fsp.readdir(sb.backupDir)) expect(await fsp.readFile(path.join(sb.backupDir, name), 'utf8')).not.toContain(JOKO);
    const verify = await sb.run(['verify']);
    expect(verify.code).toBe(0);
  });
});
