import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { sandbox, type Sandbox } from './helpers.js';

const JOKO = '628161973069';

describe('prune: full and per-user groups', () => {
  let sb: Sandbox;
  beforeEach(async () => {
    sb = await sandbox('sqlite');
  });
  afterEach(async () => {
    await sb.cleanup();
  });

  it('after a clear, a restore of one user and a delete, --keep-last 1 keeps the clear\'s full backup and shows the groups', async () => {
    const full = await sb.json<{ backup: string }>(['backup']);
    const del1 = await sb.json<{ backup: string }>(['delete', JOKO, '--yes']);
    const clear = await sb.json<{ backup: string }>(['clear', '--yes']);
    const restored = await sb.json<{ backup: string }>(['restore', del1.doc.backup, '--yes']);
    const del2 = await sb.json<{ backup: string }>(['delete', JOKO, '--yes']);
    for (const r of [full, del1, clear, restored, del2]) expect(r.code).toBe(0);
    // Joko was gone when his backup came back: nothing overwritten, so no (empty) backup.
    expect(restored.doc.backup).toBeNull();

    const dry = await sb.run(['prune', '--keep-last', '1', '--dry-run']);
    expect(dry.code).toBe(0);
    const rows = dry.stdout.split('\n').filter((l) => /^(keep|remove)\s/.test(l)).map((l) => l.trim().split(/\s{2,}/));
    expect(rows).toEqual([
      ['keep', 'full', clear.doc.backup, 'last backup'],
      ['remove', 'full', full.doc.backup],
      ['keep', 'per-user', del2.doc.backup, 'last backup'],
      ['remove', 'per-user', del1.doc.backup],
    ]);

    const doc = await sb.json<{ keep: { id: string; group: string }[]; remove: { id: string; group: string }[] }>(['prune', '--keep-last', '1', '--yes']);
    expect(doc.code).toBe(0);
    expect(doc.doc.keep.map((k) => [k.id, k.group])).toEqual([
      [del2.doc.backup, 'user'],
      [clear.doc.backup, 'full'],
    ]);
    expect((await sb.backupFiles()).map((f) => f.replace(/\.json$/, '')).sort()).toEqual([clear.doc.backup, del2.doc.backup].sort());
  });
});
