import { z } from 'zod';
import { BACKUP_REASONS } from '../backup/manifest.js';
import { VERSION } from '../version.js';

/**
 * The HTTP API as data: one row per route with its auth, parameters, body and answer. `/openapi.json` is
 * generated from it, and test/server/openapi.test.ts checks it against the routes the app really registers
 * and against every method of the typed clients, so it cannot drift from the code.
 */

const isoUtc = z.string().describe('UTC ISO timestamp, e.g. 2025-11-20T01:02:07Z');
const userId = z.string().min(1).max(256).describe('user id (usually a WhatsApp number); any characters but control characters');
const anyJson = z.unknown().describe('any JSON value');

const historyEntry = z
  .object({ role: z.string().min(1), text: z.string(), ts: isoUtc, id: z.string().optional().describe('stable entry id'), meta: z.record(z.string(), anyJson).optional() })
  .loose()
  .meta({ id: 'HistoryEntry' });
const historyInput = z
  .object({
    role: z.string().min(1),
    text: z.string(),
    ts: isoUtc.optional(),
    id: z.string().min(1).max(256).optional().describe('client id, e.g. the WhatsApp message id: an append of an id the user already has is a no-op'),
    meta: z.record(z.string(), anyJson).optional(),
  })
  .loose()
  .meta({ id: 'HistoryInput' });
const record = z
  .object({
    user_id: userId,
    session_token: z.string().nullable(),
    name: z.string().nullable(),
    gender: z.string().nullable(),
    is_company: z.boolean().nullable(),
    product: z.string().nullable(),
    serial: z.string().nullable(),
    address: z.string().nullable(),
    summary_context: z.array(z.string()),
    history: z.array(historyEntry),
    last_answer: z.string().nullable(),
    flags: z.record(z.string(), anyJson),
    slots: z.record(z.string(), anyJson),
    created_at: isoUtc,
    updated_at: isoUtc,
  })
  .loose()
  .meta({ id: 'Record', description: "one user's memory, as the seed's memory.json stores it; unknown fields are kept" });
const recordInput = record.partial().loose().meta({ id: 'RecordInput' });
const recordPatch = record.omit({ user_id: true, created_at: true }).partial().loose().meta({ id: 'RecordPatch', description: 'top-level merge; flags and slots merge key by key, null removes a key' });
const summary = z.object({ user_id: userId, name: z.string().nullable(), product: z.string().nullable(), created_at: isoUtc, updated_at: isoUtc, messages: z.number().int() }).meta({ id: 'UserSummary' });
const page = z.object({ items: z.array(summary), next: z.string().nullable() }).meta({ id: 'UserPage' });
const stats = z.object({ users: z.number().int(), messages: z.number().int(), bytes: z.number().int(), lastUpdate: isoUtc.nullable() }).meta({ id: 'Stats' });
const errorBody = z
  .object({ error: z.object({ code: z.string().describe('stable error code, see README'), message: z.string() }) })
  .meta({ id: 'Error', description: 'every error answer' });
const keyValue = z.object({ key: z.string(), found: z.boolean(), value: anyJson });
const deleteResult = z.object({ deleted: z.number().int(), userIds: z.array(z.string()), backup: z.string(), backupFile: z.string(), auditOp: z.string() }).loose().meta({ id: 'DeleteResult' });
const backupInfo = z.object({ id: z.string(), file: z.string(), reason: z.string().nullable().optional(), users: z.number().int().nullable().optional(), createdAt: z.string().nullable().optional() }).loose().meta({ id: 'BackupInfo' });
const verifyAnswer = z.object({ ok: z.boolean(), results: z.array(z.object({ id: z.string(), ok: z.boolean() }).loose()) });
const free = z.object({}).loose();

type Auth = 'none' | 'data' | 'admin';
export interface RouteDoc {
  method: 'GET' | 'PUT' | 'PATCH' | 'POST' | 'DELETE';
  /** Fastify's form: `/v1/users/:id`. */
  path: string;
  summary: string;
  auth: Auth;
  query?: z.ZodObject;
  body?: z.ZodType;
  status?: number;
  answer: z.ZodType;
  /** Answered with a content type other than JSON. */
  produces?: string;
}

const boolQ = z.enum(['true', 'false', '1', '0']);
const limitQ = z.string().regex(/^\d+$/).describe('1..1000');
const ensureQ = z.object({ ensure: boolQ.optional().describe('create the user when unknown, as the seed did') });

