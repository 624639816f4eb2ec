import { ChatmemError, isChatmemError } from '../errors.js';

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

const NOT_FOUND_CODES = new Set(['E_UNKNOWN_USER', 'E_NOT_FOUND', 'E_BACKUP_NOT_FOUND', 'E_STORE_NOT_FOUND']);
// Input the operator can fix by typing something else; a retry without changes fails the same way.
const USAGE_CODES = new Set([
  'E_USAGE',
  'E_CONFIRM_REQUIRED',
  'E_CANCELLED',
  'E_BACKUP_UNVERIFIED',
  'E_USER_ID',
  'E_RECORD',
  'E_BACKUP_ID',
  'E_RETENTION_POLICY',
  'E_STORE_URL',
  'E_CONFIG',
  'E_OPS_ARG',
  'E_STORE_ARG',
]);

/** The exit code an error code maps to: 3 not found, 2 usage or refused, 1 anything else. */
export function exitCodeForCode(code: string): number {
  if (NOT_FOUND_CODES.has(code)) return EXIT.NOT_FOUND;
  if (USAGE_CODES.has(code)) return EXIT.USAGE;
  return EXIT.FAILED;
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
