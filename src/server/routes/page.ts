import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { route } from '../../http-api.js';
import { ADMIN_PAGE_CSP, ADMIN_PAGE_HTML } from '../../web/page.generated.js';
import { addRoute } from '../route.js';

export const PAGE_API = {
  admin: route({ method: 'GET', path: '/admin', summary: 'the web admin page', auth: 'none', answer: z.string(), produces: 'text/html' }),
};

/**
 * `GET /admin`: the page built by scripts/build-web.mjs from src/web/admin.{html,css,ts}, served with the
 * CSP that allows exactly its inline script and style.
 */
export async function pageRoutes(app: FastifyInstance): Promise<void> {
  addRoute(app, PAGE_API.admin, undefined, async (_input, _req, reply) =>
    reply
      .header('Content-Security-Policy', ADMIN_PAGE_CSP)
      .header('X-Frame-Options', 'DENY')
      .header('X-Content-Type-Options', 'nosniff')
      .header('Referrer-Policy', 'no-referrer')
      .type('text/html; charset=utf-8')
      .send(ADMIN_PAGE_HTML),
  );
}
