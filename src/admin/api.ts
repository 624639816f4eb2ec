/**
 * The admin contract over HTTP: one row per admin action, with its method, path and the schemas of its
 * params, query, body and answer. The daemon registers its admin routes from this table
 * (src/server/routes/admin.ts) and calls the local admin; the remote admin (./remote.ts) builds its
 * requests from it; `/openapi.json` documents it; the admin page (src/web/admin.ts) takes its request
 * types from it. Zod only, no Node imports (the page's checker reads this file).
 */
import { z } from 'zod';
import { flag, free, int, listQuery, one, record, route, searchAnswer, searchQuery, storeStats, stringList, userPage } from '../http-api.js';

/** Why a backup was written (src/backup/manifest.ts BACKUP_REASONS; src/admin/local.ts checks both agree). */
export const BACKUP_REASON_VALUES = ['manual', 'delete-user', 'clear-all', 'restore', 'scheduled', 'import', 'reset', 'merge'] as const;

const idParam = z.object({ id: z.string() });
const deleteResult = z
  .object({ deleted: z.number().int(), userIds: z.array(z.string()), backup: z.string(), backupFile: z.string(), auditOp: z.string() })
  .loose()
  .meta({ id: 'DeleteResult' });
const backupInfo = z
  .object({ id: z.string(), file: z.string(), reason: z.string().nullable().optional(), users: z.number().int().nullable().optional(), createdAt: z.string().nullable().optional() })
  .loose()
  .meta({ id: 'BackupInfo' });
const verifyAnswer = z.object({ ok: z.boolean(), results: z.array(z.object({ id: z.string(), ok: z.boolean() }).loose()) });
const confirmMessage = 'clearing every user needs the body {"confirm": "YES"} (exactly, in capitals)';
// Ids are checked by the operations (E_USER_ID), as every other caller's are.
const users = (what: string) => stringList.refine((l) => l.length > 0, `${what} needs at least one user: {"users": ["<user id>", ...]}`).describe('user ids');

