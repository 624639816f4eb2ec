// Stands in for `chatmem serve` (the CLI lives elsewhere) in process tests: resolves the config from
// the environment and working directory that startDaemon() gives it, and serves in the foreground.
import { resolveConfig } from '../../dist/config.js';
import { serve } from '../../dist/server/serve.js';

try {
  const config = await resolveConfig();
  await serve(config, {});
} catch (err) {
  console.error(`chatmem: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
}
