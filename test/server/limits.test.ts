import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { resolveConfig } from '../../src/config.js';
import { DEFAULT_HTTP_LIMITS, resolveHttpLimits } from '../../src/server/limits.js';
import { tempDir } from '../helpers/tmp.js';

describe('server settings', () => {
  it('default to port 8737 (not 8081, the old bot port that stop_all.sh kills), documented timeouts and a 10 MiB log', async () => {
    const { dir, cleanup } = await tempDir('chatmem-limits-');
    try {
      const config = await resolveConfig({ cwd: dir, env: {} });
      expect(config.server.port).toBe(8737);
      expect(config.server.limits).toEqual({ headersTimeout: 10_000, requestTimeout: 30_000, keepAliveTimeout: 5_000, connectionTimeout: 10_000, maxUrlLength: 8192, maxHeaderSize: 16384 });
      expect(config.server.log).toEqual({ maxBytes: 10 * 1024 * 1024, keep: 3 });
      const readme = await fsp.readFile(path.join(import.meta.dirname, '../../README.md'), 'utf8');
      expect(readme).not.toMatch(/127\.0\.0\.1:8081/);
      for (const [k, v] of Object.entries(DEFAULT_HTTP_LIMITS)) expect(readme, k).toContain(`"${k}": ${v}`);
    } finally {
      await cleanup();
    }
  });

  it('reads them from the config file and refuses bad values', async () => {
    const { dir, cleanup } = await tempDir('chatmem-limits-');
    try {
      const file = path.join(dir, 'chatmem.config.json');
      await fsp.writeFile(file, JSON.stringify({ server: { headersTimeout: 2000, keepAliveTimeout: 100, logMaxBytes: 65536, logKeep: 5 } }));
      const config = await resolveConfig({ cwd: dir, env: {} });
      expect(config.server.limits).toMatchObject({ headersTimeout: 2000, keepAliveTimeout: 100, requestTimeout: 30_000 });
      expect(config.server.log).toEqual({ maxBytes: 65536, keep: 5 });
      for (const bad of [{ headersTimeout: 0 }, { requestTimeout: 'soon' }, { headersTimeout: 40_000 }, { maxUrlLength: 1.5 }, { logMaxBytes: 10 }, { logKeep: 0 }]) {
        await fsp.writeFile(file, JSON.stringify({ server: bad }));
        await expect(resolveConfig({ cwd: dir, env: {} }), JSON.stringify(bad)).rejects.toMatchObject({ code: 'E_CONFIG' });
      }
    } finally {
      await cleanup();
    }
    expect(() => resolveHttpLimits({ headersTimeout: 5000, requestTimeout: 4000 })).toThrow(/headersTimeout/);
  });
});
