import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { sandbox, type Sandbox } from './helpers.js';

const JOKO = '628161973069';

interface Entry {
  op: string;
  action: string;
  outcome: string;
  backup?: string;
  userIds?: string[];
  foundInBackup?: string;
}

describe('audit: who did what to whom', () => {
  let sb: Sandbox;
  beforeEach(async () => {
    sb = await sandbox('sqlite');
  });
  afterEach(async () => {
    await sb.cleanup();
  });

  it('after clear-all of the 200-user fixture, audit --user shows the clear with its backup', async () => {
    const clear = await sb.json<{ backup: string; deleted: number }>(['clear', '--yes']);
    expect(clear.code).toBe(0);
    expect(clear.doc.deleted).toBe(200);
    const mine = await sb.json<{ entries: Entry[] }>(['audit', '--user', JOKO]);
    expect(mine.code).toBe(0);
    expect(mine.doc.entries.map((e) => `${e.action}:${e.outcome}`)).toEqual(['clear-all:started', 'clear-all:done']);
    expect(mine.doc.entries[1]).toMatchObject({ backup: clear.doc.backup, foundInBackup: clear.doc.backup });
    const human = await sb.run(['audit', '--user', JOKO]);
    expect(human.stdout).toMatch(new RegExp(`clear-all\\s+done\\s+${JOKO} \\(in backup\\)\\s+${clear.doc.backup}`));
    expect((await sb.json<{ entries: Entry[] }>(['audit', '--user', 'nobody-here'])).doc.entries).toEqual([]);
  });

  it('a full restore that removed a user shows under that user, next to the delete and the restore that put it back', async () => {
    const del = await sb.json<{ backup: string }>(['delete', JOKO, '--yes']);
    const full = await sb.json<{ backup: string }>(['backup']);
    // The delete's backup holds only JOKO: restoring it puts JOKO back and leaves the others alone.
    expect((await sb.run(['restore', del.doc.backup, '--yes'])).code).toBe(0);
    const replace = await sb.json<{ backup: string; removed: number }>(['restore', full.doc.backup, '--yes']);
    expect(replace.code).toBe(0);
    expect(replace.doc.removed).toBe(1);
    const mine = await sb.json<{ entries: Entry[] }>(['audit', '--user', JOKO, '--action', 'restore']);
    expect(mine.doc.entries.map((e) => `${e.outcome}:${e.userIds?.join(',') ?? '-'}:${e.foundInBackup ?? '-'}`)).toEqual([
      `started:${JOKO}:-`,
      `done:${JOKO}:-`,
      'started:-:' + replace.doc.backup,
      'done:-:' + replace.doc.backup,
    ]);
    const deletes = await sb.json<{ entries: Entry[] }>(['audit', '--action', 'delete']);
    expect(deletes.doc.entries.map((e) => e.action)).toEqual(['delete-users', 'delete-users']);
  });

  it('an unknown action exits 2 and lists the valid names', async () => {
    const r = await sb.run(['audit', '--action', 'remove']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('E_OPS_ARG');
    expect(r.stderr).toContain('valid actions: delete (delete-users), clear (clear-all), restore, import, backup, prune, auth-failed');
    const j = await sb.json<{ error: { code: string } }>(['audit', '--action', 'remove']);
    expect(j.code).toBe(2);
  });
});
