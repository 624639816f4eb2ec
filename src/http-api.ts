/**
 * Building blocks of the HTTP API's route tables (src/admin/api.ts for the admin plane,
 * src/server/routes/data.ts for the bot's): the row type, the schemas of what travels, and the
 * coercions a query string needs. Zod only, no Node imports: the admin page's checker (tsconfig.web.json)
 * reads src/admin/api.ts, and so this file, for its request and answer types.
 */
import { z } from 'zod';

export type HttpMethod = 'GET' | 'PUT' | 'PATCH' | 'POST' | 'DELETE';
export type RouteAuth = 'none' | 'data' | 'admin';

/**
 * One route of the HTTP API. The server validates params, query and body with these schemas before a
 * handler runs; `/openapi.json` and `/docs` are generated from them; the remote admin builds its
 * requests from them.
 */
export interface ApiRoute {
  method: HttpMethod;
  /** Fastify's form: `/v1/users/:id`. */
  path: string;
  summary: string;
  auth: RouteAuth;
  params?: z.ZodObject;
  query?: z.ZodObject;
  body?: z.ZodType;
  /** The body as documented, when the route checks only its outline and the store checks the rest. */
  bodyDoc?: z.ZodType;
  /** An absent (or null) body is read as `{}`: every field of the body is optional. */
  bodyOptional?: boolean;
  /** Status of a success (default 200). */
  status?: number;
  answer: z.ZodType;
  /** Answered with a content type other than JSON. */
  produces?: string;
  /**
   * Error code of a request the schemas refuse, by where the fault is: `body.policy`, `body`, `query.q`,
   * `query`, ... (the most specific wins); `E_OPS_ARG` when none matches. With a message, that message
   * replaces the schema's.
   */
  codes?: Record<string, string | [code: string, message: string]>;
  /** The action named in the daemon's `admin operation` log line; routes without one log no such line. */
  logAction?: string;
}

/** A table row, checked against {@link ApiRoute} without widening its schemas' types. */
export const route = <R extends ApiRoute>(r: R): R => r;

// --- coercions: a query string carries only strings, a JSON body carries the real types ----------------

/** true/false, also as the query-string forms `true`, `1`, `false`, `0`. */
export const flag = z
  .union([z.boolean(), z.enum(['true', '1', 'false', '0'], { error: (i) => `must be true or false, got ${JSON.stringify(i.input)}` })])
  .transform((v) => v === true || v === 'true' || v === '1');

/** An integer from `min` to `max`, also as a decimal string; an empty string counts as absent. */
export const int = (min: number, max: number) =>
  z
    .union([z.number(), z.string()])
    .transform((v, ctx) => {
      if (v === '') return undefined;
      const n = typeof v === 'number' ? v : Number(v);
      if (Number.isInteger(n) && n >= min && n <= max) return n;
      ctx.addIssue({ code: 'custom', message: `must be an integer from ${min} to ${max}, got ${JSON.stringify(v)}` });
      return z.NEVER;
    })
    .describe(`integer ${min}..${max}`);

/** One string, given once (a repeated query parameter is refused). */
export const one = z.string({ error: 'must be given once, as a string' });

/** A list of strings; a query string's single value is a list of one. */
export const stringList = z
  .union([z.string(), z.array(z.string())], { error: 'must be a list of strings' })
  .transform((v) => (Array.isArray(v) ? v : [v]));

// --- what travels ------------------------------------------------------------------------------------

const isoUtc = z.string().describe('UTC ISO timestamp, e.g. 2025-11-20T01:02:07Z');
export const userId = z.string().min(1).max(256).describe('user id (usually a WhatsApp number); any characters but control characters');
export const anyJson = z.unknown().describe('any JSON value');

export const historyEntry = z
  .object({ role: z.string().min(1), text: z.string(), ts: isoUtc, id: z.string().optional().describe('stable entry id'), meta: z.record(z.string(), anyJson).optional() })
  .loose()
  .meta({ id: 'HistoryEntry' });
export const historyInput = z
  .object({
    role: z.string().min(1),
    text: z.string(),
    ts: isoUtc.optional(),
    id: z.string().min(1).max(256).optional().describe('client id, e.g. the WhatsApp message id: an append of an id the user already has is a no-op'),
    meta: z.record(z.string(), anyJson).optional(),
  })
  .loose()
  .meta({ id: 'HistoryInput' });
export const record = z
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
export const recordInput = record.partial().loose().meta({ id: 'RecordInput' });
export const recordPatch = record
  .omit({ user_id: true, created_at: true })
  .partial()
  .loose()
  .meta({ id: 'RecordPatch', description: 'top-level merge; flags and slots merge key by key, null removes a key' });
export const userSummary = z
  .object({ user_id: userId, name: z.string().nullable(), product: z.string().nullable(), created_at: isoUtc, updated_at: isoUtc, messages: z.number().int() })
  .meta({ id: 'UserSummary' });
export const userPage = z.object({ items: z.array(userSummary), next: z.string().nullable() }).meta({ id: 'UserPage' });
export const storeStats = z.object({ users: z.number().int(), messages: z.number().int(), bytes: z.number().int(), lastUpdate: isoUtc.nullable() }).meta({ id: 'Stats' });
export const errorBody = z
  .object({ error: z.object({ code: z.string().describe('stable error code, see README'), message: z.string() }) })
  .meta({ id: 'Error', description: 'every error answer' });
/** An answer documented only as a JSON object. */
export const free = z.object({}).loose();

/** `/v1/users` and `/v1/admin/users`. */
export const listQuery = z.object({ cursor: one.optional(), limit: int(1, 1000).optional() });
/** `/v1/search` and `/v1/admin/search`; an empty query is `E_STORE_ARG` (see `codes`). */
export const searchQuery = z.object({
  q: one.refine((q) => q.trim() !== '', 'search needs a query: ?q=<text>'),
  limit: int(1, 1000).optional(),
});
export const searchAnswer = z.object({ items: z.array(userSummary) });
