import { createHash } from 'node:crypto';
import { constants as fsc, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { createGunzip } from 'node:zlib';
import { BackupError } from '../errors.js';
import { compareIds } from '../record.js';
import { readJsonEntries } from './json-entries.js';

/** Hash + count an existing backup file (uncompressed content) in one streaming pass. */
export async function digestBackupFile(
  file: string,
  opts: { gzip?: boolean; lineFormat?: boolean } = {},
): Promise<{ sha256: string; bytes: number; users: number }> {
  const hash = createHash('sha256');
  let bytes = 0;
  let users = 0;
  if (opts.lineFormat) {
    // For a file whose hash is about to be compared with the one recorded when it was written, counting
    // lines is exact (one user per line between "{" and "}") and far cheaper than parsing every record.
    let lines = 0;
    // Never through a symlink, and never blocking on a FIFO swapped in for the file: checked on the handle
    // that is read, so nothing can be swapped in between the check and the read.
    const fh = await fsp.open(file, fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK);
    const regular = await fh.stat().then((st) => st.isFile(), () => false);
    if (!regular) {
      await fh.close();
      throw new BackupError('E_BACKUP_NOT_REGULAR', `refusing ${path.basename(file)}: not a regular file`);
    }
    // 1 MB reads: the 64 KB default made ~30,000 reads of a 1M-user backup.
    const source = fh.createReadStream({ highWaterMark: 1 << 20 });
    const stream = opts.gzip ? source.pipe(createGunzip()) : source;
    source.on('error', (err) => stream.destroy(err));
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      hash.update(chunk);
      bytes += chunk.length;
      for (let i = chunk.indexOf(0x0a); i !== -1; i = chunk.indexOf(0x0a, i + 1)) lines++;
    }
    return { sha256: hash.digest('hex'), bytes, users: Math.max(0, lines - 2) };
  }
  const onChunk = (chunk: Buffer): void => {
    hash.update(chunk);
    bytes += chunk.length;
  };
  for await (const _entry of readJsonEntries(file, { gzip: opts.gzip === true, onChunk })) users++;
  return { sha256: hash.digest('hex'), bytes, users };
}

const READ_BLOCK = 16 * 1024;
const NL = 0x0a;

function formatError(file: string, why: string): BackupError {
  return new BackupError('E_BACKUP_FORMAT', `${file}: not in chatmem line format (${why})`, { details: { file } });
}

// Byte offset of the first '\n' at or after `from` (or `limit` when there is none before it).
async function findNewline(fh: fsp.FileHandle, from: number, limit: number): Promise<number> {
  const buf = Buffer.allocUnsafe(READ_BLOCK);
  for (let pos = from; pos < limit; ) {
    const { bytesRead } = await fh.read(buf, 0, Math.min(READ_BLOCK, limit - pos), pos);
    if (bytesRead === 0) break;
    const nl = buf.subarray(0, bytesRead).indexOf(NL);
    if (nl !== -1) return pos + nl;
    pos += bytesRead;
  }
  return limit;
}

// The bytes of the line starting at `start`, without its '\n', and where the next line starts.
async function readLine(fh: fsp.FileHandle, start: number, limit: number): Promise<{ line: Buffer; next: number }> {
  const parts: Buffer[] = [];
  for (let pos = start; pos < limit; ) {
    const buf = Buffer.allocUnsafe(Math.min(READ_BLOCK, limit - pos));
    const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
    if (bytesRead === 0) break;
    const nl = buf.subarray(0, bytesRead).indexOf(NL);
    if (nl !== -1) {
      parts.push(buf.subarray(0, nl));
      return { line: Buffer.concat(parts), next: pos + nl + 1 };
    }
    parts.push(buf.subarray(0, bytesRead));
    pos += bytesRead;
  }
  return { line: Buffer.concat(parts), next: limit };
}

function isWsByte(b: number | undefined): boolean {
  return b === 0x20 || b === NL || b === 0x0d || b === 0x09;
}

// End (exclusive) of the JSON string starting at line[0], or -1.
function keyEnd(line: Buffer): number {
  if (line[0] !== 0x22) return -1;
  let esc = false;
  for (let i = 1; i < line.length; i++) {
    const b = line[i]!;
    if (esc) esc = false;
    else if (b === 0x5c) esc = true;
    else if (b === 0x22) return i + 1;
  }
  return -1;
}

