import * as path from 'node:path';
import { ESLint } from 'eslint';
import { describe, expect, it } from 'vitest';
import { tokenDigest, tokenMatches } from '../../src/server/tokens.js';
import { ROOT } from '../helpers/tmp.js';

describe('tokenMatches', () => {
  const token = 'the-right-admin-token-0123456789';

  it('accepts exactly the token and nothing near it, without throwing on any length', () => {
    // Computed inside the test, not at collection: a digest that throws must fail a test, not the file's load.
    const expected = tokenDigest(token);
    expect(tokenMatches(token, expected)).toBe(true);
    for (const wrong of ['', 't', token.slice(0, -1), token.slice(0, 16), token + 'x', token + token, token.toUpperCase(), ` ${token}`, `${token}\n`, 'x'.repeat(10_000)]) {
      expect(tokenMatches(wrong, expected), JSON.stringify(wrong.slice(0, 40))).toBe(false);
    }
    // Non-ASCII: compared as UTF-8 bytes.
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
