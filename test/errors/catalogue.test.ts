import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ERROR_CODES, KINDS, exitCodeOf, httpStatusOf, kindOf, type ErrorKind } from '../../src/error-codes.js';
import { exitCodeForCode } from '../../src/cli/errors.js';

const ROOT = path.resolve(import.meta.dirname, '../..');

async function sourceFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await fsp.readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...(await sourceFiles(p)));
    else if (/\.(ts|mts|js|mjs)$/.test(e.name)) out.push(p);
  }
  return out;
}

/** Every quoted error code literal in src/, with the first file that uses it. */
async function codesInSource(): Promise<Map<string, string>> {
  const found = new Map<string, string>();
  for (const file of await sourceFiles(path.join(ROOT, 'src'))) {
    if (file.endsWith('error-codes.ts')) continue;
    const text = await fsp.readFile(file, 'utf8');
    for (const m of text.matchAll(/['"]((E_[A-Z_]+))['"]/g)) if (!found.has(m[1]!)) found.set(m[1]!, path.relative(ROOT, file));
  }
  return found;
}

describe('error catalogue', () => {
  it('has every code thrown in src/', async () => {
    const found = await codesInSource();
    expect(found.size).toBeGreaterThan(40);
    const missing = [...found].filter(([code]) => !Object.hasOwn(ERROR_CODES, code)).map(([code, file]) => `${code} (${file})`);
    expect(missing).toEqual([]);
  });

  it('has no code that src/ never uses', async () => {
    const found = await codesInSource();
    expect(Object.keys(ERROR_CODES).filter((c) => !found.has(c))).toEqual([]);
  });

  it('README lists every catalogued code in its error table, and its kinds table matches the catalogue', async () => {
    const readme = await fsp.readFile(path.join(ROOT, 'README.md'), 'utf8');
    const section = readme.slice(readme.indexOf('\n## Errors'), readme.indexOf('\n## ', readme.indexOf('\n## Errors') + 5));
    expect(section.length).toBeGreaterThan(100);
    const inReadme = new Set([...section.matchAll(/`(E_[A-Z_]+)`/g)].map((m) => m[1]!));
    expect(Object.keys(ERROR_CODES).filter((c) => !inReadme.has(c))).toEqual([]);
    // The kinds table: | `kind` | status | exit | codes |
    const rows = [...section.matchAll(/^\| `([a-z_]+)` \| (\d{3}) \| (\d) \| (.*) \|$/gm)];
    expect(rows.map((r) => r[1]).sort()).toEqual(Object.keys(KINDS).sort());
    for (const r of rows) {
      const kind = r[1] as ErrorKind;
      expect({ kind, status: Number(r[2]), exit: Number(r[3]) }).toEqual({ kind, ...KINDS[kind] });
      const listed = [...r[4]!.matchAll(/`(E_[A-Z_]+)`/g)].map((m) => m[1]!).sort();
      expect({ kind, codes: listed }).toEqual({ kind, codes: Object.keys(ERROR_CODES).filter((c) => kindOf(c) === kind).sort() });
    }
  });

  it('keeps the statuses and exit codes chatmem had before the catalogue', () => {
    const status: Record<string, number> = {
      E_RECORD: 400, E_USER_ID: 400, E_OPS_ARG: 400, E_STORE_ARG: 400, E_RETENTION_POLICY: 400, E_BACKUP_ID: 400, E_CONFIRM: 400, E_IMPORT: 400,
      E_BAD_JSON: 400, E_BAD_REQUEST: 400, E_TOKEN_IN_QUERY: 400, E_AUTH: 401, E_HOST: 403,
      E_UNKNOWN_USER: 404, E_NOT_FOUND: 404, E_BACKUP_NOT_FOUND: 404, E_STORE_CONFLICT: 409, E_STORE_LOCKED: 409,
      E_BODY_LIMIT: 413, E_MEDIA_TYPE: 415, E_BACKUP_VERIFY: 422, E_BACKUP_PARSE: 422, E_STORE_CLOSED: 503,
      E_STORE_WRITE: 500, E_STORE_READ: 500, E_BACKUP_WRITE: 500, E_AUDIT_WRITE: 500, E_CONFIG: 500, E_STORE_URL: 500, E_INTERNAL: 500,
      E_SOMETHING_NEW: 500,
    };
    for (const [code, s] of Object.entries(status)) expect({ code, s: httpStatusOf(code) }).toEqual({ code, s });
    const exit: Record<string, number> = {
      E_UNKNOWN_USER: 3, E_NOT_FOUND: 3, E_BACKUP_NOT_FOUND: 3,
      E_USAGE: 2, E_CONFIRM_REQUIRED: 2, E_CANCELLED: 2, E_USER_ID: 2, E_RECORD: 2, E_BACKUP_ID: 2, E_RETENTION_POLICY: 2, E_STORE_URL: 2,
      E_CONFIG: 2, E_OPS_ARG: 2, E_STORE_ARG: 2, E_EXISTS: 2,
      E_IMPORT: 1, E_CONFIRM: 1, E_STORE_LOCKED: 1, E_BACKUP_VERIFY: 1, E_STORE_WRITE: 1, E_AUTH: 1, E_DAEMON_START: 1, E_SOMETHING_NEW: 1,
    };
    for (const [code, e] of Object.entries(exit)) {
      expect({ code, e: exitCodeOf(code) }).toEqual({ code, e });
      expect(exitCodeForCode(code)).toBe(e);
    }
  });
});
