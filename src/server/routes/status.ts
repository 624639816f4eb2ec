import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { Context } from '../../context.js';
import { free, route } from '../../http-api.js';
import { VERSION } from '../../version.js';
import { METRICS_CONTENT_TYPE, type Metrics } from '../metrics.js';
import { addRoute } from '../route.js';

export const STATUS_API = {
  healthz: route({ method: 'GET', path: '/healthz', summary: 'liveness, store kind, version', auth: 'none', answer: free }),
  metrics: route({ method: 'GET', path: '/metrics', summary: 'Prometheus metrics', auth: 'data', answer: z.string(), produces: 'text/plain' }),
};

export type StatusRoutesOptions = { ctx: Context; metrics: Metrics };

/** `/healthz` for `chatmem start`/`stop` and load balancers, `/metrics` for Prometheus. */
export async function statusRoutes(app: FastifyInstance, { ctx, metrics }: StatusRoutesOptions): Promise<void> {
  const started = Date.now();
  addRoute(app, STATUS_API.healthz, undefined, async () => ({
    ok: true,
    store: ctx.config.store.display,
    kind: ctx.store.kind,
    historyCap: ctx.store.historyCap,
    version: VERSION,
    pid: process.pid,
    uptime: Math.round((Date.now() - started) / 1000),
  }));

  // Scraping a big store costs a scan (JSON) or an aggregate query (SQL): sample at most every 10 s.
  let storeSample: { at: number; value: Promise<{ users: number; bytes: number } | null> } | null = null;
  let backupSample: { at: number; value: Promise<string | null> } | null = null;
  addRoute(app, STATUS_API.metrics, app.auth.data, async (_input, req, reply) => {
    const now = Date.now();
    if (!storeSample || now - storeSample.at > 10_000) {
      storeSample = {
        at: now,
        value: ctx.store.stats().then(
          (s) => ({ users: s.users, bytes: s.bytes }),
          (err: unknown) => {
            req.log.error({ err: { message: (err as Error).message } }, 'metrics: cannot read store stats');
            return null;
          },
        ),
      };
    }
    if (!backupSample || now - backupSample.at > 30_000) {
      // Read from the names, opening only the newest backups' manifests: not every backup on each scrape.
      backupSample = { at: now, value: ctx.ops.newestBackupAt().then((d) => d?.toISOString() ?? null, () => null) };
    }
    const listed = await backupSample.value;
    if (listed) metrics.noteBackup(new Date(listed));
    const offsite = ctx.offsite ? { lagSeconds: ctx.offsite.lagSeconds(), failures: ctx.offsite.failures, pending: ctx.offsite.pending().length, uploaded: ctx.offsite.uploaded } : undefined;
    return reply.type(METRICS_CONTENT_TYPE).send(metrics.render({ store: await storeSample.value, lastBackupAt: metrics.lastBackupAt, offsite }));
  });
}
