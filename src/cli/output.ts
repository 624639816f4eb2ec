import { once } from 'node:events';
import type { Readable, Writable } from 'node:stream';
import { prettyJson } from '../json-safe.js';

/** Everything the CLI touches of its process, so tests can run it in-process. */
export interface CliIo {
  stdout: Writable;
  stderr: Writable;
  stdin: Readable;
  /** An operator is at a terminal: prompts may be asked. */
  isTTY: boolean;
  env: NodeJS.ProcessEnv;
  cwd: string;
}

type Paint = (s: string) => string;

export interface Palette {
  bold: Paint;
  dim: Paint;
  red: Paint;
  green: Paint;
  yellow: Paint;
  cyan: Paint;
}

function sgr(open: number, close: number): Paint {
  return (s) => `\x1b[${open}m${s}\x1b[${close}m`;
}

const PLAIN: Palette = { bold: String, dim: String, red: String, green: String, yellow: String, cyan: String };
const COLOURS: Palette = { bold: sgr(1, 22), dim: sgr(2, 22), red: sgr(31, 39), green: sgr(32, 39), yellow: sgr(33, 39), cyan: sgr(36, 39) };

function streamIsTTY(s: Writable): boolean {
  return (s as Writable & { isTTY?: boolean }).isTTY === true;
}

/** Colours follow https://no-color.org: any non-empty NO_COLOR turns them off, and so does a non-terminal. */
export function colourEnabled(io: CliIo, stream: Writable): boolean {
  const noColor = io.env.NO_COLOR;
  if (noColor !== undefined && noColor !== '') return false;
  if (io.env.TERM === 'dumb') return false;
  return io.isTTY && streamIsTTY(stream);
}

/**
 * Where things go: stdout carries the result (a table, a record, a summary line, or the one `--json`
 * document); stderr carries everything said on the way (notes, details shown before a question,
 * the question, progress, warnings and errors).
 */
export class Output {
  readonly json: boolean;
  /** Colours for stdout. */
  readonly c: Palette;
  /** Colours for stderr. */
  readonly e: Palette;
  private readonly progressOn: boolean;

  constructor(
    readonly io: CliIo,
    options: { json: boolean },
  ) {
    this.json = options.json;
    this.c = colourEnabled(io, io.stdout) ? COLOURS : PLAIN;
    this.e = colourEnabled(io, io.stderr) ? COLOURS : PLAIN;
    this.progressOn = io.isTTY && streamIsTTY(io.stderr) && io.env.TERM !== 'dumb';
  }

  /** A result line on stdout (human mode). */
  out(line = ''): void {
    this.io.stdout.write(line + '\n');
  }

  /** A message on stderr. */
  say(line = ''): void {
    this.io.stderr.write(line + '\n');
  }

  note(line: string): void {
    if (!this.json) this.say(this.e.dim(line));
  }

  warn(line: string): void {
    this.say(`${this.e.yellow('warning:')} ${line}`);
  }

  /** The command's one JSON document on stdout. */
  data(doc: unknown): void {
    this.io.stdout.write(prettyJson(doc) + '\n');
  }

  /** Waits until stdout can take more, for long listings. */
  async drain(): Promise<void> {
    const s = this.io.stdout;
    if (s.writableNeedDrain && !s.destroyed) await once(s, 'drain');
  }

  /** A progress indicator on stderr; silent unless stderr is a terminal. */
  progress(label: string): Progress {
    return new Progress(this.progressOn ? this.io.stderr : null, label);
  }
}

export class Progress {
  private last = 0;
  private shown = false;

  constructor(
    private readonly stream: Writable | null,
    private label: string,
  ) {}

  relabel(label: string): void {
    this.label = label;
  }

  update(done: number, total: number | null): void {
    if (!this.stream) return;
    const now = Date.now();
    // Repainting on every record would cost more than the work it reports.
    if (now - this.last < 100 && !(total !== null && done >= total)) return;
    this.last = now;
    this.shown = true;
    let text: string;
    if (total !== null && total > 0) {
      const width = 24;
      const filled = Math.min(width, Math.round((done / total) * width));
      text = `${this.label} [${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${formatCount(done)}/${formatCount(total)}`;
    } else {
      text = `${this.label}: ${formatCount(done)} users`;
    }
    this.stream.write(`\r\x1b[2K${text}`);
  }

  end(): void {
    if (this.stream && this.shown) this.stream.write('\r\x1b[2K');
    this.shown = false;
  }
}

export function formatCount(n: number): string {
  return n.toLocaleString('en-US');
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KB', 'MB', 'GB', 'TB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

/** `2025-11-20 01:02` (UTC) from an ISO timestamp; other text unchanged. */
export function formatTime(iso: string | null | undefined): string {
  if (!iso) return '-';
  const m = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2})/.exec(iso);
  return m ? `${m[1]} ${m[2]}` : iso;
}

export function formatAge(seconds: number | null): string {
  if (seconds === null) return '-';
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h`;
  return `${Math.floor(seconds / 86400)}d`;
}

/** Shortens to `max` characters with an ellipsis; control characters become spaces so a row stays one line. */
export function clip(text: string | null | undefined, max: number): string {
  if (text === null || text === undefined || text === '') return '-';
  // eslint-disable-next-line no-control-regex -- a newline or escape inside a name must not break the table
  const flat = text.replace(/[\u0000-\u001f\u007f]/g, ' ');
  const chars = [...flat];
  return chars.length <= max ? flat : chars.slice(0, max - 1).join('') + '…';
}

/** Column widths that fit `header` and `rows` (in characters, not UTF-16 units). */
export function columnWidths(header: string[], rows: string[][]): number[] {
  return header.map((h, i) => Math.max([...h].length, ...rows.map((r) => [...(r[i] ?? '')].length)));
}

/**
 * Aligned columns, header first; columns listed in `right` are right-aligned (numbers). `widths`
 * fixes the layout, so pages of one long listing line up under one header.
 */
export function table(header: string[], rows: string[][], options: { right?: number[]; paint?: Paint; widths?: number[] } = {}): string[] {
  const widths = options.widths ?? columnWidths(header, rows);
  const right = new Set(options.right ?? []);
  const line = (cells: string[]): string =>
    cells
      .map((cell, i) => {
        const pad = ' '.repeat(Math.max(0, (widths[i] ?? 0) - [...cell].length));
        return right.has(i) ? pad + cell : cell + pad;
      })
      .join('  ')
      .trimEnd();
  const head = line(header);
  return [options.paint ? options.paint(head) : head, ...rows.map(line)];
}
