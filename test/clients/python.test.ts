import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_TOKEN, startApp, type TestServer } from '../server/helpers.js';
import { ROOT } from '../helpers/tmp.js';

/** python3 on PATH, or null. Under CI its absence is a failure, not a skip: the drop-in is a product. */
async function python(): Promise<string | null> {
  return new Promise((resolve) => {
    const p = spawn('python3', ['--version']);
    p.on('error', () => resolve(null));
    p.on('exit', (code) => resolve(code === 0 ? 'python3' : null));
  });
}

const py = await python();
if (!py && process.env.CI) throw new Error('python3 is required under CI for the Python drop-in tests');
if (!py) console.warn('python3 not found: skipping the Python drop-in tests');

describe.skipIf(!py)('Python drop-in (clients/python) against a real daemon', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startApp('sqlite');
  });
  afterAll(async () => {
    await server.close();
  });

  it('passes its unittest suite: every method, errors, timeouts, a long conversation', async () => {
    const dir = path.join(ROOT, 'clients', 'python');
    const { code, out } = await new Promise<{ code: number | null; out: string }>((resolve) => {
      const p = spawn(py!, ['-m', 'unittest', 'discover', '-s', 'tests', '-t', '.', '-v'], {
        cwd: dir,
        env: {
          PATH: process.env.PATH,
          PYTHONPATH: dir,
          PYTHONDONTWRITEBYTECODE: '1',
          CHATMEM_URL: server.url,
          CHATMEM_ADMIN_TOKEN: ADMIN_TOKEN,
          CHATMEM_TEST_BACKUP_DIR: server.config.backupDir,
        },
      });
      let out = '';
      p.stdout.on('data', (d: Buffer) => (out += d.toString()));
      p.stderr.on('data', (d: Buffer) => (out += d.toString()));
      p.on('exit', (c) => resolve({ code: c, out }));
    });
    if (code !== 0 || process.env.CHATMEM_SHOW_PY) console.error(out);
    // Every test ran: none was skipped for lack of a daemon.
    expect(out).not.toMatch(/skipped/);
    expect(out).toMatch(/^OK$/m);
    expect(code).toBe(0);
  }, 120_000);
});
