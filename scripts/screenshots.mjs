// Screenshots of the admin page's main screens at desktop (1280×800) and phone (390×844) width, into
// docs/screenshots/. Runs the built daemon (dist/) on 127.0.0.1 over a temp SQLite store with the 200-user
// seed fixture, in Debian's Chromium (CHATMEM_CHROMIUM overrides the path). `npm run screenshots`.
import { mkdtemp, mkdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { resolveConfig } from '../dist/config.js';
import { openContext } from '../dist/context.js';
import { buildApp } from '../dist/server/app.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const out = path.join(root, 'docs', 'screenshots');
const TOKEN = 'screenshots-admin-token-0123456789';
const USER = '628161973069';
const CHROMIUM = process.env.CHATMEM_CHROMIUM ?? '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];

const dir = await mkdtemp(path.join(tmpdir(), 'chatmem-shots-'));
const config = await resolveConfig({ cwd: dir, store: `sqlite:${path.join(dir, 'data', 'memory.db')}`, env: {} });
const ctx = await openContext(config, { role: 'daemon' });
const app = await buildApp({ ctx, adminToken: TOKEN, apiToken: null, logger: false });
await app.listen({ host: '127.0.0.1', port: 0 });
const url = `http://127.0.0.1:${app.server.address().port}`;
const browserDir = path.join(dir, 'chromium');

try {
  await ctx.ops.importFile(path.join(root, 'test', 'fixtures', 'seed-format', 'memory.json'));
  for (let i = 0; i < 11; i++) await ctx.ops.createBackup({ reason: i % 3 ? 'scheduled' : 'manual', gzip: i % 4 === 0 });
  await mkdir(out, { recursive: true });
  const browser = await chromium.launchPersistentContext(browserDir, { executablePath: CHROMIUM, args: ARGS, headless: true, timezoneId: 'UTC', locale: 'en-US' });
  for (const [name, viewport] of [['desktop', { width: 1280, height: 800 }], ['phone', { width: 390, height: 844 }]]) {
    // A persistent context ignores per-page options: size the page itself, before it loads.
    const page = await browser.newPage();
    await page.setViewportSize(viewport);
    const shot = async (screen, selector) => {
      if (selector) await page.locator(selector).first().scrollIntoViewIfNeeded();
      await page.waitForTimeout(400); // smooth scrolling settles
      await page.screenshot({ path: path.join(out, `${name}-${screen}.png`) });
      console.log(`docs/screenshots/${name}-${screen}.png`);
    };
    await page.goto(url + '/admin');
    await page.locator('#token-input').fill(TOKEN);
    await page.locator('#login-form button[type=submit]').click();
    await page.locator('#tabs').waitFor();

    // Users and a user's chat.
    await page.locator('#tabs [data-tab="users"]').click();
    await page.locator('#user-q').fill(USER);
    await page.locator('#user-search button[type=submit]').click();
    await page.locator(`#user-table tr[data-id="${USER}"]`).click();
    await page.locator('#detail .chat').waitFor();
    await shot('users-chat', name === 'phone' ? '#detail' : null);

    // Delete the user, so the backups list has a "Before delete" backup to restore them from.
    await page.locator('#detail button', { hasText: 'Delete user…' }).click();
    await page.locator('#dlg-ok').click();
    await page.locator('#detail .result code').waitFor();
    const deleteBackup = await page.locator('#detail .result code').textContent();

    // Backups.
    await page.locator('#tabs [data-tab="backups"]').click();
    await page.locator(`#bk-table tbody tr[data-id]`).first().waitFor();
    await page.evaluate(() => window.scrollTo(0, 0));
    await shot('backups');

    // Restore preview (dry run) of the deleted user.
    await page.locator('#bk-q').fill(USER);
    await page.locator(`#bk-table tbody tr[data-id="${deleteBackup}"] button`, { hasText: 'Restore…' }).click();
    await page.locator('#bk-panel button', { hasText: 'Preview changes (dry run)' }).click();
    await page.locator('#bk-panel .restore-preview h4').first().waitFor();
    await shot('restore-preview');
    await page.locator('#bk-panel button', { hasText: 'Restore now…' }).click();
    await page.locator('#dlg-ok').click();
    await page.locator('#bk-panel .restore-preview .result').waitFor();
    await page.locator('#bk-q').fill('');

    // Audit log.
    await page.locator('#tabs [data-tab="audit"]').click();
    await page.locator('#au-table tbody td.actor').first().waitFor();
    await shot('audit');
    await page.close();
  }
  await browser.close();
} finally {
  await app.close();
  await ctx.close();
  await rm(dir, { recursive: true, force: true });
}
