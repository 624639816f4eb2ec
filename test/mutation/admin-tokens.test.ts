import { promises as fsp, utimesSync } from 'node:fs';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { addAdminToken, adminTokensFile, BUILTIN_TOKEN_NAME, NamedTokens, readAdminTokens, removeAdminToken } from '../../src/server/admin-tokens.js';
import { tokenDigest } from '../../src/server/tokens.js';
import { tempDir } from '../helpers/tmp.js';

// Named admin tokens: what is stored (a digest only), which names are allowed, that a broken file is
// never overwritten and never half-trusted, that a stale lock of a killed run does not lock everyone
// out, and that the daemon's view follows the file.

let dataDir: string;
let cleanup: () => Promise<void>;
beforeEach(async () => {
  const t = await tempDir();
  dataDir = path.join(t.dir, 'data');
  cleanup = t.cleanup;
});
afterEach(async () => {
  await cleanup();
});

describe('names', () => {
  it('takes 1 to 64 letters, digits, _ . @ -, starting with a letter or digit', async () => {
    for (const good of ['a', '7', 'ops-bot', 'ci_runner.2', 'alice@example.org', `a${'b'.repeat(63)}`, 'Z']) {
      expect((await addAdminToken({ dataDir }, good)).name).toBe(good);
    }
    expect(BUILTIN_TOKEN_NAME).toBe('admin');
    const refused = async (name: string) => {
      const err = await addAdminToken({ dataDir }, name).then(
        () => null,
        (e: unknown) => e as { code: string; message: string },
      );
      if (err === null) throw new Error(`${JSON.stringify(name)} was accepted`);
      return err;
    };
    for (const bad of ['', '-a', '.a', '_a', '@a', 'a b', 'a/b', 'ä', `a${'b'.repeat(64)}`, 'a\n', '\na']) {
      expect(await refused(bad)).toMatchObject({
        code: 'E_TOKEN_NAME',
        message: `token names are 1 to 64 letters, digits, "_", ".", "@" or "-", starting with a letter or digit; got ${JSON.stringify(bad)}`,
      });
    }
    expect(await refused('admin')).toMatchObject({ code: 'E_TOKEN_NAME', message: '"admin" is the built-in token (CHATMEM_ADMIN_TOKEN or data/admin-token); choose another name' });
    // Names differ by case: Admin is not the built-in token.
    expect((await addAdminToken({ dataDir }, 'Admin')).name).toBe('Admin');
  });
});

