// The admin page, driven in real Chromium against a real daemon (buildApp on 127.0.0.1, SQLite store,
// the 200-user seed fixture imported). A spy records every request the page makes, so the tests prove
// what reached the API: nothing destructive on Cancel, a dry run before every restore and prune, no clear
// without `YES` typed exactly, nothing from another origin.
import * as path from 'node:path';
import type { BrowserContext, ConsoleMessage, Page, Request } from 'playwright-core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ADMIN_TOKEN, http, startApp, type TestServer } from '../server/helpers.js';
import { describeBrowser, launchChromium } from '../helpers/chromium.js';
import { FIXTURES } from '../helpers/tmp.js';

const JOKO = '628161973069';
const EVIL = '620000000666';
const EVIL_NAME = '<img src=x onerror="window.__xss=1">';

interface Call {
  method: string;
  path: string;
  search: URLSearchParams;
  origin: string;
  body: unknown;
}

/** Every request the page sends, in order; requests are only recorded, they go on to the daemon unchanged. */
function spy(page: Page): Call[] {
  const calls: Call[] = [];
  page.on('request', (req: Request) => {
    const u = new URL(req.url());
    let body: unknown = null;
    const raw = req.postData();
    if (raw) {
      try {
        body = JSON.parse(raw);
      } catch {
        body = raw;
      }
    }
    calls.push({ method: req.method(), path: u.pathname, search: u.searchParams, origin: u.origin, body });
  });
  return calls;
}

/** Console errors and uncaught exceptions: a CSP violation or a script error shows up here. */
function problems(page: Page): string[] {
  const out: string[] = [];
  page.on('console', (m: ConsoleMessage) => {
    // The daemon's own 4xx answers (404 from a route the test probes) are logged by Chromium as resource errors.
    if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) out.push(m.text());
  });
  page.on('pageerror', (e) => out.push(String(e)));
  return out;
}

/** Polls `fn` until it returns true; fails with `what` after the deadline (generous: 2 shared cores). */
async function until(what: string, fn: () => Promise<boolean> | boolean, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  for (let i = 0; ; i++) {
    if (await fn()) return;
    if (Date.now() > end) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, Math.min(50 * (i + 1), 250)));
  }
}

const destructive = (c: Call) =>
  (c.method === 'DELETE') ||
  (c.method === 'POST' && c.path === '/v1/admin/clear') ||
  (c.method === 'POST' && (c.path === '/v1/admin/restore' || c.path === '/v1/admin/prune') && (c.body as { dryRun?: unknown } | null)?.dryRun !== true);

/** Whether the first match is wholly inside the viewport (boxes are relative to it). */
async function inViewport(page: Page, selector: string): Promise<boolean> {
  const box = await page.locator(selector).first().boundingBox();
  const view = page.viewportSize();
  return !!box && !!view && box.height > 0 && box.y >= 0 && box.y + box.height <= view.height;
}

/** A number or value from the page; a string expression, as the Node typecheck has no DOM library. */
const inPage = <T>(page: Page, expression: string) => page.evaluate(expression) as Promise<T>;

async function signIn(page: Page, url: string): Promise<void> {
  await page.goto(url + '/admin');
  await page.locator('#token-input').fill(ADMIN_TOKEN);
  await page.locator('#login-form button[type=submit]').click();
  await page.locator('#tabs').waitFor({ state: 'visible' });
}

async function tab(page: Page, name: string): Promise<void> {
  await page.locator(`#tabs [data-tab="${name}"]`).click();
  await page.locator(`#tab-${name}`).waitFor({ state: 'visible' });
}

async function search(page: Page, q: string): Promise<void> {
  await tab(page, 'users');
  await page.locator('#user-q').fill(q);
  await page.locator('#user-search button[type=submit]').click();
  await until(`results for ${q}`, async () => (await page.locator('#user-info').textContent())?.includes(`for “${q}”`) ?? false);
}

