import { resolveConfig, type ConfigOverrides, type ResolvedConfig } from '../config.js';
import { readDaemonMemo } from '../server/daemon-info.js';
import type { Output } from './output.js';

const SOURCE: Record<string, string> = { flag: '--store', env: 'CHATMEM_STORE', config: 'the config file' };

/**
 * When no store is named (no --store, CHATMEM_STORE or config `store`), a command acts on the store
 * of the daemon `chatmem start --store X` started from this directory, and says so: otherwise
 * `chatmem status` or `chatmem delete` would silently look at the default store instead.
 * A store named explicitly wins, with a note when it is not the daemon's.
 */
export async function withRememberedStore(config: ResolvedConfig, overrides: ConfigOverrides, out: Output): Promise<ResolvedConfig> {
  const memo = await readDaemonMemo(config);
  if (!memo || memo.store === config.store.display) return config;
  if (config.storeSource !== 'default') {
    if (memo.running) {
      out.note(`note: the daemon started with \`chatmem start\` (pid ${memo.pid}) serves ${memo.store}; this command uses ${config.store.display} from ${SOURCE[config.storeSource] ?? config.storeSource}`);
    }
    return config;
  }
  const env = overrides.env ?? process.env;
  const next = await resolveConfig({
    ...overrides,
    store: memo.storeUrl,
    storeSource: 'daemon',
    ...(overrides.backupDir === undefined && !env.CHATMEM_BACKUP_DIR ? { backupDir: memo.backupDir } : {}),
  });
  out.note(
    `note: using ${next.store.display}, the store of the daemon started with \`chatmem start\` (pid ${memo.pid}${memo.running ? '' : ', no longer running'}); ` +
      `--store names another; \`chatmem stop\` forgets it`,
  );
  return next;
}
