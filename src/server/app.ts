import Fastify, { LogController, type FastifyInstance } from 'fastify';
import type { Context } from '../context.js';
import { ConfigError } from '../errors.js';
import { stringifyJson } from '../json-safe.js';
import { resolveHttpLimits, type HttpLimits } from './limits.js';
import { Metrics } from './metrics.js';
import { openApiPlugin } from './openapi.js';
import { authPlugin, isLoopbackHost } from './plugins/auth.js';
import { connectionsPlugin } from './plugins/connections.js';
import { clientErrorAnswerer, errorsPlugin, frameworkError } from './plugins/errors.js';
import { jsonBodyPlugin } from './plugins/json-body.js';
import { requestLogPlugin } from './plugins/request-log.js';
import { adminRoutes } from './routes/admin.js';
import { dataRoutes } from './routes/data.js';
import { pageRoutes } from './routes/page.js';
import { statusRoutes } from './routes/status.js';

export { isLoopbackHost };
export { registeredRoutes } from './openapi.js';

/** Default request body limit: 1 MiB. */
export const DEFAULT_BODY_LIMIT = 1024 * 1024;
/** Tokens shorter than this are refused: the API may be reachable from a network, and guessing must not pay. */
export const MIN_TOKEN_LENGTH = 16;

export interface BuildAppOptions {
  ctx: Context;
  /** Bearer token of the admin API. Required: there is no default. */
  adminToken: string;
  /** Bearer token of the data API; null or absent leaves the data API open (loopback only, enforced by serve()). */
  apiToken?: string | null;
  /** Request body limit in bytes (default 1 MiB); larger bodies get 413. */
  bodyLimit?: number;
  /** false (default): no logs; true: pino at info to stdout; an object: pino options. */
  logger?: boolean | object;
  /** Log one in this many successful data-plane requests (config `server.logSample`, default 1: all); errors and admin requests always. */
  logSample?: number;
  /** Shared with the backup scheduler so its failures show in /metrics; created when absent. */
  metrics?: Metrics;
  /** Timeouts and header/URL limits (config `server.*`); defaults in DEFAULT_HTTP_LIMITS. */
  limits?: Partial<HttpLimits>;
  /** Named admin tokens (`chatmem token add`), data/admin-tokens.json; none when absent. */
  adminTokensFile?: string;
}

/**
 * The daemon's HTTP API: the data plane the chatbot uses (routes/data.ts), the admin plane that runs the
 * guarded operations online (routes/admin.ts, from the table in src/admin/api.ts), the page, health,
 * metrics and the OpenAPI document. See the routes table in README.
 */
export async function buildApp(opts: BuildAppOptions): Promise<FastifyInstance> {
  const { ctx } = opts;
  if (typeof opts.adminToken !== 'string' || opts.adminToken.length < MIN_TOKEN_LENGTH) {
    throw new ConfigError('E_CONFIG', `the admin token must be at least ${MIN_TOKEN_LENGTH} characters long`);
  }
  const apiToken = opts.apiToken ?? null;
  if (apiToken !== null && apiToken.length < MIN_TOKEN_LENGTH) {
    throw new ConfigError('E_CONFIG', `CHATMEM_API_TOKEN must be at least ${MIN_TOKEN_LENGTH} characters long`);
  }
  const metrics = opts.metrics ?? new Metrics();
  const bodyLimit = opts.bodyLimit ?? DEFAULT_BODY_LIMIT;
  const limits = resolveHttpLimits(opts.limits);

  const redact = { paths: ['req.headers.authorization', 'headers.authorization', 'authorization'], censor: '***' };
  const logger = opts.logger === true ? { level: 'info', redact } : typeof opts.logger === 'object' && opts.logger !== null ? { redact, ...opts.logger } : false;

  const app: FastifyInstance = Fastify({
    logger,
    // One line per request, written by plugins/request-log.ts with the URL's credentials masked.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit,
    // User ids may be 256 characters; percent-encoded UTF-8 takes up to 12 bytes per character.
    routerOptions: { maxParamLength: 4096 },
    // In-flight requests finish on close; idle keep-alive sockets are dropped so close() does not wait for them.
    forceCloseConnections: 'idle',
    // Slow or idle clients must not hold sockets: see limits.ts, and plugins/connections.ts.
    keepAliveTimeout: limits.keepAliveTimeout,
    requestTimeout: limits.requestTimeout,
    http: {
      headersTimeout: limits.headersTimeout,
      maxHeaderSize: limits.maxHeaderSize,
      // Node checks the header and request clocks only this often (default 30 s).
      connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(limits.headersTimeout / 4))),
      // Node would answer a missing Host with an empty 400; the Host check in plugins/auth.ts answers it in our shape.
      requireHostHeader: false,
    },
    // Errors Node raises before Fastify sees a request (431, 408, unparsable requests), and bad URLs, in our shape.
    clientErrorHandler: clientErrorAnswerer(limits, () => app.log),
    frameworkErrors: frameworkError,
  });
  // Fastify's default serialiser recurses: a deeply nested record stored before the limits would answer 500.
  app.setReplySerializer((payload) => stringifyJson(payload));

  await app.register(errorsPlugin, { bodyLimit });
  await app.register(jsonBodyPlugin);
  await app.register(connectionsPlugin, { connectionTimeout: limits.connectionTimeout });
  await app.register(authPlugin, { adminToken: opts.adminToken, apiToken, adminTokensFile: opts.adminTokensFile, audit: ctx.audit, maxUrlLength: limits.maxUrlLength });
  await app.register(requestLogPlugin, { metrics, dataSample: opts.logSample });
  // Before the routes: it records each one as it is registered.
  await app.register(openApiPlugin);

  await app.register(statusRoutes, { ctx, metrics });
  await app.register(pageRoutes);
  await app.register(dataRoutes, { store: ctx.store, ops: ctx.ops });
  await app.register(adminRoutes, { ctx, metrics });
  return app;
}
