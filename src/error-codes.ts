/**
 * The error catalogue: every stable error code, the kind of failure it is, and from the kind alone the
 * HTTP status the daemon answers and the exit code of the `chatmem` command. README's error tables list
 * the same codes (test/error-codes.test.ts checks both against every code the source throws).
 */

/**
 * What kind of failure a code is.
 *
 * - `invalid`: the caller's input is wrong; the same request fails again unless the input changes.
 * - `bad_request`: the HTTP request itself is malformed or incomplete (a client's bug, not the operator's input).
 * - `unauthorized` / `forbidden`: missing or wrong credentials / a request this daemon will not serve.
 * - `not_found`: the user, file, backup or route does not exist.
 * - `conflict`: another writer or process got there first; retry later.
 * - `too_large` / `unsupported_media`: the request body is over the limit / not JSON in UTF-8.
 * - `uri_too_long` / `headers_too_large` / `timeout`: the URL or the headers are over the limit / the request did not arrive in time.
 * - `unprocessable`: the request is well formed but its target (a backup) cannot be trusted or read.
 * - `unconfirmed`: the operation needs an explicit acceptance the request did not give (an unverified legacy backup).
 * - `unavailable`: the daemon is shutting down or cannot be reached; retry against the next one.
 * - `misconfigured`: the configuration is wrong. The operator fixes it (CLI: usage), but over HTTP it is the server's fault.
 * - `internal`: anything else: I/O failures, corrupt files, bugs.
 */
export type ErrorKind =
  | 'invalid'
  | 'bad_request'
  | 'unauthorized'
  | 'forbidden'
  | 'not_found'
  | 'conflict'
  | 'too_large'
  | 'uri_too_long'
  | 'headers_too_large'
  | 'timeout'
  | 'unsupported_media'
  | 'unprocessable'
  | 'unconfirmed'
  | 'unavailable'
  | 'misconfigured'
  | 'internal';

/** HTTP status and `chatmem` exit code of each kind (exit: 1 failed, 2 usage or refused, 3 not found). */
export const KINDS: Readonly<Record<ErrorKind, { status: number; exit: number }>> = {
  invalid: { status: 400, exit: 2 },
  bad_request: { status: 400, exit: 1 },
  unauthorized: { status: 401, exit: 1 },
  forbidden: { status: 403, exit: 1 },
  not_found: { status: 404, exit: 3 },
  conflict: { status: 409, exit: 1 },
  too_large: { status: 413, exit: 1 },
  uri_too_long: { status: 414, exit: 1 },
  headers_too_large: { status: 431, exit: 1 },
  timeout: { status: 408, exit: 1 },
  unsupported_media: { status: 415, exit: 1 },
  unprocessable: { status: 422, exit: 1 },
  unconfirmed: { status: 409, exit: 2 },
  unavailable: { status: 503, exit: 1 },
  misconfigured: { status: 500, exit: 2 },
  internal: { status: 500, exit: 1 },
};

