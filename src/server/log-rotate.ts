import { chmodSync, copyFileSync, renameSync, statSync, truncateSync, unlinkSync } from 'node:fs';
import { errnoCode } from '../errors.js';
import { FILE_MODE } from '../fs-util.js';

/** Size cap of the daemon log (`chatmem start` writes data/chatmem.log): config `server.logMaxBytes`, `server.logKeep`. */
export interface LogRotation {
  /** Rotate once the log is at least this large (default 10 MiB). */
  maxBytes: number;
  /** Rotated files kept: chatmem.log.1 (newest) to chatmem.log.N (default 3). */
  keep: number;
}

export const DEFAULT_LOG_ROTATION: Readonly<LogRotation> = { maxBytes: 10 * 1024 * 1024, keep: 3 };

function sizeOf(file: string): number {
  try {
    return statSync(file).size;
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return 0;
    throw err;
  }
}

/**
 * Rotates `file` if it has reached `maxBytes`: shifts file.1..file.(keep-1) up by one (dropping
 * file.keep), copies file to file.1 and truncates file to zero.
 *
 * Copy-and-truncate rather than rename because the daemon's stdout and stderr are this very file
 * (opened O_APPEND by `chatmem start`): its writes continue at the new end. Synchronous, so no log
 * line of this process lands between the copy and the truncate.
 *
 * @returns true when it rotated.
 */
export function rotateIfLarge(file: string, opts: LogRotation = DEFAULT_LOG_ROTATION): boolean {
  if (sizeOf(file) < opts.maxBytes) return false;
  for (let i = opts.keep; i >= 1; i--) {
    const from = i === 1 ? null : `${file}.${i - 1}`;
    const to = `${file}.${i}`;
    if (i === opts.keep) {
      try {
        unlinkSync(to);
      } catch (err) {
        if (errnoCode(err) !== 'ENOENT') throw err;
      }
    }
    if (from === null) {
      copyFileSync(file, to);
      // The log names users and routes: rotated copies stay private however the umask is set.
      chmodSync(to, FILE_MODE);
    } else {
      try {
        renameSync(from, to);
      } catch (err) {
        if (errnoCode(err) !== 'ENOENT') throw err;
      }
    }
  }
  truncateSync(file, 0);
  return true;
}

/**
 * Checks `file` every `everyMs` and rotates it when large. Errors are reported through `onError`
 * (a full disk must not stop the daemon). Returns a function that stops the checks.
 */
export function startLogRotation(file: string, opts: LogRotation, onError: (err: unknown) => void, everyMs = 1000): () => void {
  const timer = setInterval(() => {
    try {
      rotateIfLarge(file, opts);
    } catch (err) {
      onError(err);
    }
  }, everyMs);
  timer.unref();
  return () => clearInterval(timer);
}
