import { createReadStream, createWriteStream, promises as fsp } from 'node:fs';
import { once } from 'node:events';
import { finished } from 'node:stream/promises';
import * as path from 'node:path';
import { BackupError } from '../errors.js';
import { ensurePrivateDir, FILE_MODE, tempNameFor } from '../fs-util.js';
import { compareIds } from '../record.js';

/**
 * The first phase of a backup taken for a change of the whole store: a copy of a snapshot, made while
 * writes go on, into a temp file of `JSON(user_id) TAB JSON(record)` lines in user_id order. The second
 * phase ({@link mergeChanges}) runs in the exclusive section and replaces only the users changed since.
 * The temp name is one that start-up recovery removes, so a crash leaves nothing behind.
 */
export async function copySnapshot(dir: string, entries: AsyncIterable<[string, string]>): Promise<{ file: string; users: number }> {
  await ensurePrivateDir(dir);
  const file = tempNameFor(path.join(dir, 'snapshot'));
  const out = createWriteStream(file, { flags: 'wx', mode: FILE_MODE });
  out.on('error', () => undefined);
  let users = 0;
  try {
    await once(out, 'open');
    let batch = '';
    for await (const [id, text] of entries) {
      batch += JSON.stringify(id) + '\t' + text + '\n';
      users++;
      if (batch.length >= 1 << 20) {
        if (!out.write(batch)) await once(out, 'drain');
        batch = '';
      }
    }
    out.end(batch);
    await finished(out);
    return { file, users };
  } catch (err) {
    out.destroy();
    await fsp.rm(file, { force: true }).catch(() => undefined);
    throw new BackupError('E_BACKUP_WRITE', `cannot copy the store's snapshot into ${dir}: ${(err as Error).message}`, { cause: err });
  }
}

async function* snapshotLines(file: string): AsyncGenerator<[string, string]> {
  let rest: Buffer = Buffer.alloc(0);
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) {
    const buf = rest.length > 0 ? Buffer.concat([rest, chunk]) : chunk;
    let start = 0;
    for (let nl = buf.indexOf(10, start); nl !== -1; nl = buf.indexOf(10, start)) {
      const tab = buf.indexOf(9, start);
      if (tab === -1 || tab > nl) throw new BackupError('E_BACKUP_READ', `snapshot copy ${file} has a line without a user id`);
      yield [JSON.parse(buf.toString('utf8', start, tab)) as string, buf.toString('utf8', tab + 1, nl)];
      start = nl + 1;
    }
    rest = buf.subarray(start);
  }
  if (rest.length > 0) throw new BackupError('E_BACKUP_READ', `snapshot copy ${file} ends in the middle of a line`);
}

/**
 * The second phase: the snapshot copy with each changed user's current JSON text in its place (null:
 * the user is gone now), new users inserted in order. Yields `[user_id, JSON text]` in user_id order,
 * what `writeBackup` takes: the exact state of the store when `changes` was read.
 */
export async function* mergeChanges(file: string, changes: Map<string, string | null>): AsyncGenerator<[string, string]> {
  const changed = [...changes.keys()].sort(compareIds);
  let j = 0;
  for await (const [id, text] of snapshotLines(file)) {
    for (; j < changed.length && compareIds(changed[j] as string, id) < 0; j++) {
      const now = changes.get(changed[j] as string);
      if (now != null) yield [changed[j] as string, now];
    }
    if (j < changed.length && changed[j] === id) {
      const now = changes.get(id);
      if (now != null) yield [id, now];
      j++;
      continue;
    }
    yield [id, text];
  }
  for (; j < changed.length; j++) {
    const now = changes.get(changed[j] as string);
    if (now != null) yield [changed[j] as string, now];
  }
}
