import { existsSync } from 'node:fs';
import { chromium, type BrowserContext } from 'playwright-core';
import { describe, it } from 'vitest';
import { tempDir } from './tmp.js';

/** Debian's Chromium (`.ci/run` installs it); override with CHATMEM_CHROMIUM. */
export const CHROMIUM = process.env.CHATMEM_CHROMIUM ?? '/usr/bin/chromium';
export const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];

/**
 * Registers the tests of `body` when Chromium is installed. Otherwise, under CI=true a failing test says
 * why (never a silent skip); locally the suite is skipped with a warning.
 */
export function describeBrowser(name: string, body: () => void): void {
  if (existsSync(CHROMIUM)) {
    describe(name, body);
  } else if (process.env.CI === 'true') {
    describe(name, () => {
      it('finds Chromium', () => {
        throw new Error(`Chromium not found at ${CHROMIUM} (CI=true: not skipping); install Debian's chromium or set CHATMEM_CHROMIUM`);
      });
    });
  } else {
    console.warn(`Chromium not found at ${CHROMIUM}: skipping "${name}" (apt-get install chromium, or set CHATMEM_CHROMIUM). Under CI=true it fails instead.`);
    describe.skip(name, body);
  }
}

/** Headless Chromium on a fresh user-data dir, removed on close. */
export async function launchChromium(): Promise<{ context: BrowserContext; close: () => Promise<void> }> {
  const { dir, cleanup } = await tempDir('chatmem-chromium-');
  const context = await chromium.launchPersistentContext(dir, {
    executablePath: CHROMIUM,
    args: CHROMIUM_ARGS,
    headless: true,
    viewport: { width: 1280, height: 800 },
    timeout: 60_000,
  });
  return {
    context,
    close: async () => {
      await context.close();
      await cleanup();
    },
  };
}