/** Answers the open confirmation dialog with Cancel or OK. */
async function answer(page: Page, choice: 'cancel' | 'ok'): Promise<void> {
  await page.locator('#dlg').waitFor({ state: 'visible' });
  await page.locator(choice === 'ok' ? '#dlg-ok' : '#dlg-cancel').click();
  await page.locator('#dlg').waitFor({ state: 'hidden' });
}

describeBrowser('admin page in Chromium', () => {
  let s: TestServer;
  let context: BrowserContext;
  let closeBrowser: () => Promise<void>;

  beforeAll(async () => {
    s = await startApp('sqlite');
    await s.ctx.ops.importFile(path.join(FIXTURES, 'memory.json'));
    ({ context, close: closeBrowser } = await launchChromium());
  });
  afterAll(async () => {
    await closeBrowser?.();
    await s?.close();
  });

  it('runs the whole operator flow, and Cancel, dry runs and YES guard every destructive call', async () => {
    const page = await context.newPage();
    const calls = spy(page);
    const errors = problems(page);
    await signIn(page, s.url);

    // Find a user and open the chat: it comes before the flags table.
    await search(page, JOKO);
    await page.locator(`#user-table tr[data-id="${JOKO}"]`).click();
    await page.locator('#detail h2', { hasText: 'Joko Santoso' }).waitFor();
    await page.locator('#detail .chat .msg', { hasText: 'eac saya bunyi terus' }).first().waitFor();
    const heads = await page.locator('#detail h4').allTextContents();
    const chatAt = heads.findIndex((t) => t.startsWith('Chat · 8 messages'));
    expect(chatAt).toBeGreaterThanOrEqual(0);
    expect(chatAt).toBeLessThan(heads.indexOf('Flags'));

    // Delete: Cancel sends nothing; OK deletes, after a backup.
    await page.locator('#detail button', { hasText: 'Delete user…' }).click();
    await answer(page, 'cancel');
    expect(calls.filter(destructive)).toEqual([]);
    expect((await http(s.url, 'GET', `/v1/admin/users/${JOKO}`, { token: ADMIN_TOKEN })).status).toBe(200);
    await page.locator('#detail button', { hasText: 'Delete user…' }).click();
    await answer(page, 'ok');
    await page.locator('#detail h2', { hasText: 'User deleted' }).waitFor();
    expect(calls.filter(destructive).map((c) => `${c.method} ${c.path}`)).toEqual([`DELETE /v1/users/${JOKO}`]);
    expect((await http(s.url, 'GET', `/v1/admin/users/${JOKO}`, { token: ADMIN_TOKEN })).status).toBe(404);
    const deleteBackup = (await page.locator('#detail .result code').textContent()) ?? '';
    expect(deleteBackup).toMatch(/\S/);

    // See the backup: the filter narrows the list to it by the user it holds.
    await tab(page, 'backups');
    await page.locator('#bk-q').fill(JOKO);
    await until('one backup row', async () => (await page.locator('#bk-table tbody tr').count()) === 1 && (await page.locator(`#bk-table tbody tr[data-id="${deleteBackup}"]`).count()) === 1);
    const row = page.locator(`#bk-table tbody tr[data-id="${deleteBackup}"]`);
    expect(await row.textContent()).toContain('Before delete');

    // Restore that user: preview (dry run) first, scrolled into view with its button; Cancel sends nothing.
    await row.locator('button', { hasText: 'Restore…' }).click();
    expect(await page.locator('#bk-panel textarea').inputValue()).toBe(JOKO);
    await page.locator('#bk-panel button', { hasText: 'Preview changes (dry run)' }).click();
    await page.locator('#bk-panel .restore-preview h4', { hasText: 'Dry run' }).waitFor();
    await until('restore preview and its button in view', async () => (await inViewport(page, '#bk-panel .restore-preview h4')) && (await inViewport(page, '#bk-panel .restore-preview .preview-actions button')));
    await page.locator('#bk-panel button', { hasText: 'Restore now…' }).click();
    await answer(page, 'cancel');
    expect(calls.filter(destructive)).toHaveLength(1);
    await page.locator('#bk-panel button', { hasText: 'Restore now…' }).click();
    await answer(page, 'ok');
    await page.locator('#bk-panel .result', { hasText: 'Restore done' }).waitFor();
    await until('restore result in view', () => inViewport(page, '#bk-panel .restore-preview .result'));

    // See them back.
    await search(page, JOKO);
    await page.locator(`#user-table tr[data-id="${JOKO}"]`).click();
    await page.locator('#detail h2', { hasText: 'Joko Santoso' }).waitFor();
    expect((await http(s.url, 'GET', `/v1/admin/users/${JOKO}`, { token: ADMIN_TOKEN })).status).toBe(200);

    // Diff the backup against the store: Joko is the same again.
    await tab(page, 'backups');
    await page.locator('#bk-q').fill(deleteBackup);
    await page.locator(`#bk-table tbody tr[data-id="${deleteBackup}"] button`, { hasText: 'Diff' }).click();
    await page.locator('#bk-panel h3', { hasText: `Changes since ${deleteBackup}` }).waitFor();
    expect(await page.locator('#bk-panel .diff-sum').textContent()).toContain('1 unchanged');

    // Prune: dry run, Cancel sends nothing, OK removes what the dry run listed. Two more full backups, so
    // keep-last 1 has something to remove (the restore above overwrote nothing and wrote no backup).
    for (let i = 0; i < 2; i++) expect((await http(s.url, 'POST', '/v1/admin/backups', { token: ADMIN_TOKEN, json: {} })).status).toBe(201);
    await page.locator('#bk-q').fill('');
    await page.locator('#bk-prune-open').click();
    await page.locator('#pr-last').fill('1');
    await page.locator('#prune-preview').click();
    await page.locator('#prune-result h4', { hasText: 'Dry run' }).waitFor();
    const listed = await page.locator('#prune-result .cols > div:nth-child(2) .row .mono').allTextContents();
    expect(listed.length).toBeGreaterThan(0);
    await page.locator('#prune-result button.danger').click();
    await answer(page, 'cancel');
    expect(calls.filter((c) => c.path === '/v1/admin/prune' && destructive(c))).toEqual([]);
    await page.locator('#prune-result button.danger').click();
    await answer(page, 'ok');
    await page.locator('#prune-result .result', { hasText: 'Removed' }).waitFor();
    const left = (await http<{ backups: { id: string }[] }>(s.url, 'GET', '/v1/admin/backups', { token: ADMIN_TOKEN })).body.backups.map((b) => b.id);
    for (const id of listed) expect(left).not.toContain(id);

    // Audit: each action, with who did it.
    await tab(page, 'audit');
    await until('audit rows', async () => (await page.locator('#au-table tbody tr td.actor').count()) >= 3);
    const rows = await page.locator('#au-table tbody tr').evaluateAll((trs) => trs.map((tr) => ({
      action: tr.children[2]?.textContent ?? '',
      actor: tr.querySelector('td.actor')?.textContent ?? '',
    })));
    // The page's own actions by the API actor; the fixture import (done in-process as the OS user) by that user.
    for (const action of ['Delete users', 'Restore', 'Prune']) {
      const mine = rows.filter((r) => r.action === action);
      expect(mine.length, action).toBeGreaterThan(0);
      for (const r of mine) expect(r.actor, action).toBe('adminAPI · 127.0.0.1');
    }
    const imported = rows.find((r) => r.action === 'Import');
    expect(imported?.actor).toMatch(/CLI$/);
    expect(imported?.actor).not.toMatch(/^admin/);

    // Clear all: refused until YES is typed exactly.
    await tab(page, 'danger');
    for (const typed of ['yes', 'YES ', ' YES', 'Yes', 'YESS']) {
      await page.locator('#dz-input').fill(typed);
      expect(await page.locator('#dz-clear').isDisabled(), typed).toBe(true);
      await page.locator('#dz-input').press('Enter');
    }
    await page.locator('#dz-clear').click({ force: true, timeout: 2_000 }).catch(() => undefined);
    expect(calls.filter((c) => c.path === '/v1/admin/clear')).toEqual([]);
    await page.locator('#dz-input').fill('YES');
    expect(await page.locator('#dz-clear').isDisabled()).toBe(false);
    await page.locator('#dz-clear').click();
    await page.locator('#dz-result .result', { hasText: 'Cleared' }).waitFor();
    expect(calls.filter((c) => c.path === '/v1/admin/clear').map((c) => c.body)).toEqual([{ confirm: 'YES' }]);
    expect((await http<{ users: number }>(s.url, 'GET', '/v1/admin/stats', { token: ADMIN_TOKEN })).body.users).toBe(0);

    // Every real restore and prune came after a dry run of the same request.
    const real = calls.filter((c) => (c.path === '/v1/admin/restore' || c.path === '/v1/admin/prune') && destructive(c));
    expect(real.map((c) => c.path)).toEqual(['/v1/admin/restore', '/v1/admin/prune']);
    for (const c of real) {
      const i = calls.indexOf(c);
      const dry = calls.slice(0, i).filter((d) => d.path === c.path && !destructive(d)).at(-1);
      expect(dry, `dry run before ${c.path}`).toBeDefined();
      expect({ ...(dry?.body as object), dryRun: false }).toEqual(c.body);
    }
    // Nothing from anywhere else, the token never in a URL, and no CSP violation or script error.
    for (const c of calls) expect(c.origin).toBe(s.url);
    for (const c of calls) expect(c.search.toString()).not.toContain(ADMIN_TOKEN);
    expect(errors).toEqual([]);
    await page.close();
  });

  it('shows complete search results, page by page of "Show more"', async () => {
    const page = await context.newPage();
    await signIn(page, s.url);
    await s.ctx.ops.importFile(path.join(FIXTURES, 'memory.json'));
    const all = (await http<{ items: { user_id: string }[] }>(s.url, 'GET', '/v1/admin/search?q=kak&limit=1000', { token: ADMIN_TOKEN })).body.items.map((u) => u.user_id);
    expect(all.length).toBeGreaterThan(100);
    await search(page, 'kak');
    expect(await page.locator('#user-table tbody tr[data-id]').count()).toBe(50);
    for (let i = 0; i < 10 && (await page.locator('#user-more').isVisible()); i++) {
      const before = await page.locator('#user-table tbody tr[data-id]').count();
      await page.locator('#user-more').click();
      await until('more rows', async () => (await page.locator('#user-table tbody tr[data-id]').count()) > before);
    }
    const shown = await page.locator('#user-table tbody tr[data-id]').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-id')));
    expect(shown).toEqual(all);
    expect(await page.locator('#user-info').textContent()).toBe(`${all.length} results for “kak”`);
    await page.close();
  });

  it('puts untrusted text on the page as text, and flag values wrap at phone width', async () => {
    // Untrusted text where the page shows names, chat and flags; a flag value far wider than a phone.
    const r = await http(s.url, 'PUT', `/v1/users/${EVIL}`, {
      json: { name: EVIL_NAME, product: '<script>window.__xss=2</script>', flags: { note: '<b>bold</b>', long_value: 'x'.repeat(180), path: ['cek_mcb', 'cek_kabel', 'cek_saklar', 'cek_remote', 'cek_filter'] } },
    });
    expect(r.status).toBe(200);
    expect((await http(s.url, 'POST', `/v1/users/${EVIL}/history`, { json: { role: 'user', text: '</div><script>window.__xss=3</script>' } })).status).toBe(201);
    const page = await context.newPage();
    const errors = problems(page);
    await page.setViewportSize({ width: 390, height: 844 });
    await signIn(page, s.url);
    await search(page, EVIL);
    await page.locator(`#user-table tr[data-id="${EVIL}"]`).click();
    await page.locator('#detail h2').filter({ hasText: EVIL_NAME }).waitFor();
    expect(await page.locator('#detail .msg .text').first().textContent()).toBe('</div><script>window.__xss=3</script>');
    expect(await inPage(page, 'typeof window.__xss')).toBe('undefined');
    expect(await page.locator('#detail img, #detail b:text("bold"), #detail script').count()).toBe(0);
    // Not clipped: the long value's cell shows all of it, and nothing is wider than the phone.
    const cell = page.locator('#detail table.kv td', { hasText: 'xxxxxxxx' });
    const fit = await cell.evaluate((td) => ({ scroll: td.scrollWidth, client: td.clientWidth, right: td.getBoundingClientRect().right }));
    expect(fit.scroll).toBeLessThanOrEqual(fit.client);
    expect(fit.right).toBeLessThanOrEqual(390);
    expect(await inPage<number>(page, 'document.documentElement.scrollWidth')).toBeLessThanOrEqual(390);
    expect(errors).toEqual([]);
    await page.close();
  });

  it('filters and pages the backup list; on a phone a page stays short', async () => {
    for (let i = 0; i < 12; i++) {
      expect((await http(s.url, 'POST', '/v1/admin/backups', { token: ADMIN_TOKEN, json: {} })).status).toBeLessThan(300);
    }
    const listedNow = (await http<{ backups: { reason?: string | null }[] }>(s.url, 'GET', '/v1/admin/backups', { token: ADMIN_TOKEN })).body.backups;
    const total = listedNow.length;
    // Earlier tests of this file made manual backups too.
    const manualTotal = listedNow.filter((b) => b.reason === 'manual').length;
    expect(total).toBeGreaterThanOrEqual(12);
    const page = await context.newPage();
    await page.setViewportSize({ width: 390, height: 844 });
    await signIn(page, s.url);
    await tab(page, 'backups');
    await until('first page', async () => (await page.locator('#bk-table tbody tr[data-id]').count()) === 5);
    expect(await page.locator('#bk-info').textContent()).toContain(`of ${total} backups`);
    const first = await page.locator('#bk-table tbody tr[data-id]').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-id')));
    // Far below the 3,650 px that 12 unpaged backups took.
    expect(await inPage<number>(page, 'document.documentElement.scrollHeight')).toBeLessThan(2600);
    await page.locator('#bk-next').click();
    const second = await page.locator('#bk-table tbody tr[data-id]').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-id')));
    expect(second).toHaveLength(5);
    for (const id of second) expect(first).not.toContain(id);
    await page.locator('#bk-reason').selectOption('manual');
    const manual = await page.locator('#bk-table tbody tr[data-id]').count();
    expect(manual).toBe(5);
    expect(await page.locator('#bk-info').textContent()).toMatch(new RegExp(`of ${manualTotal} backups \\(filtered from \\d+\\)`));
    await page.locator('#bk-q').fill(first[0] ?? '');
    expect(await page.locator('#bk-table tbody tr[data-id]').count()).toBe(1);
    await page.close();
  });

  it('says who is logged in when the daemon tells, and stays quiet when it cannot', async () => {
    // GET /v1/admin/whoami comes with named tokens; here its two answers are played by the test.
    const named = await context.newPage();
    await named.route('**/v1/admin/whoami', (route) => route.fulfill({ status: 200, contentType: 'application/json', body: JSON.stringify({ name: 'alice' }) }));
    await signIn(named, s.url);
    await until('whoami label', async () => (await named.locator('#whoami').textContent()) === 'Logged in as alice');
    await named.close();

    const old = await context.newPage();
    const calls = spy(old);
    await old.route('**/v1/admin/whoami', (route) => route.fulfill({ status: 404, contentType: 'application/json', body: JSON.stringify({ error: { code: 'E_NOT_FOUND', message: 'no route' } }) }));
    await signIn(old, s.url);
    await until('whoami asked', () => calls.some((c) => c.path === '/v1/admin/whoami'));
    await until('overview loaded', async () => (await old.locator('#ov-stats .stat').count()) > 0);
    expect(await old.locator('#whoami').textContent()).toBe('Signed in');
    expect(await old.locator('#banner').isHidden()).toBe(true);
    expect(await old.locator('#tabs').isVisible()).toBe(true);
    await old.close();
  });
});
