import type { FastifyInstance, FastifyReply, FastifyRequest, onRequestHookHandler } from 'fastify';
import type { z } from 'zod';
import type { ApiRoute } from '../http-api.js';
import { HttpError } from './plugins/errors.js';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The table row a route was registered from: its schemas, auth and documentation. */
    api?: ApiRoute;
  }
}

type Out<R, K extends 'params' | 'query' | 'body'> = R extends { [P in K]: infer S extends z.ZodType } ? z.output<S> : undefined;

/** A request as its row's schemas read it: coerced and checked. */
export interface RouteInput<R extends ApiRoute> {
  params: Out<R, 'params'>;
  query: Out<R, 'query'>;
  body: Out<R, 'body'>;
}

export type RouteHandler<R extends ApiRoute> = (input: RouteInput<R>, req: FastifyRequest, reply: FastifyReply) => Promise<unknown>;

/** The code (and message) a row gives a refused part or field: the most specific `codes` key wins. */
function codeFor(row: ApiRoute, where: string[]): [string, string | null] {
  for (let n = where.length; n > 0; n--) {
    const c = row.codes?.[where.slice(0, n).join('.')];
    if (c !== undefined) return typeof c === 'string' ? [c, null] : c;
  }
  return ['E_OPS_ARG', null];
}

function check<S extends z.ZodType>(row: ApiRoute, part: 'params' | 'query' | 'body', schema: S, value: unknown): z.output<S> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const at = (issue?.path ?? []).map(String);
  const [code, message] = codeFor(row, [part, ...at]);
  const field = at.length > 0 ? `${at.join('.')}: ` : part === 'query' ? 'query: ' : '';
  throw new HttpError(code, message ?? `${field}${issue?.message ?? 'invalid request'}`);
}

/**
 * Registers one route of a table: `onRequest` guards it (auth), the row's schemas check params, query and
 * body before `handler` runs (a refusal is the project's error shape, with the row's code), and the row
 * rides along in the route's config for the OpenAPI document.
 */
export function addRoute<R extends ApiRoute>(app: FastifyInstance, row: R, onRequest: onRequestHookHandler | undefined, handler: RouteHandler<R>): void {
  app.route({
    method: row.method,
    url: row.path,
    config: { api: row },
    ...(onRequest ? { onRequest } : {}),
    handler: async (req, reply) => {
      const body = row.bodyOptional && (req.body === undefined || req.body === null) ? {} : req.body;
      const input = {
        params: row.params ? check(row, 'params', row.params, req.params) : undefined,
        query: row.query ? check(row, 'query', row.query, req.query) : undefined,
        body: row.body ? check(row, 'body', row.body, body) : undefined,
      } as RouteInput<R>;
      const answer = await handler(input, req, reply);
      if (reply.sent) return reply;
      if (row.status !== undefined) void reply.status(row.status);
      return answer;
    },
  });
}
