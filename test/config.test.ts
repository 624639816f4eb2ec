import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { configJsonSchema, resolveConfig } from '../src/config.js';
import { ROOT, tempDir } from './helpers/tmp.js';
import { cleanEnv, runCli } from './cli/helpers.js';

let dir: string;
let cleanup: () => Promise<void>;
beforeEach(async () => {
  ({ dir, cleanup } = await tempDir('chatmem-config-'));
});
afterEach(async () => {
  await cleanup();
});

async function writeConfig(doc: unknown): Promise<string> {
  const file = path.join(dir, 'chatmem.config.json');
  await fsp.writeFile(file, JSON.stringify(doc));
  return file;
}

async function configError(env: NodeJS.ProcessEnv = {}): Promise<{ code: string; message: string }> {
  const err = await resolveConfig({ cwd: dir, env: cleanEnv(env) }).then(
    () => null,
    (e: unknown) => e as { code: string; message: string },
  );
  if (err === null) throw new Error('the config was accepted');
  return err;
}

describe('chatmem.config.json is validated strictly', () => {
  it('an unknown key is E_CONFIG naming the key and the file, with a suggestion', async () => {
    const file = await writeConfig({ backupdir: '/mnt/shared/backups' });
    const err = await configError();
    expect(err.code).toBe('E_CONFIG');
    expect(err.message).toContain(file);
    expect(err.message).toContain('unknown key "backupdir" (did you mean "backupDir"?)');
  });

  it('unknown nested keys name their path and get suggestions from their own level', async () => {
    await writeConfig({ server: { prot: 9000 }, backup: { retention: { dayly: 7 } }, hooks: { beforewrite: 'x' } });
    const err = await configError();
    expect(err.message).toContain('unknown key "server.prot" (did you mean "port"?)');
    expect(err.message).toContain('unknown key "backup.retention.dayly" (did you mean "daily"?)');
    expect(err.message).toContain('unknown key "hooks.beforewrite" (did you mean "beforeWrite"?)');
  });

  it('a key far from every known one is refused without a guess', async () => {
    await writeConfig({ frobnicate: true });
    const err = await configError();
    expect(err.message).toContain('unknown key "frobnicate"');
    expect(err.message).not.toContain('did you mean');
  });

  it('a wrong type names the key path and the expected type', async () => {
    await writeConfig({ server: { port: '8081' }, historyCap: 0, hooks: { afterWrite: 3 } });
    const err = await configError();
    expect(err.code).toBe('E_CONFIG');
    expect(err.message).toContain('"server.port": expected number, received string');
    expect(err.message).toMatch(/"historyCap": Too small: expected number to be >=1/);
    expect(err.message).toContain('"hooks.afterWrite": expected string, received number');
  });

  it('durations, intervals and time zones are checked by their parsers', async () => {
    await writeConfig({ backup: { every: '30m', retention: { within: '7w' } }, legacyTimezone: 'Asia/Jakrta' });
    const err = await configError();
    expect(err.message).toContain('"backup.every": invalid backup.every "30m": "m" means months; for minutes write "30min"');
    expect(err.message).toContain('"backup.retention.within": invalid duration "7w": unknown unit "w"');
    expect(err.message).toContain('"legacyTimezone": expected an IANA time zone name');
  });

  it('accepts a full config with $schema', async () => {
    await writeConfig({
      $schema: './docs/chatmem.config.schema.json',
      store: 'json:data/storage/memory.json',
      backupDir: 'shared/backups',
      historyCap: 20,
      legacyTimezone: 'Asia/Jakarta',
      hooks: { beforeWrite: 'true', afterWrite: 'true' },
      backup: { every: '30min', retention: { hourly: 24, daily: 7, within: '1y2m' } },
      server: { host: '127.0.0.1', port: 9000, bodyLimit: 2048 },
    });
    const c = await resolveConfig({ cwd: dir, env: cleanEnv() });
    expect(c.backupDir).toBe(path.join(dir, 'shared/backups'));
    expect(c.legacyTimezone).toBe('Asia/Jakarta');
    expect(c.server.port).toBe(9000);
    expect(c.retention).toEqual({ hourly: 24, daily: 7, within: '1y2m' });
  });

  it('environment variables with bad values are E_CONFIG naming the variable', async () => {
    for (const [name, value, setting] of [
      ['CHATMEM_PORT', 'abc', 'server.port'],
      ['CHATMEM_PORT', '70000', 'server.port'],
      ['CHATMEM_HISTORY_CAP', '0', 'historyCap'],
      ['CHATMEM_BODY_LIMIT', '1.5', 'server.bodyLimit'],
      ['CHATMEM_LEGACY_TIMEZONE', 'Mars/Base', 'legacyTimezone'],
    ] as const) {
      const err = await configError({ [name]: value });
      expect(err.code, name).toBe('E_CONFIG');
      expect(err.message, name).toContain(`environment variable ${name} (${setting})`);
      expect(err.message, name).toContain(JSON.stringify(value));
    }
    expect((await resolveConfig({ cwd: dir, env: cleanEnv({ CHATMEM_PORT: '9001' }) })).server.port).toBe(9001);
  });

  it('the CLI reports a typo in the config or the environment with exit 2', async () => {
    await writeConfig({ backupdir: 'shared' });
    const r = await runCli(['backups'], { cwd: dir });
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^chatmem: error E_CONFIG: invalid config .*chatmem\.config\.json: unknown key "backupdir" \(did you mean "backupDir"\?\)/);
    await fsp.rm(path.join(dir, 'chatmem.config.json'));
    const e = await runCli(['users'], { cwd: dir, env: cleanEnv({ CHATMEM_PORT: 'abc' }) });
    expect(e.code).toBe(2);
    expect(e.stderr).toContain('E_CONFIG: environment variable CHATMEM_PORT (server.port) must be an integer 0..65535, got "abc"');
  });
});

describe('the published JSON schema', () => {
  it('docs/chatmem.config.schema.json equals the schema generated from src/config.ts (run `npm run config-schema`)', async () => {
    const committed = await fsp.readFile(path.join(ROOT, 'docs', 'chatmem.config.schema.json'), 'utf8');
    expect(committed).toBe(JSON.stringify(configJsonSchema(), null, 2) + '\n');
  });

  it('forbids unknown keys at every level and allows $schema', () => {
    const schema = configJsonSchema() as { additionalProperties: boolean; properties: Record<string, { additionalProperties?: boolean; properties?: Record<string, unknown> }> };
    expect(schema.additionalProperties).toBe(false);
    expect(schema.properties.$schema).toBeDefined();
    for (const key of ['hooks', 'backup', 'server', 'retention']) expect(schema.properties[key]?.additionalProperties, key).toBe(false);
  });
});
