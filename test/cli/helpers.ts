import { spawnSync } from 'node:child_process';
import { existsSync, promises as fsp, statSync } from 'node:fs';
import * as path from 'node:path';
import { PassThrough } from 'node:stream';
import { runMain } from '../../src/cli/main.js';
import { DIST, FIXTURES, ROOT, tempDir } from '../helpers/tmp.js';

export { FIXTURES };

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** Lines typed by the operator (each gets a newline). */
  input?: string[];
  isTTY?: boolean;
  env?: NodeJS.ProcessEnv;
}

/** A temp project directory with its own store URL, and runMain bound to it. */
export interface Sandbox {
  dir: string;
  storeUrl: string;
  storeFile: string;
  backupDir: string;
  auditLog: string;
  run(args: string[], options?: RunOptions): Promise<CliResult>;
  /** Runs with --json and parses stdout. */
  json<T = Record<string, unknown>>(args: string[], options?: RunOptions): Promise<{ code: number; doc: T; stderr: string }>;
  backupFiles(): Promise<string[]>;
  cleanup(): Promise<void>;
}

function collect(stream: PassThrough): () => string {
  const chunks: Buffer[] = [];
  stream.on('data', (c: Buffer) => chunks.push(c));
  return () => Buffer.concat(chunks).toString('utf8');
}

/** Environment without the caller's CHATMEM_* settings, so a developer's shell cannot steer the tests. */
export function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('CHATMEM_') && k !== 'NO_COLOR') env[k] = v;
  return { ...env, ...extra };
}

export async function runCli(args: string[], options: RunOptions & { cwd: string }): Promise<CliResult> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const stdin = new PassThrough();
  const out = collect(stdout);
  const err = collect(stderr);
  if (options.input) stdin.write(options.input.map((l) => l + '\n').join(''));
  stdin.end();
  const code = await runMain(args, { stdout, stderr, stdin, isTTY: options.isTTY ?? false, env: options.env ?? cleanEnv(), cwd: options.cwd });
  return { code, stdout: out(), stderr: err() };
}

/** A sandbox whose store (`kind`) holds the seed fixture's 200 users unless `empty`. */
export async function sandbox(kind: 'sqlite' | 'json' = 'sqlite', options: { empty?: boolean } = {}): Promise<Sandbox> {
  const { dir, cleanup } = await tempDir('chatmem-cli-');
  const storeDir = path.join(dir, 'data', 'storage');
  await fsp.mkdir(storeDir, { recursive: true });
  const storeFile = path.join(storeDir, kind === 'json' ? 'memory.json' : 'memory.db');
  if (kind === 'json' && !options.empty) await fsp.copyFile(path.join(FIXTURES, 'memory.json'), storeFile);
  const storeUrl = `${kind}:${storeFile}`;
  const sb: Sandbox = {
    dir,
    storeUrl,
    storeFile,
    backupDir: path.join(storeDir, 'backups'),
    auditLog: path.join(storeDir, 'audit.log'),
    run: (args, o = {}) => runCli(args, { ...o, cwd: dir, env: o.env ?? cleanEnv({ CHATMEM_STORE: storeUrl }) }),
    async json<T>(args: string[], o: RunOptions = {}) {
      const r = await sb.run([...args, '--json'], o);
      let doc: T;
      try {
        doc = JSON.parse(r.stdout) as T;
      } catch {
        throw new Error(`stdout is not one JSON document (exit ${r.code}):\n${r.stdout}\nstderr:\n${r.stderr}`);
      }
      return { code: r.code, doc, stderr: r.stderr };
    },
    async backupFiles() {
      try {
        return (await fsp.readdir(sb.backupDir)).filter((n) => !n.endsWith('.meta.json')).sort();
      } catch {
        return [];
      }
    },
    cleanup,
  };
  if (kind === 'sqlite' && !options.empty) {
    const r = await sb.run(['import', path.join(FIXTURES, 'memory.json')]);
    if (r.code !== 0) throw new Error(`fixture import failed: ${r.stderr}`);
  }
  return sb;
}

/** Python's json.load of a file: the seed's own way of reading memory and backups. */
export const PY_LOAD_KEYS = 'import json,sys; d=json.load(open(sys.argv[1])); print(json.dumps(sorted(d.keys())))';

export const BIN = path.join(DIST, 'cli', 'bin.js');

/** Rebuilds dist/ when it is older than the CLI sources, so the binary under test is this code. */
export async function ensureBuilt(): Promise<void> {
  const newest = async (dir: string): Promise<number> => {
    let t = 0;
    for (const e of await fsp.readdir(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      t = Math.max(t, e.isDirectory() ? await newest(p) : statSync(p).mtimeMs);
    }
    return t;
  };
  if (existsSync(BIN) && statSync(BIN).mtimeMs >= (await newest(path.join(ROOT, 'src', 'cli')))) return;
  // Type errors elsewhere in the tree still emit JavaScript; only a missing binary is fatal.
  spawnSync(process.execPath, [path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', path.join(ROOT, 'tsconfig.build.json')], { cwd: ROOT, stdio: 'ignore' });
  if (!existsSync(BIN)) throw new Error(`${BIN} was not built`);
}
