import { spawn } from 'node:child_process';
import type { ResolvedConfig } from '../config.js';
import { CLIError } from './errors.js';
import type { Output } from './output.js';

async function runHook(config: ResolvedConfig, out: Output, which: 'beforeWrite' | 'afterWrite', command: string, action: string): Promise<void> {
  const code = await new Promise<number | string>((resolve, reject) => {
    const child = spawn('sh', ['-c', command], {
      cwd: config.cwd,
      env: { ...out.io.env, CHATMEM_ACTION: action },
      // No stdin: a hook that asks a question would otherwise hang a non-interactive run.
      stdio: ['ignore', 'pipe', 'pipe'],
      // Its own process group: the terminal's Ctrl-C must not kill a hook half-way (see withHooks).
      detached: true,
    });
    // Hook output is commentary; stdout stays reserved for the command's result.
    child.stdout.on('data', (chunk: Buffer) => out.io.stderr.write(chunk));
    child.stderr.on('data', (chunk: Buffer) => out.io.stderr.write(chunk));
    child.on('error', reject);
    child.on('close', (status, signal) => resolve(status ?? signal ?? 'unknown'));
  }).catch((err: unknown) => {
    throw new CLIError('E_HOOK_FAILED', `hooks.${which} \`${command}\` could not start: ${(err as Error).message}`, { cause: err });
  });
  if (code !== 0) {
    throw new CLIError('E_HOOK_FAILED', `hooks.${which} \`${command}\` failed (${typeof code === 'number' ? `exit code ${code}` : code})`, {
      details: { hook: which, command, status: code },
    });
  }
}

async function between<T>(
  config: ResolvedConfig,
  out: Output,
  action: string,
  run: () => Promise<T>,
  onAfterFailure: (err: CLIError) => void,
): Promise<T> {
  const { beforeWrite, afterWrite } = config.hooks;
  const after = async (): Promise<void> => {
    if (!afterWrite) return;
    out.note(`running hooks.afterWrite: ${afterWrite}`);
    await runHook(config, out, 'afterWrite', afterWrite, action);
  };
  let result: T;
  try {
    if (beforeWrite) {
      out.note(`running hooks.beforeWrite: ${beforeWrite}`);
      await runHook(config, out, 'beforeWrite', beforeWrite, action).catch((err: unknown) => {
        throw err instanceof CLIError ? new CLIError(err.code, `${err.message}; nothing was changed`, { details: err.details }) : err;
      });
    }
    result = await run();
  } catch (err) {
    // The command's own error is the one to report; the hook's is secondary.
    await after().catch((hookErr: unknown) => out.warn((hookErr as Error).message));
    throw err;
  }
  try {
    await after();
  } catch (err) {
    if (err instanceof CLIError) onAfterFailure(err);
    else throw err;
  }
  return result;
}

/**
 * Runs `run` between the configured hooks, as the seed stopped its bot around every edit of
 * memory.json. A failing before-hook aborts with nothing changed. The after-hook runs whatever
 * happened before it (the seed restarted its server in `finally`), so a half-stopped bot is brought
 * back too. Its own failure after a successful `run` goes to `onAfterFailure`: the change has
 * happened, and its result must still be shown.
 */
export async function withHooks<T>(
  config: ResolvedConfig,
  out: Output,
  action: string,
  run: () => Promise<T>,
  onAfterFailure: (err: CLIError) => void,
): Promise<T> {
  if (!config.hooks.beforeWrite && !config.hooks.afterWrite) return run();
  // Python ran the seed's `finally` on Ctrl-C too: a first interrupt lets the (atomic) operation and
  // the after-hook finish; a second one ends the process at once.
  const onSignal = (signal: NodeJS.Signals): void => {
    out.say(`chatmem: ${signal}: finishing the operation and hooks.afterWrite; press Ctrl-C again to stop at once`);
    release();
  };
  const release = (): void => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    return await between(config, out, action, run, onAfterFailure);
  } finally {
    release();
  }
}
