import { randomBytes, timingSafeEqual } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { ResolvedConfig } from '../config.js';
import { ChatmemError, ConfigError, errnoCode } from '../errors.js';
import { ensurePrivateDir, FILE_MODE, writeFileAtomic } from '../fs-util.js';
import { tokenDigest } from './tokens.js';

/** One named admin token as stored: only its SHA-256 (tokens are 256 random bits, so a fast hash is enough). */
export interface NamedToken {
  name: string;
  sha256: string;
  created: string;
}

/** The built-in token (`CHATMEM_ADMIN_TOKEN` or data/admin-token) is called this; no named token may be. */
export const BUILTIN_TOKEN_NAME = 'admin';
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$/;

/** `data/admin-tokens.json` (0600) beside the built-in token file. */
export function adminTokensFile(config: Pick<ResolvedConfig, 'dataDir'>): string {
  return path.join(config.dataDir, 'admin-tokens.json');
}

function checkName(name: string): void {
  if (!NAME_RE.test(name)) {
    throw new ChatmemError('E_TOKEN_NAME', `token names are 1 to 64 letters, digits, "_", ".", "@" or "-", starting with a letter or digit; got ${JSON.stringify(name)}`);
  }
  if (name === BUILTIN_TOKEN_NAME) throw new ChatmemError('E_TOKEN_NAME', `"${BUILTIN_TOKEN_NAME}" is the built-in token (CHATMEM_ADMIN_TOKEN or data/admin-token); choose another name`);
}

/** The named tokens in `file`; none when it does not exist. A file that does not parse is an error, never overwritten. */
export async function readAdminTokens(file: string): Promise<NamedToken[]> {
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return [];
    throw new ConfigError('E_CONFIG', `cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new ConfigError('E_CONFIG', `${file} is not valid JSON; fix or remove it (it is never overwritten): ${(err as Error).message}`, { cause: err });
  }
  const tokens = (doc as { tokens?: unknown } | null)?.tokens;
  const valid = (t: unknown): t is NamedToken => {
    const r = t as Record<string, unknown> | null;
    return typeof r === 'object' && r !== null && typeof r.name === 'string' && typeof r.sha256 === 'string' && /^[0-9a-f]{64}$/.test(r.sha256) && typeof r.created === 'string';
  };
  if (!Array.isArray(tokens) || !tokens.every(valid)) {
    throw new ConfigError('E_CONFIG', `${file} does not hold {"tokens": [{"name", "sha256", "created"}, ...]}; fix or remove it (it is never overwritten)`);
  }
  return tokens;
}

/** Read-modify-write under an exclusive lock file, so two `chatmem token` runs never lose each other's change. */
async function update<T>(file: string, change: (tokens: NamedToken[]) => { tokens: NamedToken[]; result: T }): Promise<T> {
  await ensurePrivateDir(path.dirname(file));
  const lock = `${file}.lock`;
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      await (await fsp.open(lock, 'wx', FILE_MODE)).close();
      break;
    } catch (err) {
      if (errnoCode(err) !== 'EEXIST') throw err;
      // A lock left by a killed run: older than a minute, it is no one's.
      const st = await fsp.stat(lock).catch(() => null);
      if (st && Date.now() - st.mtimeMs > 60_000) await fsp.rm(lock, { force: true });
      if (Date.now() > deadline) throw new ChatmemError('E_STORE_LOCKED', `${lock} is held by another chatmem token command; retry, or remove it if no such command runs`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  try {
    const { tokens, result } = change(await readAdminTokens(file));
    await writeFileAtomic(file, JSON.stringify({ tokens }, null, 2) + '\n');
    return result;
  } finally {
    await fsp.rm(lock, { force: true });
  }
}

/** Creates a named admin token; the token itself is returned once and stored only as its hash. */
export async function addAdminToken(config: Pick<ResolvedConfig, 'dataDir'>, name: string, now = new Date()): Promise<{ name: string; token: string; created: string }> {
  checkName(name);
  const token = `cm_${randomBytes(32).toString('base64url')}`;
  const created = now.toISOString();
  return update(adminTokensFile(config), (tokens) => {
    if (tokens.some((t) => t.name === name)) throw new ChatmemError('E_TOKEN_EXISTS', `a token named ${JSON.stringify(name)} exists; remove it first (chatmem token remove ${name})`);
    return { tokens: [...tokens, { name, sha256: tokenDigest(token).toString('hex'), created }], result: { name, token, created } };
  });
}

/** Removes a named admin token; a running daemon refuses it from its next request on. */
export async function removeAdminToken(config: Pick<ResolvedConfig, 'dataDir'>, name: string): Promise<void> {
  await update(adminTokensFile(config), (tokens) => {
    if (!tokens.some((t) => t.name === name)) throw new ChatmemError('E_TOKEN_NOT_FOUND', `no token named ${JSON.stringify(name)}`);
    return { tokens: tokens.filter((t) => t.name !== name), result: undefined };
  });
}

/**
 * The daemon's view of the named tokens: re-read when the file changes (checked per call by its
 * size, mtime and inode), so `token add` and `token remove` take effect without a restart.
 */
export class NamedTokens {
  private cache: { key: string; entries: { name: string; digest: Buffer }[] } | null = null;

  constructor(readonly file: string) {}

  private async entries(): Promise<{ name: string; digest: Buffer }[]> {
    const st = await fsp.stat(this.file).catch((err: unknown) => {
      if (errnoCode(err) === 'ENOENT') return null;
      throw err;
    });
    const key = st ? `${st.ino}:${st.size}:${st.mtimeMs}` : 'none';
    if (this.cache?.key !== key) {
      const tokens = st ? await readAdminTokens(this.file) : [];
      this.cache = { key, entries: tokens.map((t) => ({ name: t.name, digest: Buffer.from(t.sha256, 'hex') })) };
    }
    return this.cache.entries;
  }

  /** The name of the token `given` is, or null. Every entry is compared in constant time, with no early exit. */
  async match(given: string): Promise<string | null> {
    const digest = tokenDigest(given);
    let found: string | null = null;
    for (const e of await this.entries()) if (timingSafeEqual(digest, e.digest) && found === null) found = e.name;
    return found;
  }
}