describe('the file', () => {
  it('lives in the data directory as admin-tokens.json, ends with a newline, and holds digests of 256-bit tokens', async () => {
    const now = new Date('2026-11-30T10:00:00.000Z');
    const t = await addAdminToken({ dataDir }, 'alice', now);
    const file = adminTokensFile({ dataDir });
    expect(file).toBe(path.join(dataDir, 'admin-tokens.json'));
    expect(t).toEqual({ name: 'alice', token: expect.stringMatching(/^cm_[A-Za-z0-9_-]{43}$/) as unknown, created: '2026-11-30T10:00:00.000Z' });
    const text = await fsp.readFile(file, 'utf8');
    expect(text.endsWith('}\n')).toBe(true);
    expect(JSON.parse(text)).toEqual({ tokens: [{ name: 'alice', sha256: tokenDigest(t.token).toString('hex'), created: '2026-11-30T10:00:00.000Z' }] });
    const u = await addAdminToken({ dataDir }, 'bob');
    expect(u.token).not.toBe(t.token);
    expect((await readAdminTokens(file)).map((x) => x.name)).toEqual(['alice', 'bob']);
    expect((await fsp.readdir(dataDir)).sort()).toEqual(['admin-tokens.json']);
  });

  it('a missing file holds no tokens; an unreadable or malformed one is refused with E_CONFIG and kept', async () => {
    const file = adminTokensFile({ dataDir });
    expect(await readAdminTokens(file)).toEqual([]);
    await fsp.mkdir(file, { recursive: true });
    await expect(readAdminTokens(file)).rejects.toMatchObject({
      code: 'E_CONFIG',
      message: expect.stringMatching(/^cannot read .*admin-tokens\.json: EISDIR/) as unknown,
      cause: expect.objectContaining({ code: 'EISDIR' }) as unknown,
    });
    await fsp.rmdir(file);
    const shapes = [
      'null',
      '{}',
      '{"tokens": {}}',
      '{"tokens": [null]}',
      '{"tokens": ["x"]}',
      `{"tokens": [{"sha256": "${'a'.repeat(64)}", "created": "c"}]}`,
      `{"tokens": [{"name": 1, "sha256": "${'a'.repeat(64)}", "created": "c"}]}`,
      '{"tokens": [{"name": "n", "created": "c"}]}',
      `{"tokens": [{"name": "n", "sha256": "${'a'.repeat(63)}", "created": "c"}]}`,
      `{"tokens": [{"name": "n", "sha256": "${'A'.repeat(64)}", "created": "c"}]}`,
      `{"tokens": [{"name": "n", "sha256": "x${'a'.repeat(64)}", "created": "c"}]}`,
      `{"tokens": [{"name": "n", "sha256": "${'a'.repeat(64)}x", "created": "c"}]}`,
      `{"tokens": [{"name": "n", "sha256": ["${'a'.repeat(64)}"], "created": "c"}]}`,
      `{"tokens": [{"name": "n", "sha256": "${'a'.repeat(64)}"}]}`,
      `{"tokens": [{"name": "n", "sha256": "${'a'.repeat(64)}", "created": "c"}, {"name": "m"}]}`,
    ];
    for (const text of shapes) {
      await fsp.writeFile(file, text);
      await expect(readAdminTokens(file), text).rejects.toMatchObject({
        code: 'E_CONFIG',
        message: `${file} does not hold {"tokens": [{"name", "sha256", "created"}, ...]}; fix or remove it (it is never overwritten)`,
      });
      await expect(addAdminToken({ dataDir }, 'x')).rejects.toMatchObject({ code: 'E_CONFIG' });
      expect(await fsp.readFile(file, 'utf8')).toBe(text);
    }
    await fsp.writeFile(file, '{"tokens": [');
    await expect(readAdminTokens(file)).rejects.toMatchObject({
      code: 'E_CONFIG',
      message: expect.stringMatching(/ is not valid JSON; fix or remove it \(it is never overwritten\): /) as unknown,
      cause: expect.any(SyntaxError) as unknown,
    });
    await fsp.writeFile(file, `{"tokens": [{"name": "n", "sha256": "${'a'.repeat(64)}", "created": "c", "extra": 1}]}`);
    expect(await readAdminTokens(file)).toHaveLength(1);
    await fsp.writeFile(file, '{"tokens": []}');
    expect(await readAdminTokens(file)).toEqual([]);
  });

  it('refuses a duplicate and an unknown removal, naming the token, and leaves the file as it was', async () => {
    await addAdminToken({ dataDir }, 'alice');
    const file = adminTokensFile({ dataDir });
    const before = await fsp.readFile(file, 'utf8');
    await expect(addAdminToken({ dataDir }, 'alice')).rejects.toMatchObject({ code: 'E_TOKEN_EXISTS', message: 'a token named "alice" exists; remove it first (chatmem token remove alice)' });
    await expect(removeAdminToken({ dataDir }, 'bob')).rejects.toMatchObject({ code: 'E_TOKEN_NOT_FOUND', message: 'no token named "bob"' });
    expect(await fsp.readFile(file, 'utf8')).toBe(before);
    expect((await fsp.readdir(dataDir)).sort()).toEqual(['admin-tokens.json']);
    await addAdminToken({ dataDir }, 'bob');
    await addAdminToken({ dataDir }, 'carol');
    await removeAdminToken({ dataDir }, 'bob');
    expect((await readAdminTokens(file)).map((t) => t.name)).toEqual(['alice', 'carol']);
  });

  it('waits for a held lock, takes over a lock older than a minute, and gives up after 10 s', async () => {
    await fsp.mkdir(dataDir, { recursive: true });
    const lock = `${adminTokensFile({ dataDir })}.lock`;
    // Held by a live run that finishes 300 ms later: the add waits, then succeeds.
    await fsp.writeFile(lock, '');
    const started = Date.now();
    setTimeout(() => void fsp.rm(lock, { force: true }), 300);
    await addAdminToken({ dataDir }, 'waiter');
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    // Left by a killed run two minutes ago: taken over at once.
    await fsp.writeFile(lock, '');
    const old = new Date(Date.now() - 120_000);
    utimesSync(lock, old, old);
    const t0 = Date.now();
    await addAdminToken({ dataDir }, 'stale');
    expect(Date.now() - t0).toBeLessThan(5_000);
    await expect(fsp.stat(lock)).rejects.toMatchObject({ code: 'ENOENT' });
    // A fresh lock nobody releases: refused after the deadline, nothing written.
    await fsp.writeFile(lock, '');
    const t1 = Date.now();
    await expect(addAdminToken({ dataDir }, 'stuck')).rejects.toMatchObject({
      code: 'E_STORE_LOCKED',
      message: `${lock} is held by another chatmem token command; retry, or remove it if no such command runs`,
    });
    expect(Date.now() - t1).toBeGreaterThanOrEqual(9_500);
    expect((await readAdminTokens(adminTokensFile({ dataDir }))).map((t) => t.name)).toEqual(['waiter', 'stale']);
    await fsp.rm(lock);
  }, 30_000);
});