/**
 * Find one user's record in an uncompressed chatmem line-format file without parsing the whole file:
 * a binary search over byte offsets, O(log n) small reads. Returns undefined when absent. Throws
 * BackupError 'E_BACKUP_FORMAT' when the file is not in line format, so the caller can fall back
 * to readJsonEntries.
 */
export async function findInLineBackup(file: string, userId: string): Promise<unknown | undefined> {
  const fh = await fsp.open(file, 'r');
  try {
    const size = (await fh.stat()).size;
    const head = Buffer.alloc(Math.min(size, 3));
    await fh.read(head, 0, head.length, 0);
    if (head[0] !== 0x7b || head[1] !== NL) throw formatError(file, "first line is not '{'");

    // The last line is '}' and starts right after a '\n'; entries live in [2, end).
    const tailLen = Math.min(size, 64);
    const tail = Buffer.alloc(tailLen);
    await fh.read(tail, 0, tailLen, size - tailLen);
    let t = tailLen - 1;
    while (t >= 0 && (tail[t] === NL || tail[t] === 0x20 || tail[t] === 0x0d || tail[t] === 0x09)) t--;
    const closeAt = size - tailLen + t;
    if (t < 1 || tail[t] !== 0x7d || tail[t - 1] !== NL || closeAt < 2) throw formatError(file, "last line is not '}'");
    const end = closeAt;

    let lo = 2;
    let hi = end;
    while (lo < hi) {
      const mid = lo + Math.floor((hi - lo) / 2);
      let start = mid === lo ? lo : (await findNewline(fh, mid - 1, hi)) + 1;
      // No line starts in [mid, hi): the candidates left begin at lo.
      if (start >= hi) start = lo;
      const { line, next } = await readLine(fh, start, end);
      const last = next >= end;
      const ke = keyEnd(line);
      // Our writer puts ':' right after the key and ',' at the end of every line but the last, and
      // every line holds one whole value. Checking all of it on each probed line (O(log n) lines)
      // keeps a pretty-printed or indent=0 file that happens to start with "{\n\"" from being
      // misread as entries, e.g. returning a nested "name" field as a user.
      if (ke === -1 || line[ke] !== 0x3a || isWsByte(line[ke + 1]) || (line[line.length - 1] === 0x2c) === last) {
        throw formatError(file, `malformed entry line at byte ${start}`);
      }
      let key: string;
      let value: unknown;
      try {
        key = JSON.parse(line.toString('utf8', 0, ke)) as string;
        value = JSON.parse(line.toString('utf8', ke + 1, last ? line.length : line.length - 1)) as unknown;
      } catch (err) {
        throw new BackupError('E_BACKUP_FORMAT', `${file}: not in chatmem line format (bad entry line at byte ${start})`, {
          cause: err,
          details: { file, position: start },
        });
      }
      const cmp = compareIds(userId, key);
      if (cmp === 0) return value;
      if (cmp < 0) hi = start;
      else lo = next;
    }
    return undefined;
  } finally {
    await fh.close();
  }
}

/**
 * True when the file starts with "{\n" followed by a line that starts with '"' or is '}', i.e.
 * looks like the chatmem line format (cheap sniff of the first 4 KB).
 */
export async function isLineFormat(file: string): Promise<boolean> {
  const fh = await fsp.open(file, 'r');
  try {
    const buf = Buffer.alloc(4096);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    const head = buf.subarray(0, bytesRead);
    if (head[0] !== 0x7b || head[1] !== NL) return false;
    if (head[2] === 0x7d) return head.length === 3 || head[3] === NL;
    if (head[2] !== 0x22) return false;
    const ke = keyEnd(head.subarray(2));
    // A key longer than the sniff window is still plausible; a visible key must be followed by ':'
    // and no space, as JSON.stringify writes it (json.dump(indent=0) writes ': ').
    if (ke === -1 || 2 + ke >= head.length) return true;
    return head[2 + ke] === 0x3a && (3 + ke >= head.length || !isWsByte(head[3 + ke]));
  } finally {
    await fh.close();
  }
}