/** Every admin action, keyed by the {@link Admin} method it serves (plus the routes only the page and curl use). */
export const ADMIN_API = {
  stats: route({ method: 'GET', path: '/v1/admin/stats', summary: 'store statistics', auth: 'admin', answer: storeStats }),
  listUsers: route({ method: 'GET', path: '/v1/admin/users', summary: 'users in id order', auth: 'admin', query: listQuery, answer: userPage }),
  searchUsers: route({ method: 'GET', path: '/v1/admin/search', summary: 'keyword search', auth: 'admin', query: searchQuery, codes: { 'query.q': 'E_STORE_ARG' }, answer: searchAnswer }),
  getUser: route({ method: 'GET', path: '/v1/admin/users/:id', summary: "a user's record", auth: 'admin', params: idParam, answer: record }),
  whoami: route({
    method: 'GET',
    path: '/v1/admin/whoami',
    summary: "the admin token's name, and the OS user the CLI sent",
    auth: 'admin',
    answer: z.object({ name: z.string(), osUser: z.string().nullable(), remote: z.string().nullable() }),
  }),
  deleteUser: route({
    method: 'DELETE',
    path: '/v1/users/:id',
    summary: 'delete one user: verified backup first',
    auth: 'admin',
    params: idParam,
    query: z.object({ fullBackup: flag.optional() }),
    answer: deleteResult,
    logAction: 'delete-users',
  }),
  deleteUsers: route({
    method: 'POST',
    path: '/v1/admin/delete',
    summary: 'delete users: verified backup first',
    auth: 'admin',
    body: z.object({ users: users('delete'), fullBackup: flag.optional() }),
    answer: deleteResult,
    logAction: 'delete-users',
  }),
  clearAll: route({
    method: 'POST',
    path: '/v1/admin/clear',
    summary: 'delete every user: verified full backup first',
    auth: 'admin',
    body: z.object({ confirm: z.literal('YES', { error: confirmMessage }) }, { error: confirmMessage }),
    codes: { body: 'E_CONFIRM' },
    answer: deleteResult,
    logAction: 'clear-all',
  }),
  forgetUsers: route({
    method: 'POST',
    path: '/v1/admin/forget',
    summary: 'forget users everywhere: store, every backup (rewritten, verified), daemon log; audit ids become keyed hashes. No backup, by design',
    auth: 'admin',
    body: z.object({ users: users('forget') }),
    answer: z.object({
      deleted: z.number().int(),
      hashes: z.record(z.string(), z.string()).describe('user id -> the hash the audit log now names it by'),
      backupsRewritten: z.array(z.string()),
      filesDeleted: z.array(z.string()),
      logsRedacted: z.array(z.string()),
      auditEntriesRedacted: z.number().int(),
      auditOp: z.string(),
    }),
    logAction: 'forget',
  }),
  expireUsers: route({
    method: 'POST',
    path: '/v1/admin/expire',
    summary: "remove users with no update for inactiveAfter (default: the daemon's users.inactiveAfter): guarded delete, backup first, or forget; dryRun lists them",
    auth: 'admin',
    body: z.object({ inactiveAfter: z.string().optional().describe('duration, e.g. 180d'), mode: z.enum(['delete', 'forget']).optional(), dryRun: flag.optional() }),
    bodyOptional: true,
    answer: free,
    logAction: 'expire',
  }),
  mergeUsers: route({
    method: 'POST',
    path: '/v1/admin/merge',
    summary: 'merge two ids of one person: a backup of both first, then INTO takes FROM in (history by time under the cap, INTO wins flags, slots and identity) and FROM is removed, in one transaction',
    auth: 'admin',
    body: z.object({ from: z.string(), into: z.string() }, { error: 'merge: give {"from": "<user id>", "into": "<user id>"}' }),
    answer: z.object({ record, backup: z.string(), backupFile: z.string(), auditOp: z.string() }),
    logAction: 'merge',
  }),
  listBackups: route({ method: 'GET', path: '/v1/admin/backups', summary: 'list backups, newest first', auth: 'admin', answer: z.object({ backups: z.array(backupInfo) }) }),
  createBackup: route({
    method: 'POST',
    path: '/v1/admin/backups',
    summary: 'write a verified full backup',
    auth: 'admin',
    body: z.object({ gzip: flag.optional(), reason: z.enum(BACKUP_REASON_VALUES).optional() }),
    bodyOptional: true,
    status: 201,
    answer: free,
    logAction: 'backup',
  }),
  inspectBackup: route({
    method: 'GET',
    path: '/v1/admin/backups/:id',
    summary: "a backup's manifest, counts and sample, or one user's record in it",
    auth: 'admin',
    params: idParam,
    query: z.object({ user: one.optional(), sample: int(0, 10_000).optional() }),
    answer: free,
  }),
  verifyBackup: route({ method: 'POST', path: '/v1/admin/backups/:id/verify', summary: 'verify one backup', auth: 'admin', params: idParam, answer: verifyAnswer }),
  verifyAll: route({ method: 'POST', path: '/v1/admin/verify', summary: 'verify every backup', auth: 'admin', answer: verifyAnswer }),
  diff: route({
    method: 'GET',
    path: '/v1/admin/diff',
    summary: 'difference between two backups, or a backup and the store',
    auth: 'admin',
    query: z.object({ a: one.min(1, 'diff needs ?a=<backup id or current>[&b=<backup id or current>]'), b: one.optional(), users: stringList.optional() }),
    answer: free,
  }),
  restore: route({
    method: 'POST',
    path: '/v1/admin/restore',
    summary: 'restore all or some users; what it overwrites is backed up first',
    auth: 'admin',
    body: z.object({
      backup: z.string({ error: 'restore: give {"backup": "<backup id>"}' }).min(1, 'restore: give {"backup": "<backup id>"}'),
      users: stringList.optional(),
      mode: z.enum(['replace', 'merge'], { error: 'must be "replace" or "merge"' }).optional(),
      dryRun: flag.optional(),
      wholeStore: flag.optional(),
      allowUnverified: flag.optional().describe('restore a legacy backup (no checksum) anyway'),
    }),
    answer: free,
    logAction: 'restore',
  }),
  prune: route({
    method: 'POST',
    path: '/v1/admin/prune',
    summary: 'apply a retention policy (dryRun to preview); without a policy, the daemon\'s retention',
    auth: 'admin',
    body: z.object({
      policy: z.record(z.string(), z.unknown(), { error: 'must be an object, e.g. {"daily": 7}' }).optional(),
      dryRun: flag.optional(),
      only: stringList.optional(),
    }),
    bodyOptional: true,
    codes: { 'body.policy': 'E_RETENTION_POLICY' },
    answer: free,
    logAction: 'prune',
  }),
  importFile: route({
    method: 'POST',
    path: '/v1/admin/import',
    summary: 'import a seed memory.json or any backup file the daemon can read',
    auth: 'admin',
    body: z.object({
      file: z
        .string()
        // The daemon's working directory is not the caller's: a relative path would name another file.
        .refine((f) => f.startsWith('/'), 'import: give {"file": "<absolute path readable by the daemon>"}; relative paths would resolve against the daemon\'s directory, not yours')
        .describe('absolute path'),
    }),
    answer: free,
    logAction: 'import',
  }),
  readAudit: route({
    method: 'GET',
    path: '/v1/admin/audit',
    summary: 'audit log entries',
    auth: 'admin',
    query: z.object({
      since: one
        .refine((s) => !Number.isNaN(new Date(s).getTime()), { error: (i) => `must be a date, got ${JSON.stringify(i.input)}` })
        .optional()
        .describe('ISO date'),
      user: one.optional(),
      action: one.optional(),
      op: one.optional(),
      limit: int(1, 100_000).optional().describe('default 1000'),
    }),
    answer: z.object({ entries: z.array(free) }),
  }),
};

export type AdminApi = typeof ADMIN_API;
export type AdminAction = keyof AdminApi;

type Part<R, K extends 'params' | 'query' | 'body'> = R extends { [P in K]: infer S extends z.ZodType } ? S : never;
/** What a caller sends to an action (the input side of its schemas). */
export type AdminRequest<A extends AdminAction> = {
  [K in 'params' | 'query' | 'body' as [Part<AdminApi[A], K>] extends [never] ? never : K]: z.input<Part<AdminApi[A], K>>;
};
/** What the server's handler of an action receives (the output side: coerced and checked). */
export type AdminInput<A extends AdminAction> = {
  [K in 'params' | 'query' | 'body' as [Part<AdminApi[A], K>] extends [never] ? never : K]: z.output<Part<AdminApi[A], K>>;
};

/** The body the page sends to `POST /v1/admin/restore`. */
export type RestoreBody = z.input<AdminApi['restore']['body']>;
/** The body of `POST /v1/admin/prune`. */
export type PruneBody = z.input<AdminApi['prune']['body']>;