describe('NamedTokens (the daemon)', () => {
  it('matches a token to its name, follows adds and removes without a restart, and matches nothing else', async () => {
    const file = adminTokensFile({ dataDir });
    const named = new NamedTokens(file);
    expect(named.file).toBe(file);
    expect(await named.match('anything')).toBeNull();
    const a = await addAdminToken({ dataDir }, 'alice');
    const b = await addAdminToken({ dataDir }, 'bob');
    expect(await named.match(a.token)).toBe('alice');
    expect(await named.match(b.token)).toBe('bob');
    expect(await named.match(a.token.slice(0, -1))).toBeNull();
    expect(await named.match('')).toBeNull();
    await removeAdminToken({ dataDir }, 'alice');
    expect(await named.match(a.token)).toBeNull();
    expect(await named.match(b.token)).toBe('bob');
    await fsp.rm(file);
    expect(await named.match(b.token)).toBeNull();
  });

  it('the first name wins when two entries hold the same digest', async () => {
    const file = adminTokensFile({ dataDir });
    await fsp.mkdir(dataDir, { recursive: true });
    const sha256 = tokenDigest('shared').toString('hex');
    await fsp.writeFile(file, JSON.stringify({ tokens: [{ name: 'first', sha256, created: 'c' }, { name: 'second', sha256, created: 'c' }] }));
    expect(await new NamedTokens(file).match('shared')).toBe('first');
  });

  it('a file that becomes unreadable refuses named tokens with the error, until it is fixed', async () => {
    const file = adminTokensFile({ dataDir });
    const named = new NamedTokens(file);
    const a = await addAdminToken({ dataDir }, 'alice');
    expect(await named.match(a.token)).toBe('alice');
    const good = await fsp.readFile(file, 'utf8');
    await fsp.writeFile(file, 'not json at all');
    await expect(named.match(a.token)).rejects.toMatchObject({ code: 'E_CONFIG' });
    await fsp.writeFile(file, good);
    expect(await named.match(a.token)).toBe('alice');
    // A path that cannot be looked at (a file where a directory should be) is an error too, not "no tokens".
    const blocked = new NamedTokens(path.join(file, 'admin-tokens.json'));
    await expect(blocked.match(a.token)).rejects.toMatchObject({ code: 'ENOTDIR' });
  });
});
