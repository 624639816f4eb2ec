/**
 * Errors. Each layer has one class; every error carries a stable `code`
 * (documented in README) and keeps the underlying `cause`.
 */
export class ChatmemError extends Error {
  readonly code: string;
  /** Extra, machine-readable facts about the failure (file, position, user ids, ...). */
  readonly details: Record<string, unknown> | undefined;

  constructor(code: string, message: string, options?: { cause?: unknown; details?: Record<string, unknown> }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.details = options?.details;
    this.name = new.target.name;
  }
}

/** Invalid record, user id or history entry (`E_RECORD`, `E_USER_ID`). */
export class RecordError extends ChatmemError {}

/** Store driver and store URL failures (`E_STORE_*`, `E_NOT_FOUND`). */
export class StoreError extends ChatmemError {}

/** Backup engine failures (`E_BACKUP_*`). */
export class BackupError extends ChatmemError {}

/** Guarded-operation failures (`E_OPS_*`, `E_UNKNOWN_USER`). */
export class OpsError extends ChatmemError {}

/** Configuration failures (`E_CONFIG`). */
export class ConfigError extends ChatmemError {}

export function isChatmemError(err: unknown): err is ChatmemError {
  return err instanceof ChatmemError;
}

/** Node fs errors carry `code`; narrow without `any`. */
export function errnoCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err) {
    const code = (err as { code: unknown }).code;
    return typeof code === 'string' ? code : undefined;
  }
  return undefined;
}
