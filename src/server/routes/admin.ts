import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Context } from '../../context.js';
import { OpsError } from '../../errors.js';
import type { RetentionPolicy } from '../../backup/retention.js';
import type { Actor } from '../../ops/audit.js';
import type { VerifyResult } from '../../ops/operations.js';
import { ADMIN_API, type AdminAction, type AdminApi } from '../../admin/api.js';
import type { ApiRoute } from '../../http-api.js';
import { LocalAdmin } from '../../admin/local.js';
import type { Metrics } from '../metrics.js';
import { actorOf } from '../plugins/auth.js';
import { classify } from '../plugins/errors.js';
import { addRoute, type RouteInput } from '../route.js';

export type AdminRoutesOptions = { ctx: Context; metrics: Metrics };

type Handler<A extends AdminAction> = (admin: LocalAdmin, input: RouteInput<AdminApi[A]>, req: FastifyRequest) => Promise<unknown>;

const verified = (results: VerifyResult[]) => ({ ok: results.every((r) => r.ok), results });
const unknownUser = (id: string) => new OpsError('E_UNKNOWN_USER', `unknown user: ${JSON.stringify(id)}`);

/**
 * The admin plane: every row of src/admin/api.ts, served by a {@link LocalAdmin} acting as the request's
 * caller. A row without a handler here (or a handler without a row) does not compile.
 */
export async function adminRoutes(app: FastifyInstance, { ctx, metrics }: AdminRoutesOptions): Promise<void> {
  const handlers: { [A in AdminAction]: Handler<A> } = {
    stats: (admin) => admin.stats(),
    listUsers: (admin, { query }) => admin.listUsers({ cursor: query.cursor ?? null, limit: query.limit }),
    searchUsers: async (admin, { query }) => ({ items: await admin.searchUsers(query.q, { limit: query.limit }) }),
    getUser: async (admin, { params }) => {
      const record = await admin.getUser(params.id);
      if (!record) throw unknownUser(params.id);
      return record;
    },
    whoami: (admin) => admin.whoami(),
    deleteUser: (admin, { params, query }) => admin.deleteUsers([params.id], { fullBackup: query.fullBackup }),
    deleteUsers: (admin, { body }) => admin.deleteUsers(body.users, { fullBackup: body.fullBackup }),
    clearAll: (admin) => admin.clearAll(),
    forgetUsers: (admin, { body }) => admin.forgetUsers(body.users),
    expireUsers: (admin, { body }) => {
      const inactiveAfter = body.inactiveAfter ?? ctx.config.users.inactiveAfter;
      if (inactiveAfter === null) throw new OpsError('E_OPS_ARG', 'expire: give {"inactiveAfter": "180d"} or set users.inactiveAfter in the config');
      return admin.expireUsers({ inactiveAfter, mode: body.mode ?? ctx.config.users.expireMode }, { dryRun: body.dryRun });
    },
    mergeUsers: (admin, { body }) => admin.mergeUsers(body.from, body.into),
    listBackups: async (admin) => ({ backups: await admin.listBackups() }),
    createBackup: async (admin, { body }) => {
      try {
        const result = await admin.createBackup({ gzip: body.gzip, reason: body.reason ?? 'manual' });
        return { ...result, backup: result.id };
      } catch (err) {
        metrics.backupFailures++;
        throw err;
      }
    },
    inspectBackup: (admin, { params, query }) => admin.inspectBackup(params.id, { user: query.user, sample: query.sample }),
    verifyBackup: async (admin, { params }) => verified(await admin.verifyBackups(params.id)),
    verifyAll: async (admin) => verified(await admin.verifyBackups()),
    diff: (admin, { query }) => admin.diff(query.a, query.b ?? 'current', { users: query.users }),
    restore: (admin, { body }) => {
      const { backup, ...options } = body;
      return admin.restore(backup, options);
    },
    prune: (admin, { body }) => admin.prune((body.policy ?? ctx.config.retention) as RetentionPolicy, { dryRun: body.dryRun, only: body.only }),
    importFile: (admin, { body }) => admin.importFile(body.file),
    readAudit: async (admin, { query }) => ({
      entries: await admin.readAudit({
        since: query.since === undefined ? undefined : new Date(query.since),
        user: query.user,
        action: query.action,
        op: query.op,
        limit: query.limit ?? 1000,
      }),
    }),
  };

  for (const action of Object.keys(ADMIN_API) as AdminAction[]) {
    const row: ApiRoute = ADMIN_API[action];
    const handle = handlers[action] as Handler<AdminAction>;
    addRoute(app, row, app.auth.admin, async (input, req) => {
      const actor = actorOf(req);
      const admin = new LocalAdmin(ctx.ops, { actor });
      if (!row.logAction) return handle(admin, input as RouteInput<AdminApi[AdminAction]>, req);
      return logged(req, row.logAction, actor, () => handle(admin, input as RouteInput<AdminApi[AdminAction]>, req));
    });
  }

  /** Runs an admin operation and logs one line for it (tokens never reach the log: only the actor's name). */
  async function logged<T>(req: FastifyRequest, action: string, actor: Actor, run: () => Promise<T>): Promise<T> {
    const t0 = performance.now();
    try {
      const result = await run();
      const r = (result ?? {}) as Record<string, unknown>;
      if (typeof r.backup === 'string') metrics.noteBackup(new Date());
      req.log.info(
        {
          action,
          actor,
          outcome: 'done',
          ms: Math.round(performance.now() - t0),
          ...(typeof r.backup === 'string' ? { backup: r.backup } : {}),
          ...(typeof r.auditOp === 'string' ? { auditOp: r.auditOp } : {}),
        },
        'admin operation',
      );
      return result;
    } catch (err) {
      const c = classify(err);
      req.log.warn({ action, actor, outcome: 'failed', code: c.code, ms: Math.round(performance.now() - t0) }, 'admin operation');
      throw err;
    }
  }
}
