/**
 * The built `chatmem` binary in a real terminal (a pseudo-terminal from util-linux `script`, or tmux),
 * answering its prompts as an operator would.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { execFileSync, spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { FIXTURES, tempDir } from '../helpers/tmp.js';
import { BIN, cleanEnv, ensureBuilt } from './helpers.js';

const JOKO = '628161973069';
const STEP_MS = 15_000;

function has(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
}

// CHATMEM_TEST_TERMINAL=tmux exercises the fallback where both exist.
const forced = process.env.CHATMEM_TEST_TERMINAL;
const driver = forced === 'script' || forced === 'tmux' ? (has(forced) ? forced : null) : has('script') ? 'script' : has('tmux') ? 'tmux' : null;
if (driver === null && process.env.CI === 'true') {
  throw new Error('terminal tests need util-linux `script` or tmux, and CI must run them: install util-linux (bsdutils) or tmux');
}

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** A terminal session running one command; `expect` waits for text, `type` sends a line. */
interface Session {
  expect(pattern: RegExp): Promise<void>;
  type(line: string): Promise<void>;
  /** Ctrl-C, as the terminal sends it. */
  interrupt(): Promise<void>;
  exit(): Promise<{ code: number; screen: string }>;
  close(): Promise<void>;
}

function startScript(command: string, cwd: string, env: NodeJS.ProcessEnv): Session {
  const child: ChildProcessWithoutNullStreams = spawn('script', ['-qfec', command, '/dev/null'], { cwd, env: { ...env, SHELL: '/bin/sh' } });
  let screen = '';
  const waiters: (() => void)[] = [];
  const onData = (chunk: Buffer): void => {
    screen += chunk.toString('utf8');
    waiters.splice(0).forEach((w) => w());
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  const exited = new Promise<number>((resolve) => child.on('close', (code) => resolve(code ?? -1)));
  return {
    async expect(pattern) {
      const deadline = Date.now() + STEP_MS;
      while (!pattern.test(screen)) {
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${pattern} in:\n${screen}`);
        await new Promise<void>((resolve) => {
          waiters.push(resolve);
          setTimeout(resolve, 200);
        });
      }
    },
    async type(line) {
      child.stdin.write(line + '\n');
    },
    async interrupt() {
      child.stdin.write('\x03');
    },
    async exit() {
      const code = await Promise.race([exited, new Promise<number>((_, reject) => setTimeout(() => reject(new Error(`no exit; screen:\n${screen}`)), STEP_MS))]);
      return { code, screen };
    },
    async close() {
      if (child.exitCode === null) child.kill('SIGKILL');
    },
  };
}

function startTmux(command: string, cwd: string, env: NodeJS.ProcessEnv): Session {
  const name = `chatmem-${Math.random().toString(36).slice(2, 8)}`;
  const marker = '__CHATMEM_EXIT__';
  // A private server, its socket in the test's temp dir: started with this environment, apart from any
  // tmux the developer runs, and gone with the temp dir.
  const socket = path.join(cwd, `${name}.sock`);
  const tmux = (...args: string[]): string => execFileSync('tmux', ['-S', socket, ...args], { cwd, env: { ...env, SHELL: '/bin/sh' }, encoding: 'utf8' });
  // tmux 3.3 can mark a pane dead without its exit status, so the shell prints it. `trap : INT` keeps
  // that shell alive through Ctrl-C; a trap (unlike an ignore) is reset for chatmem itself on exec.
  tmux('new-session', '-d', '-s', name, '-x', '200', '-y', '50', `trap : INT; ${command}; echo ${marker}$?; sleep 60`);
  // tmux pads the pane with blank lines and drops trailing spaces: compare the text up to the cursor.
  const capture = (): string => tmux('capture-pane', '-p', '-J', '-S', '-200', '-t', name).replace(/\s+$/, '');
  const waitFor = async (pattern: RegExp): Promise<string> => {
    const deadline = Date.now() + STEP_MS;
    for (;;) {
      const screen = capture();
      if (pattern.test(screen)) return screen;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${pattern} in:\n${screen}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  return {
    async expect(pattern) {
      await waitFor(pattern);
    },
    async type(line) {
      tmux('send-keys', '-t', name, '-l', line);
      tmux('send-keys', '-t', name, 'Enter');
    },
    async interrupt() {
      tmux('send-keys', '-t', name, 'C-c');
    },
    async exit() {
      const screen = await waitFor(new RegExp(`${marker}\\d+`));
      return { code: Number(new RegExp(`${marker}(\\d+)`).exec(screen)?.[1]), screen: screen.replace(new RegExp(`${marker}\\d+[\\s\\S]*$`), '') };
    },
    async close() {
      spawnSync('tmux', ['-S', socket, 'kill-server']);
    },
  };
}

describe.skipIf(driver === null)(`the binary in a real terminal (${driver ?? 'none'})`, () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let memory: string;
  let env: NodeJS.ProcessEnv;
  const sessions: Session[] = [];

  beforeAll(async () => {
    await ensureBuilt();
  }, 120_000);

  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir('chatmem-tty-'));
    await fsp.mkdir(path.join(dir, 'data', 'storage'), { recursive: true });
    memory = path.join(dir, 'data', 'storage', 'memory.json');
    await fsp.copyFile(path.join(FIXTURES, 'memory.json'), memory);
    env = cleanEnv({ CHATMEM_STORE: 'json:data/storage/memory.json', TERM: 'xterm' });
  });

  afterEach(async () => {
    await Promise.all(sessions.splice(0).map((s) => s.close()));
    await cleanup();
  });

  afterAll(async () => {
    await Promise.all(sessions.map((s) => s.close()));
  });

  function terminal(args: string): Session {
    const command = `${shellQuote(process.execPath)} ${shellQuote(BIN)} ${args}`;
    // exec under script: otherwise its wrapping shell also gets Ctrl-C and reports 130 whatever chatmem returned.
    const s = driver === 'tmux' ? startTmux(command, dir, env) : startScript(`exec ${command}`, dir, env);
    sessions.push(s);
    return s;
  }

  /** The binary without a terminal, for checks after a session. */
  function cli(...args: string[]): { code: number; stdout: string; stderr: string } {
    const r = spawnSync(process.execPath, [BIN, ...args], { cwd: dir, env, encoding: 'utf8', timeout: STEP_MS });
    return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
  }

  async function backups(): Promise<string[]> {
    try {
      return (await fsp.readdir(path.join(dir, 'data', 'storage', 'backups'))).filter((n) => !n.endsWith('.meta.json'));
    } catch {
      return [];
    }
  }

  it('n at the y/N question cancels and changes nothing', async () => {
    const before = await fsp.readFile(memory);
    const t = terminal(`delete ${JOKO}`);
    await t.expect(/Joko Santoso[\s\S]*Delete user 628161973069\? \[y\/N\]\s*$/);
    await t.type('n');
    const { code, screen } = await t.exit();
    expect(code).toBe(2);
    expect(screen).toContain('cancelled');
    expect((await fsp.readFile(memory)).equals(before)).toBe(true);
    expect(await backups()).toEqual([]);
  });

  it('yes in lowercase does not clear; YES clears and leaves a verified full backup', async () => {
    const before = await fsp.readFile(memory);
    const lower = terminal('clear');
    await lower.expect(/This will delete all 200 users[\s\S]*Type YES to continue:\s*$/);
    await lower.type('yes');
    expect((await lower.exit()).code).toBe(2);
    expect((await fsp.readFile(memory)).equals(before)).toBe(true);
    expect(await backups()).toEqual([]);

    const upper = terminal('clear');
    await upper.expect(/Type YES to continue:\s*$/);
    await upper.type('YES');
    const { code, screen } = await upper.exit();
    expect(code, screen).toBe(0);
    expect(screen).toContain('Cleared 200 users');
    expect(JSON.parse(await fsp.readFile(memory, 'utf8'))).toEqual({});
    const [file] = await backups();
    expect(file).toMatch(/^memory_backup_\d{8}_\d{6}\.json$/);
    const verify = cli('verify', (file ?? '').replace(/\.json$/, ''), '--json');
    expect(verify.code, verify.stderr).toBe(0);
    expect(JSON.parse(verify.stdout)).toMatchObject({ ok: true, results: [{ ok: true, legacy: false, users: 200 }] });
    // The full backup is the seed's memory.json again, user for user.
    const original = JSON.parse(before.toString('utf8')) as Record<string, unknown>;
    expect(JSON.parse(await fsp.readFile(path.join(dir, 'data', 'storage', 'backups', file ?? ''), 'utf8'))).toEqual(original);
  });

  it('the menu deletes a picked user, and the seed\'s Python restore snippet brings the user back', async () => {
    const original = (JSON.parse(await fsp.readFile(memory, 'utf8')) as Record<string, unknown>)[JOKO];
    const t = terminal('');
    await t.expect(/1\) Delete a user[\s\S]*2\) Clear all memory[\s\S]*3\) Cancel[\s\S]*Choose \[1-3\]:\s*$/);
    await t.type('1');
    await t.expect(/Which user\? .*:\s*$/);
    await t.type(JOKO);
    await t.expect(/Delete user 628161973069\? \[y\/N\]\s*$/);
    await t.type('y');
    const { code, screen } = await t.exit();
    expect(code, screen).toBe(0);
    expect(screen).toContain('Deleted 1 user');
    const backupFile = /Backup: (\S+\.json)/.exec(screen)?.[1];
    expect(backupFile).toBeDefined();
    expect(cli('show', JOKO).code).toBe(3);

    // The snippet from the seed's memory_backup_documentation.md, run as written (paths and id filled in).
    const snippet = [
      'import json',
      `with open(${JSON.stringify(backupFile)}, 'r') as f:`,
      '    backup = json.load(f)',
      "with open('data/storage/memory.json', 'r') as f:",
      '    current = json.load(f)',
      `current['${JOKO}'] = backup['${JOKO}']`,
      "with open('data/storage/memory.json', 'w') as f:",
      '    json.dump(current, f, indent=2)',
    ].join('\n');
    execFileSync('python3', ['-c', snippet], { cwd: dir, timeout: STEP_MS });

    const show = cli('show', JOKO, '--json');
    expect(show.code, show.stderr).toBe(0);
    expect((JSON.parse(show.stdout) as { user: unknown }).user).toEqual(original);
    const stats = cli('stats', '--json');
    expect(JSON.parse(stats.stdout)).toMatchObject({ users: 200 });
  });

  it('3 in the menu cancels with exit 0', async () => {
    const t = terminal('');
    await t.expect(/Choose \[1-3\]:\s*$/);
    await t.type('3');
    const { code } = await t.exit();
    expect(code).toBe(0);
    expect(await backups()).toEqual([]);
  });

  it('Ctrl-C during a hooked clear still finishes the clear and runs the after-hook', async () => {
    await fsp.writeFile(
      path.join(dir, 'chatmem.config.json'),
      JSON.stringify({ hooks: { beforeWrite: 'echo stopping-bot; sleep 1; echo before >> hooks.log', afterWrite: 'echo after >> hooks.log' } }),
    );
    const t = terminal('clear --yes');
    // The hook's own line, not the note that names the command before it starts.
    await t.expect(/^stopping-bot\r?$/m);
    await t.interrupt();
    const { code, screen } = await t.exit();
    expect(code, screen).toBe(0);
    expect(screen).toContain('finishing the operation');
    expect(screen).toContain('Cleared 200 users');
    expect(await fsp.readFile(path.join(dir, 'hooks.log'), 'utf8')).toBe('before\nafter\n');
    expect(await backups()).toHaveLength(1);
  });

  it('serve runs in the foreground until Ctrl-C', async () => {
    const t = terminal('serve --port 0');
    await t.expect(/serving json:\S+memory\.json at (http:\/\/127\.0\.0\.1:\d+)/);
    const status = cli('status', '--json');
    expect(status.code, status.stderr).toBe(0);
    expect(JSON.parse(status.stdout)).toMatchObject({ running: true, healthy: true });
    await t.interrupt();
    const { code, screen } = await t.exit();
    expect(code, screen).toBe(0);
    expect(cli('status').code).toBe(3);
  });
});
