import { existsSync, promises as fsp } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { adminTokenFile, findDaemon, pidFile, readDaemonInfo } from '../../src/server/daemon-info.js';
import { isLoopbackHost, serve } from '../../src/server/serve.js';
import { ownerFileFor } from '../../src/store/owner.js';
import { ADMIN_TOKEN, http, tempConfig } from './helpers.js';

const quiet = { logger: false, handleSignals: false } as const;

describe('serve()', () => {
  it('refuses a non-loopback bind without CHATMEM_API_TOKEN, before touching anything', async () => {
    const { config, cleanup } = await tempConfig('sqlite');
    try {
      for (const host of ['0.0.0.0', '::', '192.168.1.10', 'example.com']) {
        await expect(serve(config, { ...quiet, host, port: 0, env: {} })).rejects.toMatchObject({
          code: 'E_CONFIG',
          message: expect.stringMatching(/CHATMEM_API_TOKEN/),
        });
      }
      expect(existsSync(adminTokenFile(config))).toBe(false);
      expect(existsSync(ownerFileFor(config.store.file ?? ''))).toBe(false);
    } finally {
      await cleanup();
    }
  });

  it('knows loopback names', () => {
    for (const h of ['127.0.0.1', '127.1.2.3', 'localhost', '::1', '[::1]']) expect(isLoopbackHost(h), h).toBe(true);
    for (const h of ['0.0.0.0', '::', '10.0.0.1', 'example.com', '128.0.0.1']) expect(isLoopbackHost(h), h).toBe(false);
  });

  it('refuses a bad backup interval', async () => {
    const { config, cleanup } = await tempConfig('sqlite', { CHATMEM_BACKUP_EVERY: 'hourly' });
    try {
      await expect(serve(config, { ...quiet, port: 0, env: {} })).rejects.toMatchObject({ code: 'E_CONFIG' });
    } finally {
      await cleanup();
    }
  });

  it('generates the admin token once, prints it once, publishes its pid file and cleans up on close', async () => {
    const { config, cleanup } = await tempConfig('json');
    try {
      const lines: string[] = [];
      let announced = '';
      const server = await serve(config, { ...quiet, port: 0, env: {}, log: (l) => lines.push(l), onListening: (u) => (announced = u) });
      expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      expect(announced).toBe(server.url);
      const token = (await fsp.readFile(adminTokenFile(config), 'utf8')).trim();
      expect(token.length).toBeGreaterThanOrEqual(32);
      expect((await fsp.stat(adminTokenFile(config))).mode & 0o777).toBe(0o600);
      expect(lines.filter((l) => l.includes(token))).toHaveLength(1);
      expect(lines.join('\n')).toContain(adminTokenFile(config));

      const info = await readDaemonInfo(config);
      expect(info).toMatchObject({ pid: process.pid, api: server.url, store: config.store.display });
      expect(await findDaemon(config)).toEqual({ api: server.url, pid: process.pid });
      expect((await http(server.url, 'GET', '/v1/admin/stats', { token })).status).toBe(200);
      expect((await http(server.url, 'PUT', '/v1/users/x', { json: { name: 'X' } })).status).toBe(200);

      await server.close();
      expect(existsSync(pidFile(config))).toBe(false);
      expect(existsSync(ownerFileFor(config.store.file ?? ''))).toBe(false);
      // The store was flushed: the record is in the seed-format file.
      expect(JSON.parse(await fsp.readFile(config.store.file ?? '', 'utf8'))).toMatchObject({ x: { name: 'X' } });

      const again: string[] = [];
      const second = await serve(config, { ...quiet, port: 0, env: {}, log: (l) => again.push(l) });
      expect(again.join('\n')).not.toContain(token);
      await second.close();
    } finally {
      await cleanup();
    }
  });

  it('says so when the port is taken, and releases the store', async () => {
    const { config, cleanup } = await tempConfig('sqlite');
    const blocker = createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
    try {
      const port = (blocker.address() as AddressInfo).port;
      await expect(serve(config, { ...quiet, port, env: { CHATMEM_ADMIN_TOKEN: ADMIN_TOKEN }, log: () => undefined })).rejects.toMatchObject({
        code: 'E_PORT_IN_USE',
        message: expect.stringContaining(String(port)),
      });
      expect(existsSync(ownerFileFor(config.store.file ?? ''))).toBe(false);
      expect(existsSync(pidFile(config))).toBe(false);
    } finally {
      await new Promise((r) => blocker.close(r));
      await cleanup();
    }
  });

  it('uses CHATMEM_ADMIN_TOKEN and never writes a token file then', async () => {
    const { config, cleanup } = await tempConfig('sqlite');
    try {
      const server = await serve(config, { ...quiet, port: 0, env: { CHATMEM_ADMIN_TOKEN: ADMIN_TOKEN }, log: () => undefined });
      expect((await http(server.url, 'GET', '/v1/admin/backups', { token: ADMIN_TOKEN })).status).toBe(200);
      expect(existsSync(adminTokenFile(config))).toBe(false);
      await server.close();
    } finally {
      await cleanup();
    }
  });

  it('reports operations a crash interrupted', async () => {
    const { config, cleanup } = await tempConfig('sqlite');
    try {
      const { openContext } = await import('../../src/context.js');
      const ctx = await openContext(config);
      await ctx.audit.begin('clear-all', { kind: 'os', name: 'test' });
      await ctx.close();
      const lines: string[] = [];
      const server = await serve(config, { ...quiet, port: 0, env: { CHATMEM_ADMIN_TOKEN: ADMIN_TOKEN }, log: (l) => lines.push(l) });
      await server.close();
      expect(lines.join('\n')).toMatch(/interrupted operation clear-all/);
    } finally {
      await cleanup();
    }
  });
});
