import * as path from 'node:path';
import { StoreError } from '../errors.js';
import type { StoreKind } from './types.js';

export const DEFAULT_STORE_URL = 'sqlite:data/storage/memory.db';

export interface ParsedStoreUrl {
  kind: StoreKind;
  /** Absolute file path (sqlite, json). */
  file?: string;
  /** Connection string (postgres). */
  connectionString?: string;
  /** Printable form: paths absolute, passwords removed. */
  display: string;
}

/** Removes the password from a postgres URL so it never reaches logs, manifests or the audit log. */
export function redactUrl(url: string): string {
  return url.replace(/^(postgres(?:ql)?:\/\/[^:/@]*):[^@]*@/, '$1:***@');
}

/** Parses `sqlite:PATH`, `json:PATH` or `postgres://…` (relative paths against `cwd`). */
export function parseStoreUrl(url: string, cwd: string = process.cwd()): ParsedStoreUrl {
  if (url.startsWith('postgres://') || url.startsWith('postgresql://')) {
    return { kind: 'postgres', connectionString: url, display: redactUrl(url) };
  }
  const m = /^(sqlite|json):(.+)$/.exec(url);
  if (!m || !m[1] || !m[2]) {
    throw new StoreError(
      'E_STORE_URL',
      `unknown store URL ${JSON.stringify(url)}: use sqlite:PATH, json:PATH or postgres://USER@HOST:PORT/DB`,
    );
  }
  const file = path.resolve(cwd, m[2]);
  return { kind: m[1] as StoreKind, file, display: `${m[1]}:${file}` };
}