/** Every error code chatmem raises (server, CLI, client and web page), with its kind. */
export const ERROR_CODES = {
  // records and input
  E_USER_ID: 'invalid',
  E_RECORD: 'invalid',
  E_OPS_ARG: 'invalid',
  E_STORE_ARG: 'invalid',
  E_RETENTION_POLICY: 'invalid',
  E_BACKUP_ID: 'invalid',
  // stores
  E_STORE_URL: 'misconfigured',
  E_STORE_CONFIG: 'internal',
  E_STORE_OPEN: 'internal',
  E_STORE_PARSE: 'internal',
  E_STORE_VERSION: 'internal',
  E_STORE_READ: 'internal',
  E_STORE_WRITE: 'internal',
  E_STORE_CONFLICT: 'conflict',
  E_STORE_LOCKED: 'conflict',
  E_STORE_READONLY: 'internal',
  // Only during shutdown, after in-flight requests: the caller may retry against the next daemon.
  E_STORE_CLOSED: 'unavailable',
  E_UNKNOWN_USER: 'not_found',
  E_NOT_FOUND: 'not_found',
  E_STORE_NOT_FOUND: 'not_found',
  // backups
  E_BACKUP_NOT_FOUND: 'not_found',
  E_BACKUP_WRITE: 'internal',
  // The backup exists but its content cannot be trusted or read: the request cannot be carried out as asked.
  E_BACKUP_VERIFY: 'unprocessable',
  E_BACKUP_PARSE: 'unprocessable',
  E_BACKUP_FORMAT: 'internal',
  E_BACKUP_ORDER: 'internal',
  E_BACKUP_MANIFEST: 'unprocessable',
  E_BACKUP_NOT_REGULAR: 'unprocessable',
  // A legacy backup (no checksum) is restored only with {"allowUnverified": true} (CLI: the operator says yes).
  E_BACKUP_UNVERIFIED: 'unconfirmed',
  E_BACKUP_READ: 'internal',
  E_RETENTION_INPUT: 'internal',
  // off-site copies (S3-compatible storage): an upload that fails never fails the backup it copies
  E_OFFSITE_CONFIG: 'misconfigured',
  E_OFFSITE_AUTH: 'misconfigured',
  E_OFFSITE_BUCKET: 'misconfigured',
  E_OFFSITE_KEY: 'misconfigured',
  E_OFFSITE_UNREACHABLE: 'unavailable',
  E_OFFSITE_NOT_FOUND: 'not_found',
  E_OFFSITE_DECRYPT: 'unprocessable',
  E_OFFSITE_VERIFY: 'internal',
  E_OFFSITE_REQUEST: 'internal',
  // operations and audit
  E_IMPORT: 'bad_request',
  E_AUDIT_PARSE: 'internal',
  E_AUDIT_READ: 'internal',
  E_AUDIT_WRITE: 'internal',
  E_CONFIG: 'misconfigured',
  // HTTP API
  E_AUTH: 'unauthorized',
  E_TOKEN_IN_QUERY: 'bad_request',
  E_HOST: 'forbidden',
  E_BAD_JSON: 'bad_request',
  E_BODY_LIMIT: 'too_large',
  E_MEDIA_TYPE: 'unsupported_media',
  E_BAD_REQUEST: 'bad_request',
  E_CONFIRM: 'bad_request',
  // named admin tokens
  E_TOKEN_NAME: 'invalid',
  E_TOKEN_EXISTS: 'conflict',
  E_TOKEN_NOT_FOUND: 'not_found',
  E_BAD_URL: 'bad_request',
  E_BAD_ENCODING: 'bad_request',
  E_URI_TOO_LONG: 'uri_too_long',
  E_HEADERS_TOO_LARGE: 'headers_too_large',
  E_REQUEST_TIMEOUT: 'timeout',
  E_INTERNAL: 'internal',
  // daemon processes
  E_DAEMON_RUNNING: 'internal',
  E_DAEMON_START: 'internal',
  E_DAEMON_STOP: 'internal',
  E_PORT_IN_USE: 'internal',
  E_ADMIN_TOKEN: 'internal',
  // HTTP client (and the web page, which has its own client)
  E_UNREACHABLE: 'unavailable',
  E_TIMEOUT: 'unavailable',
  E_NETWORK: 'unavailable',
  E_BAD_RESPONSE: 'internal',
  // CLI
  E_USAGE: 'invalid',
  E_CONFIRM_REQUIRED: 'invalid',
  E_CANCELLED: 'invalid',
  E_EXISTS: 'invalid',
  E_HOOK_FAILED: 'internal',
  // web page only: a form the operator must correct, a failed check, a failure without a code
  E_FORM: 'invalid',
  E_VERIFY: 'unprocessable',
  E_UNKNOWN: 'internal',
} as const satisfies Record<string, ErrorKind>;

export type ErrorCode = keyof typeof ERROR_CODES;

/** The kind of a code; codes outside the catalogue are `internal`. */
export function kindOf(code: string): ErrorKind {
  return Object.hasOwn(ERROR_CODES, code) ? ERROR_CODES[code as ErrorCode] : 'internal';
}

/** The HTTP status the daemon answers for a code (500 for codes outside the catalogue). */
export function httpStatusOf(code: string): number {
  return KINDS[kindOf(code)].status;
}

/** The exit code of `chatmem` for a code (1 for codes outside the catalogue). */
export function exitCodeOf(code: string): number {
  return KINDS[kindOf(code)].exit;
}
