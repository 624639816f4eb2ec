import { globalPlugin } from '../plugin.js';
import { HttpError } from './errors.js';

/**
 * Bodies are JSON in UTF-8: a declared other charset is refused, and bytes that are not UTF-8 are an error
 * rather than U+FFFD in a user's memory. JSON only: a text/plain POST is a "simple" cross-site request that
 * a browser sends without a CORS preflight.
 */
export const jsonBodyPlugin = globalPlugin(async (app) => {
  const parseJson = app.getDefaultJsonParser('error', 'error');
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (req, body, done) => {
    const charset = /;\s*charset\s*=\s*"?([^";\s]*)/i.exec(req.headers['content-type'] ?? '')?.[1];
    if (charset !== undefined && !/^utf-?8$/i.test(charset)) {
      done(new HttpError('E_MEDIA_TYPE', `request bodies must be JSON in UTF-8; got charset=${charset.slice(0, 40)}`), undefined);
      return;
    }
    let text: string;
    try {
      text = utf8.decode(body as Buffer);
    } catch {
      done(new HttpError('E_BAD_ENCODING', 'request body is not valid UTF-8'), undefined);
      return;
    }
    parseJson(req, text, done);
  });
  app.removeContentTypeParser('text/plain');
});
