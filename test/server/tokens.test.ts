import * as path from 'node:path';
import { ESLint } from 'eslint';
import { describe, expect, it } from 'vitest';
import { tokenDigest, tokenMatches } from '../../src/server/tokens.js';
import { ROOT } from '../helpers/tmp.js';

// sha256 of the bytes 74 c3 b6 6b c3 a9 6e ("tökén" in UTF-8), by `printf 't\xc3\xb6k\xc3\xa9n' | sha256sum`.
const SHA256_TOKEN_UTF8 = 'c61a705e32913a858921fec03c7dc0259250783f37e3d82341e7bda6fe7e7833';

describe('tokenMatches', () => {
  const token = 'the-right-admin-token-0123456789';

  it('accepts exactly the token and nothing near it, without throwing on any length', () => {
    // Computed inside the test, not at collection: a digest that throws must fail a test, not the file's load.
    const expected = tokenDigest(token);
    expect(tokenMatches(token, expected)).toBe(true);
    for (const wrong of ['', 't', token.slice(0, -1), token.slice(0, 16), token + 'x', token + token, token.toUpperCase(), ` ${token}`, `${token}\n`, 'x'.repeat(10_000)]) {
      expect(tokenMatches(wrong, expected), JSON.stringify(wrong.slice(0, 40))).toBe(false);
    }
    // Non-ASCII: hashed as UTF-8 bytes (the SHA-256 of "tökén"'s 7 UTF-8 bytes, computed elsewhere).
    expect(tokenDigest('tökén').toString('hex')).toBe(SHA256_TOKEN_UTF8);
    expect(tokenMatches('tökén-0123456789abcdef', tokenDigest('tökén-0123456789abcdef'))).toBe(true);
    expect(tokenMatches('token-0123456789abcdef', tokenDigest('tökén-0123456789abcdef'))).toBe(false);
  });

  it('compares fixed-size digests, so the expected token length never reaches the comparison', () => {
    expect(tokenDigest('a')).toHaveLength(32);
    expect(tokenDigest('a'.repeat(1000))).toHaveLength(32);
  });
});

describe('lint rule: no === or !== on tokens', () => {
  const eslint = new ESLint({ cwd: ROOT });
  const lint = async (code: string) => {
    const [result] = await eslint.lintText(code, { filePath: path.join(ROOT, 'src/server/lint-probe.ts') });
    return (result?.messages ?? []).filter((m) => m.ruleId === 'no-restricted-syntax').length;
  };

  it('fails on equality between tokens, or a token and a string', async () => {
    expect(await lint('export const f = (given: string, adminToken: string) => given === adminToken;\n')).toBe(1);
    expect(await lint('export const f = (token: string, o: { apiToken: string }) => o.apiToken !== token;\n')).toBe(1);
    expect(await lint("export const f = (token: string) => token == 'secret';\n")).toBe(1);
    expect(await lint('export const f = (bearerToken: string, x: string) => x != bearerToken;\n')).toBe(1);
  });

  it('allows checks against null and undefined, and other comparisons', async () => {
    expect(await lint('export const f = (token: string | null) => token === null;\n')).toBe(0);
    expect(await lint('export const f = (token?: string) => token !== undefined;\n')).toBe(0);
    expect(await lint("export const f = (o: { adminToken: unknown }) => typeof o.adminToken !== 'string';\n")).toBe(0);
    expect(await lint('export const f = (token: string) => token.length < 16;\n')).toBe(0);
  });
});
