import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { errorBody, free, route, type ApiRoute } from '../http-api.js';
import { VERSION } from '../version.js';
import { globalPlugin } from './plugin.js';
import { addRoute } from './route.js';

/**
 * The OpenAPI document, generated from the routes the app registers: each carries its table row
 * (src/admin/api.ts, routes/data.ts, ...) with its schemas. A route registered without a row has no
 * documentation, and test/server/openapi.test.ts fails on it.
 */

/** A route as the app registered it (HEAD aside), with the row it came from, if any. */
export interface RegisteredRoute {
  method: string;
  url: string;
  api?: ApiRoute;
}

/** Every route each app registered, in order: the document and the OpenAPI test read them. */
export const registeredRoutes = new WeakMap<FastifyInstance, RegisteredRoute[]>();

const OPENAPI = route({ method: 'GET', path: '/openapi.json', summary: 'this document', auth: 'none', answer: free });
const DOCS = route({ method: 'GET', path: '/docs', summary: 'this document as a page', auth: 'none', answer: z.string(), produces: 'text/html' });

const toOpenApiPath = (p: string): string => p.replace(/:([A-Za-z_]+)/g, '{$1}');

function schemaOf(s: z.ZodType): Record<string, unknown> {
  const out = z.toJSONSchema(s, { target: 'draft-2020-12', unrepresentable: 'any', reused: 'inline', io: 'input' }) as Record<string, unknown>;
  delete out.$schema;
  return out;
}

/** The documented rows among `routes`, in registration order. */
export function documented(routes: readonly RegisteredRoute[]): ApiRoute[] {
  return routes.flatMap((r) => (r.api ? [r.api] : []));
}

/** The OpenAPI 3.1 document of `rows`. */
export function openApiDocument(rows: readonly ApiRoute[]): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of rows) {
    const parameters: unknown[] = [...r.path.matchAll(/:([A-Za-z_]+)/g)].map((m) => ({ name: m[1], in: 'path', required: true, schema: { type: 'string' } }));
    if (r.query) {
      for (const [name, s] of Object.entries(r.query.shape)) {
        parameters.push({ name, in: 'query', required: !(s as z.ZodType).safeParse(undefined).success, schema: schemaOf(s as z.ZodType) });
      }
    }
    const type = r.produces ?? 'application/json';
    const responses: Record<string, unknown> = {
      [String(r.status ?? 200)]: { description: 'success', content: { [type]: { schema: schemaOf(r.answer) } } },
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
    const body = r.bodyDoc ?? r.body;
    if (body) op.requestBody = { required: !r.bodyOptional, content: { 'application/json': { schema: schemaOf(body) } } };
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
export function docsPage(rows: readonly ApiRoute[]): string {
  const esc = (s: string) => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c] ?? c);
  const html = rows
    .map((r) => {
      const body = r.bodyDoc ?? r.body;
      return (
        `<section><h3><code>${r.method} ${esc(r.path)}</code> <small>${r.auth}</small></h3><p>${esc(r.summary)}</p>` +
        (r.query ? `<p>query: <code>${esc(Object.keys(r.query.shape).join(', '))}</code></p>` : '') +
        (body ? `<details><summary>body</summary><pre>${esc(JSON.stringify(schemaOf(body), null, 2))}</pre></details>` : '') +
        `<details><summary>answer ${r.status ?? 200}</summary><pre>${esc(JSON.stringify(schemaOf(r.answer), null, 2))}</pre></details></section>`
      );
    })
    .join('\n');
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>chatmem API</title>
<style>body{font:15px/1.45 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}h3{margin:1.2rem 0 .2rem;font-size:1rem}small{color:#666;font-weight:normal}pre{background:#f6f6f6;padding:.6rem;overflow:auto;font-size:12px}</style></head>
<body><h1>chatmem HTTP API</h1><p>Machine-readable: <a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1). Errors are always <code>{"error":{"code","message"}}</code>.</p>
${html}</body></html>`;
}

/** Records every route the app registers from here on, and serves `/openapi.json` and `/docs` from them. */
export const openApiPlugin = globalPlugin(async (app) => {
  const registered: RegisteredRoute[] = [];
  registeredRoutes.set(app, registered);
  app.addHook('onRoute', (r) => {
    for (const method of [r.method].flat()) if (method !== 'HEAD') registered.push({ method, url: r.url, api: r.config?.api });
  });
  // Built on first request: by then every route is registered.
  let doc: Record<string, unknown> | null = null;
  let page: string | null = null;
  addRoute(app, OPENAPI, undefined, async () => (doc ??= openApiDocument(documented(registered))));
  addRoute(app, DOCS, undefined, async (_input, _req, reply) =>
    reply
      .header('Content-Security-Policy', "default-src 'none'; style-src 'unsafe-inline'")
      .type('text/html; charset=utf-8')
      .send((page ??= docsPage(documented(registered)))),
  );
});
