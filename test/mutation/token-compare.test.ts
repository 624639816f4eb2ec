import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { ESLint } from 'eslint';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/tmp.js';

// No unit test can tell a constant-time compare from `===` without timing it (which tests must not
// do), so the lint rule in eslint.config.js is the guard. These tests check the guard itself: it
// flags each way the daemon's token check could quietly become a plain comparison.

const APP = path.join(ROOT, 'src/server/app.ts');
const SAME_TOKEN = /function sameToken\(given: string, expected: Buffer\): boolean \{\n([^\n]*)\n\}/;

async function restricted(source: string): Promise<string[]> {
  const eslint = new ESLint({ cwd: ROOT });
  const [result] = await eslint.lintText(source, { filePath: APP });
  return (result?.messages ?? []).filter((m) => m.ruleId === 'no-restricted-syntax').map((m) => m.message);
}

function withSameTokenBody(body: string): string {
  const text = readFileSync(APP, 'utf8');
  expect(text).toMatch(SAME_TOKEN);
  return text.replace(SAME_TOKEN, `function sameToken(given: string, expected: Buffer): boolean {\n  ${body}\n}`);
}

describe('token comparison guard (lint)', () => {
  it('the daemon as written passes', async () => {
    expect(await restricted(readFileSync(APP, 'utf8'))).toEqual([]);
  });

  for (const [what, body] of [
    ['=== on digests', "return sha256(given).toString('hex') === expected.toString('hex');"],
    ['Buffer.equals', 'return sha256(given).equals(expected);'],
    ['Buffer.compare', 'return Buffer.compare(sha256(given), expected) === 0;'],
    ['a length check that short-circuits', 'return sha256(given).length === expected.length && timingSafeEqual(sha256(given), expected);'],
  ] as const) {
    it(`flags sameToken using ${what}`, async () => {
      expect(await restricted(withSameTokenBody(body))).not.toEqual([]);
    }, 30_000);
  }

  it('flags a route comparing a token with === or !== instead of calling sameToken', async () => {
    const extra = [
      'export const leak1 = (token: string, adminToken: string): boolean => token === adminToken;',
      'export const leak2 = (given: string, cfg: { apiToken: string }): boolean => given !== cfg.apiToken;',
      'export const leak3 = (token: Buffer, expected: Buffer): boolean => token.equals(expected);',
    ];
    for (const line of extra) {
      expect(await restricted(readFileSync(APP, 'utf8') + '\n' + line + '\n'), line).not.toEqual([]);
    }
  }, 60_000);

  it('does not flag presence checks on a token', async () => {
    const line = "export const present = (token: string | undefined): boolean => token !== undefined && token !== '';";
    expect(await restricted(readFileSync(APP, 'utf8') + '\n' + line + '\n')).toEqual([]);
  }, 30_000);
});
