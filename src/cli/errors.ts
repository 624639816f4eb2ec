import { ChatmemError, isChatmemError } from '../errors.js';
import { exitCodeOf } from '../error-codes.js';

/** Process exit codes of the `chatmem` command (documented in `chatmem --help`). */
export const EXIT = {
  OK: 0,
  FAILED: 1,
  /** Bad usage, invalid input, or a refused or cancelled destructive command. */
  USAGE: 2,
  NOT_FOUND: 3,
} as const;

/** A failure raised by the command line itself (usage, confirmation, hooks), with the exit code it means. */
export class CLIError extends ChatmemError {
  readonly exitCode: number;

  constructor(code: string, message: string, options?: { exitCode?: number; cause?: unknown; details?: Record<string, unknown> }) {
    super(code, message, options);
    this.exitCode = options?.exitCode ?? exitCodeForCode(code);
  }
}

/** The exit code an error code maps to, from its kind in src/error-codes.ts: 3 not found, 2 usage or refused, 1 anything else. */
export function exitCodeForCode(code: string): number {
  return exitCodeOf(code);
}

/** The exit code for any thrown value. */
export function exitCodeFor(err: unknown): number {
  if (err instanceof CLIError) return err.exitCode;
  if (isChatmemError(err)) return exitCodeForCode(err.code);
  return EXIT.FAILED;
}

/** The stable code of any thrown value: its chatmem code, else its errno code (ENOENT…), else E_INTERNAL. */
export function codeOf(err: unknown): string {
  if (isChatmemError(err)) return err.code;
  const code = typeof err === 'object' && err !== null && 'code' in err ? (err as { code: unknown }).code : undefined;
  return typeof code === 'string' && /^E[A-Z0-9_]+$/.test(code) ? code : 'E_INTERNAL';
}

export function usage(message: string): CLIError {
  return new CLIError('E_USAGE', message);
}
