import * as path from 'node:path';
import { resolveConfig, type ResolvedConfig } from '../../src/config.js';
import { openContext, type Context } from '../../src/context.js';
import { buildApp } from '../../src/server/app.js';
import type { Metrics } from '../../src/server/metrics.js';
import { fileStoreUrl, type FileStoreKind } from '../helpers/stores.js';
import { tempDir } from '../helpers/tmp.js';

export const ADMIN_TOKEN = 'admin-token-for-tests-0123456789';
export const API_TOKEN = 'api-token-for-tests-0123456789ab';
export const KINDS: readonly FileStoreKind[] = ['sqlite', 'json'];
export type Kind = FileStoreKind;

export interface TestServer {
  url: string;
  ctx: Context;
  config: ResolvedConfig;
  dir: string;
  close(): Promise<void>;
}

/** A config on a fresh temp dir; the environment is empty so the developer's CHATMEM_* never leak in. */
export async function tempConfig(kind: Kind, env: NodeJS.ProcessEnv = {}): Promise<{ config: ResolvedConfig; dir: string; cleanup: () => Promise<void> }> {
  const { dir, cleanup } = await tempDir('chatmem-server-');
  const config = await resolveConfig({ cwd: dir, store: fileStoreUrl(kind, path.join(dir, 'data', 'storage')), env });
  return { config, dir, cleanup };
}

/** A real app on 127.0.0.1 and a free port, over a real store in a temp dir. */
export async function startApp(
  kind: Kind,
  options: { apiToken?: string | null; bodyLimit?: number; env?: NodeJS.ProcessEnv; metrics?: Metrics } = {},
): Promise<TestServer> {
  const { config, dir, cleanup } = await tempConfig(kind, options.env);
  const ctx = await openContext(config, { role: 'daemon' });
  const app = await buildApp({ ctx, adminToken: ADMIN_TOKEN, apiToken: options.apiToken ?? null, bodyLimit: options.bodyLimit, logger: false, metrics: options.metrics });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    url: `http://127.0.0.1:${port}`,
    ctx,
    config,
    dir,
    close: async () => {
      await app.close();
      await ctx.close();
      await cleanup();
    },
  };
}

export interface Res<T = unknown> {
  status: number;
  body: T;
  headers: Headers;
  text: string;
}

/** One HTTP request; `json` is sent as a JSON body, `raw` as-is. */
export async function http<T = unknown>(
  url: string,
  method: string,
  p: string,
  o: { token?: string; json?: unknown; raw?: string; headers?: Record<string, string> } = {},
): Promise<Res<T>> {
  const headers: Record<string, string> = { ...o.headers };
  if (o.token) headers.authorization = `Bearer ${o.token}`;
  let body: string | undefined;
  if (o.json !== undefined) {
    headers['content-type'] ??= 'application/json';
    body = JSON.stringify(o.json);
  } else if (o.raw !== undefined) {
    headers['content-type'] ??= 'application/json';
    body = o.raw;
  }
  const res = await fetch(url + p, { method, headers, body, signal: AbortSignal.timeout(30_000) });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // not JSON: keep the text
  }
  return { status: res.status, body: parsed as T, headers: res.headers, text };
}

export interface ErrorBody {
  error: { code: string; message: string };
}
