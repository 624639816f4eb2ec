import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Builds the admin page (src/web/page.generated.ts) that src/server/app.ts serves.
    globalSetup: ['test/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Two cores: keep file-level parallelism modest so process/crash tests stay deterministic.
    maxWorkers: 2,
  },
});