export const ROUTES: RouteDoc[] = [
  { method: 'GET', path: '/healthz', summary: 'liveness, store kind, version', auth: 'none', answer: free },
  { method: 'GET', path: '/metrics', summary: 'Prometheus metrics', auth: 'data', answer: z.string(), produces: 'text/plain' },
  { method: 'GET', path: '/admin', summary: 'the web admin page', auth: 'none', answer: z.string(), produces: 'text/html' },
  { method: 'GET', path: '/openapi.json', summary: 'this document', auth: 'none', answer: free },
  { method: 'GET', path: '/docs', summary: 'this document as a page', auth: 'none', answer: z.string(), produces: 'text/html' },

  { method: 'GET', path: '/v1/users/:id', summary: "a user's record (404 when unknown, unless ensure)", auth: 'data', query: ensureQ.extend({ fields: z.string().optional().describe('comma-separated top-level fields to return') }), answer: record },
  { method: 'PUT', path: '/v1/users/:id', summary: 'replace the record (creates the user)', auth: 'data', body: recordInput, answer: record },
  { method: 'PATCH', path: '/v1/users/:id', summary: 'merge into the record (creates the user)', auth: 'data', body: recordPatch, answer: record },
  { method: 'POST', path: '/v1/users/:id/history', summary: 'append one turn, or an array of turns in one write; known ids are skipped', auth: 'data', body: z.union([historyInput, z.array(historyInput)]), status: 201, answer: record },
  { method: 'POST', path: '/v1/users/:id/history/truncate', summary: 'keep the newest turns; the dropped ones go to a per-user backup first', auth: 'data', body: z.object({ keepLast: z.number().int().min(0) }), answer: z.object({ record, dropped: z.number().int(), backup: z.string().nullable() }) },
  { method: 'GET', path: '/v1/users/:id/flags/:key', summary: 'one flag', auth: 'data', query: ensureQ, answer: keyValue },
  { method: 'PUT', path: '/v1/users/:id/flags/:key', summary: 'set one flag', auth: 'data', body: z.object({ value: anyJson }), answer: record },
  { method: 'DELETE', path: '/v1/users/:id/flags/:key', summary: 'remove one flag (404 for an unknown user)', auth: 'data', answer: record },
  { method: 'GET', path: '/v1/users/:id/slots/:key', summary: 'one slot', auth: 'data', query: ensureQ, answer: keyValue },
  { method: 'PUT', path: '/v1/users/:id/slots/:key', summary: 'set one slot', auth: 'data', body: z.object({ value: anyJson }), answer: record },
  { method: 'DELETE', path: '/v1/users/:id/slots/:key', summary: 'remove one slot (404 for an unknown user)', auth: 'data', answer: record },
  { method: 'POST', path: '/v1/users/:id/slots', summary: 'set several slots verbatim (null is stored)', auth: 'data', body: z.object({ values: z.record(z.string(), anyJson) }), answer: record },
  { method: 'POST', path: '/v1/users/:id/context', summary: 'add a distinct summary entry and merge product and serials, atomically', auth: 'data', body: z.object({ text: z.string().optional(), maxItems: z.number().int().min(1).max(1000).optional(), product: z.string().optional(), serials: z.array(z.string()).optional() }), answer: record },
  { method: 'POST', path: '/v1/users/:id/session-token', summary: 'a new session token (creates the user)', auth: 'data', answer: record },
  { method: 'GET', path: '/v1/users', summary: 'users in id order, a page at a time', auth: 'data', query: z.object({ cursor: z.string().optional(), limit: limitQ.optional() }), answer: page },
  { method: 'GET', path: '/v1/search', summary: 'case-insensitive keyword search', auth: 'data', query: z.object({ q: z.string(), limit: limitQ.optional() }), answer: z.object({ items: z.array(summary) }) },
  { method: 'GET', path: '/v1/stats', summary: 'users, messages, bytes, last update', auth: 'data', answer: stats },

  { method: 'GET', path: '/v1/admin/users/:id', summary: "a user's record", auth: 'admin', answer: record },
  { method: 'GET', path: '/v1/admin/users', summary: 'users in id order', auth: 'admin', query: z.object({ cursor: z.string().optional(), limit: limitQ.optional() }), answer: page },
  { method: 'GET', path: '/v1/admin/search', summary: 'keyword search', auth: 'admin', query: z.object({ q: z.string(), limit: limitQ.optional() }), answer: z.object({ items: z.array(summary) }) },
  { method: 'GET', path: '/v1/admin/stats', summary: 'store statistics', auth: 'admin', answer: stats },
  { method: 'DELETE', path: '/v1/users/:id', summary: 'delete one user: verified backup first', auth: 'admin', query: z.object({ fullBackup: boolQ.optional() }), answer: deleteResult },
  { method: 'POST', path: '/v1/admin/delete', summary: 'delete users: verified backup first', auth: 'admin', body: z.object({ users: z.array(userId).min(1), fullBackup: z.boolean().optional() }), answer: deleteResult },
  { method: 'POST', path: '/v1/admin/clear', summary: 'delete every user: verified full backup first', auth: 'admin', body: z.object({ confirm: z.literal('YES') }), answer: deleteResult },
  {
    method: 'POST',
    path: '/v1/admin/forget',
    summary: 'forget users everywhere: store, every backup (rewritten, verified), daemon log; audit ids become keyed hashes. No backup, by design',
    auth: 'admin',
    body: z.object({ users: z.array(userId).min(1) }),
    answer: z.object({
      deleted: z.number().int(),
      hashes: z.record(z.string(), z.string()).describe('user id -> the hash the audit log now names it by'),
      backupsRewritten: z.array(z.string()),
      filesDeleted: z.array(z.string()),
      logsRedacted: z.array(z.string()),
      auditEntriesRedacted: z.number().int(),
      auditOp: z.string(),
    }),
  },
  {
    method: 'POST',
    path: '/v1/admin/expire',
    summary: "remove users with no update for inactiveAfter (default: the daemon's users.inactiveAfter): guarded delete, backup first, or forget; dryRun lists them",
    auth: 'admin',
    body: z.object({ inactiveAfter: z.string().optional().describe('duration, e.g. 180d'), mode: z.enum(['delete', 'forget']).optional(), dryRun: z.boolean().optional() }),
    answer: free,
  },
  {
    method: 'POST',
    path: '/v1/admin/merge',
    summary: 'merge two ids of one person: a backup of both first, then INTO takes FROM in (history by time under the cap, INTO wins flags, slots and identity) and FROM is removed, in one transaction',
    auth: 'admin',
    body: z.object({ from: userId, into: userId }),
    answer: z.object({ record, backup: z.string(), backupFile: z.string(), auditOp: z.string() }),
  },
  { method: 'GET', path: '/v1/admin/backups', summary: 'list backups, newest first', auth: 'admin', answer: z.object({ backups: z.array(backupInfo) }) },
  { method: 'POST', path: '/v1/admin/backups', summary: 'write a verified full backup', auth: 'admin', body: z.object({ gzip: z.boolean().optional(), reason: z.enum(BACKUP_REASONS as [string, ...string[]]).optional() }), status: 201, answer: free },
  { method: 'GET', path: '/v1/admin/backups/:id', summary: "a backup's manifest, counts and sample, or one user's record in it", auth: 'admin', query: z.object({ user: z.string().optional(), sample: z.string().optional() }), answer: free },
  { method: 'POST', path: '/v1/admin/backups/:id/verify', summary: 'verify one backup', auth: 'admin', answer: verifyAnswer },
  { method: 'POST', path: '/v1/admin/verify', summary: 'verify every backup', auth: 'admin', answer: verifyAnswer },
  { method: 'GET', path: '/v1/admin/diff', summary: 'difference between two backups, or a backup and the store', auth: 'admin', query: z.object({ a: z.string(), b: z.string().optional(), users: z.string().optional() }), answer: free },
  { method: 'POST', path: '/v1/admin/restore', summary: 'restore all or some users; what it overwrites is backed up first', auth: 'admin', body: z.object({ backup: z.string(), users: z.array(userId).optional(), mode: z.enum(['replace', 'merge']).optional(), dryRun: z.boolean().optional(), wholeStore: z.boolean().optional() }).loose(), answer: free },
  { method: 'POST', path: '/v1/admin/prune', summary: 'apply a retention policy (dryRun to preview)', auth: 'admin', body: z.object({ policy: z.record(z.string(), z.unknown()).optional(), dryRun: z.boolean().optional(), only: z.array(z.string()).optional() }), answer: free },
  { method: 'POST', path: '/v1/admin/import', summary: 'import a seed memory.json or any backup file the daemon can read', auth: 'admin', body: z.object({ file: z.string().describe('absolute path') }), answer: free },
  { method: 'GET', path: '/v1/admin/whoami', summary: "the admin token's name, and the OS user the CLI sent", auth: 'admin', answer: z.object({ name: z.string(), osUser: z.string().nullable(), remote: z.string().nullable() }) },
  { method: 'GET', path: '/v1/admin/audit', summary: 'audit log entries', auth: 'admin', query: z.object({ since: z.string().optional(), user: z.string().optional(), action: z.string().optional(), op: z.string().optional(), limit: z.string().optional() }), answer: z.object({ entries: z.array(free) }) },
];

