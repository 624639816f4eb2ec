import { createReadStream } from 'node:fs';
import { pipeline, type Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { BackupError, errnoCode } from '../errors.js';

/** One top-level `"key": value` pair of a JSON object file. */
export interface JsonEntry {
  key: string;
  value: unknown;
  /** byte offset of the key's opening quote */
  offset: number;
}

/** Options of {@link readJsonEntries}. */
export interface ReadJsonEntriesOptions {
  /** The file is gzip-compressed; offsets and positions then refer to the uncompressed bytes. */
  gzip?: boolean;
  /** Read chunk size in bytes (tests use tiny chunks to exercise boundaries). */
  highWaterMark?: number;
  /** Sees every uncompressed chunk before it is scanned, so a caller can hash the file in the same pass. */
  onChunk?: (chunk: Buffer) => void;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COLON = 0x3a;
const COMMA = 0x2c;
const LBRACE = 0x7b;
const RBRACE = 0x7d;
const LBRACKET = 0x5b;
const RBRACKET = 0x5d;
const NL = 0x0a;

const S_START = 0;
const S_OBJ_OPEN = 1;
const S_AFTER_COMMA = 2;
const S_KEY = 3;
const S_AFTER_KEY = 4;
const S_BEFORE_VALUE = 5;
const S_VALUE = 6;
const S_AFTER_VALUE = 7;
const S_DONE = 8;

const K_CONTAINER = 0;
const K_STRING = 1;
const K_SCALAR = 2;

function isWs(b: number): boolean {
  return b === 0x20 || b === NL || b === 0x0d || b === 0x09;
}

// Bytes that may appear in a bare JSON literal (numbers, true, false, null). Anything else ends it,
// so a scalar never swallows the delimiter that follows it.
const SCALAR_BYTE = new Uint8Array(256);
for (const c of '0123456789+-.eEtrufalsn') SCALAR_BYTE[c.charCodeAt(0)] = 1;

// Raised inside the scan with a byte position only: counting lines and columns on every byte
// would halve throughput, so they are recomputed from the file when an error actually happens.
class ScanFailure extends Error {
  readonly position: number;
  readonly what: string;
  constructor(position: number, what: string, cause?: unknown) {
    super(what, cause === undefined ? undefined : { cause });
    this.position = position;
    this.what = what;
  }
}

// A push scanner: feed it chunks, it returns the entries completed in each chunk.
// Memory is bounded by one chunk plus the bytes of the entry being read.
class EntryScanner {
  private state = S_START;
  // Absolute byte offset of the first byte of the current chunk.
  private base = 0;

  private parts: Buffer[] = [];
  private segStart = -1;
  private escape = false;
  private inString = false;
  private kind = K_CONTAINER;
  private depth = 0;

  private key = '';
  private keyStart = 0;
  private valueStart = 0;

  get bytesSeen(): number {
    return this.base;
  }

  push(chunk: Buffer): JsonEntry[] {
    const out: JsonEntry[] = [];
    const n = chunk.length;
    if (this.segStart !== -1) this.segStart = 0;
    let i = 0;
    while (i < n) {
      if (this.state === S_VALUE) {
        i = this.scanValue(chunk, i, out);
        continue;
      }
      if (this.state === S_KEY) {
        i = this.scanKey(chunk, i);
        continue;
      }
      const b = chunk[i]!;
      switch (this.state) {
        case S_START:
          if (b === LBRACE) this.state = S_OBJ_OPEN;
          else if (!isWs(b)) {
            this.fail(i, b === LBRACKET ? 'top level is an array, expected an object' : "expected '{' (top level must be an object)");
          }
          break;
        case S_OBJ_OPEN:
        case S_AFTER_COMMA:
          if (b === QUOTE) this.begin(i, S_KEY);
          else if (b === RBRACE && this.state === S_OBJ_OPEN) this.state = S_DONE;
          else if (!isWs(b)) this.fail(i, this.state === S_OBJ_OPEN ? "expected a key or '}'" : "expected a key after ','");
          break;
        case S_AFTER_KEY:
          if (b === COLON) this.state = S_BEFORE_VALUE;
          else if (!isWs(b)) this.fail(i, "expected ':' after the key");
          break;
        case S_BEFORE_VALUE:
          if (!isWs(b)) {
            if (b === COMMA || b === RBRACE || b === RBRACKET || b === COLON) this.fail(i, 'expected a value');
            this.begin(i, S_VALUE);
            this.kind = b === LBRACE || b === LBRACKET ? K_CONTAINER : b === QUOTE ? K_STRING : K_SCALAR;
            // The opening byte is consumed by scanValue on the next turn.
            continue;
          }
          break;
        case S_AFTER_VALUE:
          this.afterValue(i, b);
          break;
        default:
          if (!isWs(b)) this.fail(i, 'unexpected data after the top-level object');
      }
      i++;
    }
    if (this.segStart !== -1) this.parts.push(chunk.subarray(this.segStart));
    this.base += n;
    return out;
  }

  // Call at end of input: anything but a closed top-level object is an error.
  end(): void {
    if (this.state !== S_DONE) {
      throw new ScanFailure(this.base, this.state === S_START && this.base === 0 ? 'empty file' : 'unexpected end of input (truncated file?)');
    }
  }

  private scanKey(chunk: Buffer, from: number): number {
    const n = chunk.length;
    let esc = this.escape;
    for (let i = from; i < n; i++) {
      const b = chunk[i]!;
      if (esc) esc = false;
      else if (b === BACKSLASH) esc = true;
      else if (b === QUOTE) {
        this.escape = false;
        this.key = this.parseKey(this.take(chunk, i + 1));
        this.state = S_AFTER_KEY;
        return i + 1;
      }
    }
    this.escape = esc;
    return n;
  }

  private scanValue(chunk: Buffer, from: number, out: JsonEntry[]): number {
    const n = chunk.length;
    let i = from;
    if (this.kind === K_SCALAR) {
      while (i < n && SCALAR_BYTE[chunk[i]!] === 1) i++;
      if (i < n) {
        out.push(this.finishValue(chunk, i));
        this.state = S_AFTER_VALUE;
      }
      return i;
    }
    // Locals keep the per-byte loop free of property loads; this loop is the scanner's hot path.
    let inString = this.inString;
    let esc = this.escape;
    let depth = this.depth;
    const stringValue = this.kind === K_STRING;
    for (; i < n; i++) {
      const b = chunk[i]!;
      if (inString) {
        if (esc) esc = false;
        else if (b === BACKSLASH) esc = true;
        else if (b === QUOTE) {
          inString = false;
          if (stringValue && depth === 0) return this.completeValue(chunk, i + 1, out);
        }
      } else if (b === QUOTE) {
        inString = true;
      } else if (b === LBRACE || b === LBRACKET) {
        depth++;
      } else if (b === RBRACE || b === RBRACKET) {
        // A mismatched bracket still ends or nests somewhere; JSON.parse then reports it exactly.
        if (--depth <= 0) return this.completeValue(chunk, i + 1, out);
      }
    }
    this.inString = inString;
    this.escape = esc;
    this.depth = depth;
    return n;
  }

  private completeValue(chunk: Buffer, end: number, out: JsonEntry[]): number {
    out.push(this.finishValue(chunk, end));
    this.state = S_AFTER_VALUE;
    return end;
  }

  private afterValue(i: number, b: number): void {
    if (b === COMMA) this.state = S_AFTER_COMMA;
    else if (b === RBRACE) this.state = S_DONE;
    else if (!isWs(b)) this.fail(i, "expected ',' or '}' after a value");
  }

  private begin(i: number, state: number): void {
    if (state === S_KEY) this.keyStart = this.base + i;
    else this.valueStart = this.base + i;
    this.parts = [];
    this.segStart = i;
    this.escape = false;
    this.inString = false;
    this.depth = 0;
    this.state = state;
  }

  // The bytes of the current key or value, ending (exclusive) at chunk index `end`.
  private take(chunk: Buffer, end: number): string {
    this.parts.push(chunk.subarray(this.segStart, end));
    const parts = this.parts;
    this.parts = [];
    this.segStart = -1;
    const buf = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
    return buf.toString('utf8');
  }

  private parseKey(text: string): string {
    try {
      return JSON.parse(text) as string;
    } catch (err) {
      return failInside(text, err, this.keyStart, 'invalid key');
    }
  }

  private finishValue(chunk: Buffer, end: number): JsonEntry {
    const text = this.take(chunk, end);
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (err) {
      failInside(text, err, this.valueStart, `invalid value for key ${shortKey(this.key)}`);
    }
    return { key: this.key, value, offset: this.keyStart };
  }

  private fail(i: number, what: string): never {
    throw new ScanFailure(this.base + i, what);
  }
}

function failInside(text: string, err: unknown, start: number, what: string): never {
  const rel = locateJsonError(text, err).position;
  throw new ScanFailure(start + Buffer.byteLength(text.slice(0, rel)), `${what} (${shortMessage(err)})`, err);
}

function shortKey(key: string): string {
  const json = JSON.stringify(key);
  return json.length > 80 ? `${json.slice(0, 77)}..."` : json;
}

// V8 quotes the offending text in some messages; record contents must not leak into logs.
function shortMessage(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  return msg
    .replace(/, ".*" is not valid JSON$/s, '')
    .replace(/ in JSON at position \d+.*$/s, '')
    .replace(/ \(line \d+ column \d+\)$/, '');
}

function openSource(file: string, opts: ReadJsonEntriesOptions): { source: Readable; raw: Readable } {
  const hwm = opts.highWaterMark;
  const raw = createReadStream(file, hwm === undefined ? {} : { highWaterMark: hwm });
  if (opts.gzip !== true) return { source: raw, raw };
  const gunzip = createGunzip(hwm === undefined ? {} : { chunkSize: Math.max(64, hwm) });
  // pipeline forwards read errors and tears both streams down when the consumer stops early.
  return { source: pipeline(raw, gunzip, () => undefined), raw };
}

// 1-based line and column (in code points) of an uncompressed byte offset, by re-reading the file.
async function lineColumnOfByte(file: string, gzip: boolean, position: number): Promise<{ line: number; column: number }> {
  let line = 1;
  let column = 1;
  let base = 0;
  const { source, raw } = openSource(file, { gzip });
  try {
    for await (const chunk of source) {
      const buf = chunk as Buffer;
      const seg = buf.subarray(0, Math.max(0, Math.min(buf.length, position - base)));
      let from = 0;
      for (let nl = seg.indexOf(NL); nl !== -1; nl = seg.indexOf(NL, nl + 1)) {
        line++;
        column = 1;
        from = nl + 1;
      }
      for (let i = from; i < seg.length; i++) if ((seg[i]! & 0xc0) !== 0x80) column++;
      base += buf.length;
      if (base >= position) break;
    }
  } catch {
    // A corrupt gzip stream fails again here; what was counted up to that point is the answer.
  } finally {
    source.destroy();
    raw.destroy();
  }
  return { line, column };
}

async function parseError(file: string, gzip: boolean, position: number, what: string, cause: unknown): Promise<BackupError> {
  const { line, column } = await lineColumnOfByte(file, gzip, position);
  return new BackupError('E_BACKUP_PARSE', `${file}: ${what} at line ${line} column ${column} (byte ${position})`, {
    cause,
    details: { file, position, line, column },
  });
}

/**
 * Streams the top-level entries of a JSON object file in constant memory per entry.
 * Throws `E_BACKUP_PARSE` (with `details.file/position/line/column`) when the top level is not an
 * object, the file is truncated, has trailing data, or holds an invalid key or value. Duplicate
 * keys are yielded as they occur.
 */
export async function* readJsonEntries(file: string, opts: ReadJsonEntriesOptions = {}): AsyncGenerator<JsonEntry> {
  const gzip = opts.gzip === true;
  const { source, raw } = openSource(file, opts);
  const scanner = new EntryScanner();
  try {
    for await (const chunk of source) {
      const buf = chunk as Buffer;
      opts.onChunk?.(buf);
      const entries = scanner.push(buf);
      for (const entry of entries) yield entry;
    }
    scanner.end();
  } catch (err) {
    if (err instanceof ScanFailure) {
      throw await parseError(file, gzip, err.position, err.what, err.cause);
    }
    const code = errnoCode(err);
    if (code !== undefined && code.startsWith('Z_')) {
      const msg = err instanceof Error ? err.message : String(err);
      throw await parseError(file, gzip, scanner.bytesSeen, `corrupt or truncated gzip data (${msg})`, err);
    }
    throw err;
  } finally {
    source.destroy();
    raw.destroy();
  }
}

const POSITION_RE = /at position (\d+)/;
const LINE_COL_RE = /\(?line (\d+) column (\d+)\)?/;

/**
 * Where a `JSON.parse(text)` failure happened: 0-based UTF-16 `position` in `text`, 1-based `line`
 * and `column` (column counted in code points). Uses the position in V8's message, or its line and
 * column, or the text length for "end of input"; when the message carries none (V8's
 * "Unexpected token ... is not valid JSON"), it finds the shortest failing prefix.
 */
export function locateJsonError(text: string, err: unknown): { position: number; line: number; column: number } {
  const msg = err instanceof Error ? err.message : String(err);
  let position: number | undefined;
  const pos = POSITION_RE.exec(msg);
  if (pos) {
    position = Number(pos[1]);
  } else {
    const lc = LINE_COL_RE.exec(msg);
    if (lc) position = positionOfLineColumn(text, Number(lc[1]), Number(lc[2]));
    else if (/end of (JSON )?input/i.test(msg)) position = text.length;
    else position = firstBadPrefix(text);
  }
  position = Math.max(0, Math.min(position, text.length));
  return { position, ...lineColumnAt(text, position) };
}

function lineColumnAt(text: string, position: number): { line: number; column: number } {
  let line = 1;
  let lineStart = 0;
  for (let i = text.indexOf('\n'); i !== -1 && i < position; i = text.indexOf('\n', i + 1)) {
    line++;
    lineStart = i + 1;
  }
  let column = 1;
  for (let i = lineStart; i < position; i++) {
    const c = text.charCodeAt(i);
    // A surrogate pair is one character, as Python and editors count it.
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < position) {
      const d = text.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) i++;
    }
    column++;
  }
  return { line, column };
}

function positionOfLineColumn(text: string, line: number, column: number): number {
  let i = 0;
  for (let l = 1; l < line; l++) {
    const nl = text.indexOf('\n', i);
    if (nl === -1) return text.length;
    i = nl + 1;
  }
  for (let c = 1; c < column && i < text.length; c++) {
    const code = text.charCodeAt(i);
    i += code >= 0xd800 && code <= 0xdbff ? 2 : 1;
  }
  return i;
}

// Smallest prefix length whose parse fails for a reason other than running out of input, minus one.
function firstBadPrefix(text: string): number {
  const bad = (len: number): boolean => {
    try {
      JSON.parse(text.slice(0, len));
      return false;
    } catch (e) {
      const m = e instanceof Error ? e.message : String(e);
      if (/end of (JSON )?input/i.test(m) || /^Unterminated string/.test(m)) return false;
      const p = POSITION_RE.exec(m);
      return !(p && Number(p[1]) >= len);
    }
  };
  if (!bad(text.length)) return text.length;
  let lo = 0;
  let hi = text.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (bad(mid)) hi = mid;
    else lo = mid + 1;
  }
  return Math.max(0, lo - 1);
}
