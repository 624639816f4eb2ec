import { describe, expect, it } from 'vitest';
import * as vm from 'node:vm';
import { adminPageHtml } from '../../src/web/page.js';

const html = adminPageHtml();
const scripts = [...html.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/gi)];
const script = scripts[0]?.[2] ?? '';
const styles = [...html.matchAll(/<style\b[^>]*>([\s\S]*?)<\/style>/gi)].map((m) => m[1] ?? '');
/** The HTML without the script and style bodies: the markup only. */
const markup = html.replace(/<script\b[^>]*>[\s\S]*?<\/script>/gi, '<script></script>').replace(/<style\b[^>]*>[\s\S]*?<\/style>/gi, '<style></style>');

function count(text: string, re: RegExp): number {
  return [...text.matchAll(new RegExp(re.source, re.flags.includes('g') ? re.flags : re.flags + 'g'))].length;
}

describe('adminPageHtml', () => {
  it('is one complete HTML document', () => {
    expect(html.startsWith('<!doctype html>')).toBe(true);
    expect(html.trimEnd().endsWith('</html>')).toBe(true);
    for (const tag of ['html', 'head', 'body', 'title']) {
      expect(count(html, new RegExp(`<${tag}[\\s>]`, 'i')), `<${tag}>`).toBe(1);
      expect(count(html, new RegExp(`</${tag}>`, 'i')), `</${tag}>`).toBe(1);
    }
    expect(html).toMatch(/<html lang="en">/);
    expect(html).toMatch(/<meta charset="utf-8">/i);
    expect(html).toMatch(/<meta name="viewport" content="width=device-width, initial-scale=1">/);
    expect(html.indexOf('</head>')).toBeLessThan(html.indexOf('<body>'));
    expect(adminPageHtml()).toBe(html);
  });

  it('loads nothing from anywhere else', () => {
    expect(html).not.toMatch(/https?:\/\//i);
    expect(markup).not.toMatch(/\s(?:src|href|srcset|action|formaction|poster|data)\s*=/i);
    expect(markup).not.toMatch(/<(?:link|iframe|object|embed|img|base|meta\s+http-equiv)\b/i);
    expect(html).not.toMatch(/javascript:/i);
    for (const css of styles) {
      expect(css).not.toMatch(/@import|url\s*\(/i);
    }
    // Only same-origin, relative API calls.
    expect(script).not.toMatch(/\/\/[a-z0-9.-]+\.[a-z]{2,}/i);
  });

  it('has exactly one plain inline script, and it parses', () => {
    expect(scripts).toHaveLength(1);
    expect(scripts[0]?.[1]).toBe('');
    expect(script.length).toBeGreaterThan(1000);
    expect(() => new vm.Script(script, { filename: 'admin-page.js' })).not.toThrow();
    expect(() => new Function(script)).not.toThrow();
    // Nothing inside could end the script element early or open a comment in it.
    expect(script).not.toMatch(/<\/script|<!--/i);
    expect(styles).toHaveLength(1);
    expect(styles[0]).not.toMatch(/<\/style/i);
  });

  it('never turns data into HTML or code', () => {
    expect(script).not.toMatch(/innerHTML|outerHTML|insertAdjacentHTML|document\.write|createContextualFragment|DOMParser/);
    expect(script).not.toMatch(/\beval\s*\(|new Function|setTimeout\s*\(\s*['"]|setInterval\s*\(\s*['"]/);
    expect(script).toMatch(/textContent/);
    expect(script).toMatch(/createTextNode/);
    // Event handlers are attached with addEventListener, never written as attributes.
    expect(markup).not.toMatch(/\son[a-z]+\s*=/i);
    expect(script).not.toMatch(/setAttribute\(\s*['"]on/i);
  });

  it('keeps the token in sessionStorage only and sends it as a bearer header', () => {
    expect(script).toMatch(/sessionStorage\.setItem\(TOKEN_KEY/);
    expect(script).toMatch(/sessionStorage\.removeItem\(TOKEN_KEY/);
    expect(script).not.toMatch(/localStorage|document\.cookie|indexedDB/);
    expect(script).toMatch(/'Authorization': 'Bearer ' \+ token/);
    expect(script).not.toMatch(/[?&]token=/i);
    expect(markup).toMatch(/id="forget"[^>]*>Forget token</);
    expect(markup).toMatch(/<input id="token-input" type="password"/);
  });

  it('calls every admin route with the right method', () => {
    const calls: [string, RegExp][] = [
      ['GET /v1/admin/stats', /api\('GET', '\/v1\/admin\/stats'\)/],
      ['GET /v1/admin/users?cursor=&limit=', /api\('GET', '\/v1\/admin\/users\?limit=' \+ u\.limit \+ \(u\.cursor \? '&cursor=' \+ enc\(u\.cursor\)/],
      ['GET /v1/admin/search?q=', /api\('GET', '\/v1\/admin\/search\?q=' \+ enc\(/],
      ['GET /v1/admin/users/:id', /api\('GET', '\/v1\/admin\/users\/' \+ enc\(/],
      ['DELETE /v1/users/:id', /api\('DELETE', '\/v1\/users\/' \+ enc\(/],
      ['POST /v1/admin/clear', /api\('POST', '\/v1\/admin\/clear', \{ confirm: 'YES' \}\)/],
      ['GET /v1/admin/backups', /api\('GET', '\/v1\/admin\/backups'\)/],
      ['POST /v1/admin/backups', /api\('POST', '\/v1\/admin\/backups', \{ gzip: /],
      ['GET /v1/admin/backups/:id', /api\('GET', '\/v1\/admin\/backups\/' \+ enc\(b\.id\) \+ '\?sample=/],
      ['POST /v1/admin/backups/:id/verify', /api\('POST', '\/v1\/admin\/backups\/' \+ enc\(b\.id\) \+ '\/verify', \{\}\)/],
      ['GET /v1/admin/diff?a=&b=current', /api\('GET', '\/v1\/admin\/diff\?a=' \+ enc\(b\.id\) \+ '&b=current'\)/],
      ['POST /v1/admin/restore', /api\('POST', '\/v1\/admin\/restore', body\)/],
      ['POST /v1/admin/prune (dry run)', /api\('POST', '\/v1\/admin\/prune', \{ policy: policy, dryRun: true \}\)/],
      ['POST /v1/admin/prune', /api\('POST', '\/v1\/admin\/prune', \{ policy: plan\.policy, dryRun: false \}\)/],
      ['GET /v1/admin/audit', /api\('GET', '\/v1\/admin\/audit\?/],
    ];
    for (const [name, re] of calls) expect(script, name).toMatch(re);
  });

  it('accepts both bare and wrapped lists', () => {
    // The daemon wraps lists ({items}, {backups}, {entries}, {results}); other servers may not.
    expect(script).toMatch(/function listOf\(data\)/);
    for (const key of ['items', 'backups', 'entries', 'results']) expect(script).toContain(`'${key}'`);
    expect(script).toMatch(/if \(Array\.isArray\(data\)\) return data;/);
  });

  it('makes every dangerous step explicit', () => {
    // Clear all: the button starts disabled and only "YES", exactly, enables it.
    expect(markup).toMatch(/<button type="button" class="danger" id="dz-clear" disabled>/);
    expect(script).toMatch(/\$\('dz-clear'\)\.disabled = \$\('dz-input'\)\.value !== 'YES'/);
    // Restore and prune preview with a dry run before the real call, which needs a confirmation.
    expect(script).toMatch(/var body = request\(true\);/);
    expect(script).toMatch(/body\.dryRun = false;[\s\S]*?confirmDialog\('Restore from this backup\?'/);
    expect(script).toMatch(/confirmDialog\('Remove old backups\?'/);
    expect(script).toMatch(/confirmDialog\('Delete this user\?'/);
    // The delete dialog says a backup comes first; the results name the backup.
    expect(script).toMatch(/A backup of this user is written and verified first/);
    expect(script).toMatch(/Backup written first: /);
  });

  it('shows each backup\'s retention group in the prune plan', () => {
    expect(script).toMatch(/groupLabel\(k\.group\)/);
    expect(script).toMatch(/groupLabel\(r\.group\)/);
    expect(script).toMatch(/function groupLabel\(g\) \{ return g === 'user' \? 'per-user' : 'full'; \}/);
    expect(markup).toMatch(/Full and per-user backups are counted separately\. The newest full backup/);
  });

  it('shows errors with their code', () => {
    expect(markup).toMatch(/<div id="banner" class="banner error" role="alert" hidden><\/div>/);
    expect(script).toMatch(/h\('span', \{ class: 'code', text: c \}\)/);
    expect(script).toMatch(/data\.error/);
  });

  it('only looks up elements that exist', () => {
    const ids = new Set([...markup.matchAll(/\sid="([^"]+)"/g)].map((m) => m[1]));
    const used = new Set([...script.matchAll(/\$\('([^']+)'\)/g)].map((m) => m[1]));
    for (const m of script.matchAll(/querySelector(?:All)?\('#([\w-]+)/g)) used.add(m[1]);
    for (const t of ['overview', 'users', 'backups', 'audit', 'danger']) used.add(`tab-${t}`);
    expect(used.size).toBeGreaterThan(30);
    for (const id of used) expect(ids.has(id), `#${id}`).toBe(true);
    // And every id is unique.
    const all = [...markup.matchAll(/\sid="([^"]+)"/g)].map((m) => m[1]);
    expect(new Set(all).size).toBe(all.length);
  });
});
