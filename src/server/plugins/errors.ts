import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyBaseLogger, FastifyReply, FastifyRequest } from 'fastify';
import { ChatmemError, isChatmemError } from '../../errors.js';
import { httpStatusOf } from '../../error-codes.js';
import { redactSecrets } from '../../store/url.js';
import type { HttpLimits } from '../limits.js';
import { globalPlugin } from '../plugin.js';

/** An error of the HTTP layer, answered as `{ error: { code, message } }` with its code's status (src/error-codes.ts). */
export class HttpError extends ChatmemError {}

/** Fastify's own errors that are the caller's fault, with our code for each. */
const FASTIFY_ERRORS: Record<string, [string, string]> = {
  FST_ERR_CTP_BODY_TOO_LARGE: ['E_BODY_LIMIT', 'request body is larger than the limit (server.bodyLimit)'],
  FST_ERR_CTP_INVALID_JSON_BODY: ['E_BAD_JSON', 'request body is not valid JSON'],
  FST_ERR_CTP_EMPTY_JSON_BODY: ['E_BAD_JSON', 'request body is empty but Content-Type is application/json'],
  FST_ERR_CTP_INVALID_MEDIA_TYPE: ['E_MEDIA_TYPE', 'request bodies must be JSON (Content-Type: application/json)'],
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: ['E_BAD_REQUEST', 'request body size does not match Content-Length'],
};

/**
 * Status, code and message for any error a handler or Fastify raised. A chatmem error gets its code's
 * status from the catalogue; a 500 keeps its own code and message: those are written for operators (the admin API
 * needs to say why a restore failed). Anything else is E_INTERNAL, with details only in the log.
 */
export function classify(err: unknown): { status: number; code: string; message: string; internal: boolean } {
  if (isChatmemError(err)) {
    const status = httpStatusOf(err.code);
    return { status, code: err.code, message: err.message, internal: status === 500 };
  }
  const fcode = typeof err === 'object' && err !== null && 'code' in err ? String((err as { code: unknown }).code) : '';
  const known = FASTIFY_ERRORS[fcode];
  if (known) return { status: httpStatusOf(known[0]), code: known[0], message: known[1], internal: false };
  const statusCode = typeof err === 'object' && err !== null && 'statusCode' in err ? Number((err as { statusCode: unknown }).statusCode) : NaN;
  if (statusCode >= 400 && statusCode < 500) {
    return { status: statusCode, code: 'E_BAD_REQUEST', message: err instanceof Error ? err.message : 'bad request', internal: false };
  }
  return { status: 500, code: 'E_INTERNAL', message: 'internal error; see the daemon log', internal: true };
}

/** Fastify's `frameworkErrors`: a bad URL or an over-long path segment, in our shape. */
export function frameworkError(err: Error & { code?: string }, _req: FastifyRequest, reply: FastifyReply): void {
  const [code, message] =
    err.code === 'FST_ERR_MAX_PARAM_LENGTH'
      ? ['E_URI_TOO_LONG', 'a path segment is longer than 4096 bytes']
      : err.code === 'FST_ERR_BAD_URL'
        ? ['E_BAD_URL', 'the URL path is not valid percent-encoded UTF-8']
        : ['E_BAD_REQUEST', 'bad request'];
  void reply.status(httpStatusOf(code)).send({ error: { code, message } });
}

/**
 * Fastify's `clientErrorHandler`: errors Node raises before Fastify sees a request (431, 408, unparsable
 * requests), answered on the raw socket in our shape.
 */
export function clientErrorAnswerer(limits: HttpLimits, log: () => FastifyBaseLogger): (err: Error & { code?: string }, socket: Socket) => void {
  return (err, socket) => {
    if (err.code === 'ECONNRESET' || socket.destroyed) return;
    const [code, message] =
      err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? ['E_REQUEST_TIMEOUT', `the request did not arrive in time (server.headersTimeout ${limits.headersTimeout} ms, server.requestTimeout ${limits.requestTimeout} ms)`]
        : err.code === 'HPE_HEADER_OVERFLOW'
          ? ['E_HEADERS_TOO_LARGE', `the request line and headers are larger than ${limits.maxHeaderSize} bytes (server.maxHeaderSize)`]
          : ['E_BAD_REQUEST', 'malformed HTTP request'];
    log().info({ code, reason: err.code, remote: socket.remoteAddress }, 'client error');
    // A response already begun on this socket (keep-alive) cannot be followed by another one.
    // Node's private field, which its own clientError default reads too.
    const pending: { headersSent?: boolean } | undefined = (socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage;
    if (socket.writable && !pending?.headersSent) {
      const status = httpStatusOf(code);
      const body = JSON.stringify({ error: { code, message } });
      socket.end(
        `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\nContent-Type: application/json; charset=utf-8\r\n` +
          `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      );
      // The answer needs a moment to leave; a client that never reads must not keep the socket.
      setTimeout(() => socket.destroy(), 1000).unref();
    } else {
      socket.destroy();
    }
  };
}

export type ErrorsOptions = { bodyLimit: number };

/** Every error a route or Fastify raises, and every unknown route, answered as `{ error: { code, message } }`. */
export const errorsPlugin = globalPlugin<ErrorsOptions>(async (app, { bodyLimit }) => {
  app.setErrorHandler(async (err, req, reply) => {
    const c = classify(err);
    c.message = redactSecrets(c.message);
    if (c.code === 'E_BODY_LIMIT') c.message = `request body is larger than the limit of ${bodyLimit} bytes (server.bodyLimit)`;
    if (c.internal) {
      const e = err as Error & { code?: unknown };
      req.log.error({ err: { code: e.code, message: redactSecrets(e.message), stack: redactSecrets(e.stack ?? '') }, route: req.routeOptions.url }, 'request failed');
    }
    return reply.status(c.status).send({ error: { code: c.code, message: c.message } });
  });

  app.setNotFoundHandler(async (req, reply) => {
    return reply.status(404).send({ error: { code: 'E_NOT_FOUND', message: `no route ${req.method} ${req.url.split('?')[0] ?? ''}` } });
  });
});
