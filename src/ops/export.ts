import { createWriteStream, promises as fsp } from 'node:fs';
import { once } from 'node:events';
import * as path from 'node:path';
import { finished } from 'node:stream/promises';
import { FILE_MODE, fsyncDir, tempNameFor } from '../fs-util.js';
import { writeBackupStream } from '../backup/format.js';
import type { Store } from '../store/types.js';
import type { MemoryRecord } from '../record.js';

async function* entries(records: AsyncIterable<MemoryRecord>): AsyncGenerator<[string, unknown]> {
  for await (const r of records) yield [r.user_id, r];
}

/**
 * Writes the whole store in the seed format (one JSON object keyed by user id, one user per line),
 * streamed in constant memory. A file target is written atomically (temp, fsync, rename, fsync dir)
 * with mode 0600; a stream target (e.g. stdout) is written as is and not ended. `gzip` compresses.
 */
export async function exportStore(
  store: Store,
  target: string | NodeJS.WritableStream,
  options: { onProgress?: (users: number) => void; gzip?: boolean } = {},
): Promise<{ users: number; bytes: number; sha256: string; file: string | null }> {
  if (typeof target !== 'string') {
    const r = await writeBackupStream(entries(store.scan()), target, options);
    return { ...r, file: null };
  }
  const file = path.resolve(target);
  const tmp = tempNameFor(file);
  const out = createWriteStream(tmp, { flags: 'wx', mode: FILE_MODE });
  out.on('error', () => undefined);
  try {
    await once(out, 'open');
    const r = await writeBackupStream(entries(store.scan()), out, options);
    out.end();
    await finished(out);
    const fh = await fsp.open(tmp, 'r+');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fsp.rename(tmp, file);
    await fsyncDir(path.dirname(file));
    return { ...r, file };
  } catch (err) {
    out.destroy();
    await fsp.rm(tmp, { force: true });
    throw err;
  }
}
