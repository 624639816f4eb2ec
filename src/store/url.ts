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

/** Query parameters of a libpq URL that carry secrets. */
const SECRET_PARAMS = /^(password|sslpassword|pass|pwd)$/i;

function decodeSafe(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/**
 * Removes every password from a store URL so it never reaches logs, manifests, errors, /healthz or the
 * audit log: `user:pw@` (a password may hold `@`, `:` or percent-escapes; everything up to the last `@`
 * is the user part, so an `@` elsewhere over-redacts rather than leaks), `?password=` and `?sslpassword=`
 * (names percent-encoded or not), and `password=` in a key=value connection string.
 */
export function redactUrl(url: string): string {
  const m = /^([a-z][a-z0-9+.-]*:\/\/)(.*)$/is.exec(url);
  if (!m) return url.replace(/(\b(?:password|sslpassword)\s*=\s*)('(?:[^'\\]|\\.)*'|\S*)/gi, '$1***');
  const scheme = m[1] ?? '';
  let rest = m[2] ?? '';
  const at = rest.lastIndexOf('@');
  if (at >= 0) {
    const userinfo = rest.slice(0, at);
    const colon = userinfo.indexOf(':');
    rest = (colon >= 0 ? `${userinfo.slice(0, colon)}:***` : userinfo) + rest.slice(at);
  }
  const q = rest.indexOf('?');
  if (q >= 0) {
    const hash = rest.indexOf('#', q);
    const end = hash < 0 ? rest.length : hash;
    const params = rest
      .slice(q + 1, end)
      .split('&')
      .map((p) => {
        const eq = p.indexOf('=');
        const key = eq < 0 ? p : p.slice(0, eq);
        return SECRET_PARAMS.test(decodeSafe(key).trim()) ? `${key}=***` : p;
      });
    rest = `${rest.slice(0, q + 1)}${params.join('&')}${rest.slice(end)}`;
  }
  return scheme + rest;
}

/**
 * The passwords a connection string holds (as written and percent-decoded), to scrub from messages of
 * errors that may quote them (driver errors, URL parse errors).
 */
export function secretsOf(url: string): string[] {
  const out = new Set<string>();
  const m = /^[a-z][a-z0-9+.-]*:\/\/(.*)$/is.exec(url);
  if (m) {
    const rest = m[1] ?? '';
    const at = rest.lastIndexOf('@');
    const userinfo = at >= 0 ? rest.slice(0, at) : '';
    const colon = userinfo.indexOf(':');
    if (colon >= 0) out.add(userinfo.slice(colon + 1));
    const q = rest.indexOf('?');
    if (q >= 0) {
      for (const p of rest.slice(q + 1).split(/[&#]/)) {
        const eq = p.indexOf('=');
        if (eq >= 0 && SECRET_PARAMS.test(decodeSafe(p.slice(0, eq)).trim())) out.add(p.slice(eq + 1));
      }
    }
  } else {
    for (const k of url.matchAll(/\b(?:password|sslpassword)\s*=\s*('(?:[^'\\]|\\.)*'|\S*)/gi)) out.add((k[1] ?? '').replace(/^'|'$/g, ''));
  }
  for (const s of [...out]) out.add(decodeSafe(s));
  return [...out].filter((s) => s.length > 0);
}

/** `text` with every password of `url` replaced by `***`, and any store URL in it redacted. */
export function redactSecrets(text: string, url?: string): string {
  let out = text;
  if (url) for (const secret of secretsOf(url).sort((a, b) => b.length - a.length)) out = out.split(secret).join('***');
  return out.replace(/postgres(?:ql)?:\/\/[^\s"'<>]*/gi, (u) => redactUrl(u));
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
      `unknown store URL ${JSON.stringify(redactUrl(url))}: use sqlite:PATH, json:PATH or postgres://USER@HOST:PORT/DB`,
    );
  }
  const file = path.resolve(cwd, m[2]);
  return { kind: m[1] as StoreKind, file, display: `${m[1]}:${file}` };
}
