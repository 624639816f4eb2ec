import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { fsyncDir, tempNameFor } from '../fs-util.js';
import { io } from '../fsio.js';
import { rawEntries, writeBackupStream, writeStreamDurably } from '../format/line-writer.js';
import type { Store } from '../store/types.js';

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
  // The stored JSON text goes out as it is: no parse and re-stringify per record.
  const write = (out: NodeJS.WritableStream) => writeBackupStream(rawEntries(store.scanJson()), out, options);
  if (typeof target !== 'string') return { ...(await write(target)), file: null };
  const file = path.resolve(target);
  const tmp = tempNameFor(file);
  const r = await writeStreamDurably(tmp, write);
  try {
    await io.rename(tmp, file);
  } catch (err) {
    // The rename's error is the answer, whatever the removal of the temp file meets.
    await fsp.rm(tmp).catch(() => undefined);
    throw err;
  }
  await fsyncDir(path.dirname(file));
  return { ...r, file };
}