const toOpenApiPath = (p: string): string => p.replace(/:([A-Za-z_]+)/g, '{$1}');

function schemaOf(s: z.ZodType): Record<string, unknown> {
  const out = z.toJSONSchema(s, { target: 'draft-2020-12', unrepresentable: 'any', reused: 'inline', io: 'input' }) as Record<string, unknown>;
  delete out.$schema;
  return out;
}

/** The OpenAPI 3.1 document of every route in {@link ROUTES}. */
export function openApiDocument(): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of ROUTES) {
    const parameters: unknown[] = [...r.path.matchAll(/:([A-Za-z_]+)/g)].map((m) => ({ name: m[1], in: 'path', required: true, schema: { type: 'string' } }));
    if (r.query) {
      for (const [name, s] of Object.entries(r.query.shape)) {
        parameters.push({ name, in: 'query', required: !(s as z.ZodType).safeParse(undefined).success, schema: schemaOf(s as z.ZodType) });
      }
    }
    const ok = String(r.status ?? 200);
    const responses: Record<string, unknown> = {
      [ok]: { description: 'success', content: { [r.produces ?? 'application/json']: { schema: schemaOf(r.answer) } } },
      default: { description: 'an error', content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } },
    };
    const op: Record<string, unknown> = {
      summary: r.summary,
      operationId: `${r.method.toLowerCase()}${r.path.replace(/[/:-]+(\w)/g, (_m, c: string) => c.toUpperCase()).replace(/[^A-Za-z0-9]/g, '')}`,
      tags: [r.auth === 'admin' ? 'admin' : r.auth === 'data' ? 'data' : 'public'],
      parameters,
      responses,
    };
    if (r.auth !== 'none') op.security = [{ [r.auth === 'admin' ? 'adminToken' : 'apiToken']: [] }];
    if (r.body) op.requestBody = { required: true, content: { 'application/json': { schema: schemaOf(r.body) } } };
    (paths[toOpenApiPath(r.path)] ??= {})[r.method.toLowerCase()] = op;
  }
  return {
    openapi: '3.1.0',
    info: { title: 'chatmem', version: VERSION, description: "A chatbot's memory store. Every destructive admin call writes a verified backup first." },
    paths,
    components: {
      schemas: { Error: schemaOf(errorBody) },
      securitySchemes: {
        apiToken: { type: 'http', scheme: 'bearer', description: 'CHATMEM_API_TOKEN (data calls; only when the daemon sets one). The admin token works too.' },
        adminToken: { type: 'http', scheme: 'bearer', description: 'the admin token' },
      },
    },
  };
}

/** `/docs`: the document as a plain page, no CDN, no script. */
export function docsPage(): string {
  const esc = (s: string) => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c] ?? c);
  const rows = ROUTES.map(
    (r) => `<section><h3><code>${r.method} ${esc(r.path)}</code> <small>${r.auth}</small></h3><p>${esc(r.summary)}</p>` +
      (r.query ? `<p>query: <code>${esc(Object.keys(r.query.shape).join(', '))}</code></p>` : '') +
      (r.body ? `<details><summary>body</summary><pre>${esc(JSON.stringify(schemaOf(r.body), null, 2))}</pre></details>` : '') +
      `<details><summary>answer ${r.status ?? 200}</summary><pre>${esc(JSON.stringify(schemaOf(r.answer), null, 2))}</pre></details></section>`,
  ).join('\n');
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>chatmem API</title>
<style>body{font:15px/1.45 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}h3{margin:1.2rem 0 .2rem;font-size:1rem}small{color:#666;font-weight:normal}pre{background:#f6f6f6;padding:.6rem;overflow:auto;font-size:12px}</style></head>
<body><h1>chatmem HTTP API</h1><p>Machine-readable: <a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1). Errors are always <code>{"error":{"code","message"}}</code>.</p>
${rows}</body></html>`;
}
