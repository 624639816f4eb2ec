import { assertStoreExists } from '../store-check.js';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { openContext } from '../../context.js';
import { errnoCode } from '../../errors.js';
import { exportStore } from '../../ops/export.js';
import { flag, type Command } from '../command.js';
import { CLIError, EXIT, usage } from '../errors.js';
import { formatBytes, formatCount } from '../output.js';
import { warningsOf } from './remove.js';

export const importCmd: Command = {
  name: 'import',
  summary: 'Import a seed memory.json or any backup (users it overwrites are backed up first)',
  args: 'FILE',
  positionals: { min: 1, max: 1 },
  confirms: true,
  description:
    'Reads the seed\'s memory.json, its clear-script backups, its per-user reset files, and chatmem backups (.json or .json.gz).\n' +
    'Every record is validated before anything is written. Into a store that already has users, it asks y/n first.',
  async run(ctx) {
    const { out, config } = ctx;
    const file = ctx.resolvePath(ctx.positionals[0] ?? '');
    try {
      await fsp.access(file);
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') throw new CLIError('E_NOT_FOUND', `no such file: ${file}`);
      throw err;
    }
    if (file === config.store.file) throw usage(`${file} is the store itself`);
    const { users } = await ctx.read((a) => a.stats(), { allowMissingStore: true });
    // An empty store has nothing to lose, so the first import of the seed's memory.json needs no question.
    if (users > 0) {
      if (!out.json || (!ctx.yes && ctx.prompt.interactive)) {
        out.say(`${config.store.display} has ${formatCount(users)} users; users that are also in the file are replaced by the file's version (backed up first).`);
      }
      await ctx.prompt.confirm(`Import ${file}?`, `import into a store that has ${formatCount(users)} users`);
    }
    const r = await ctx.write('import', (a) => a.importFile(file), { hooks: true, progress: 'import', allowMissingStore: true });
    const backupFile = r.backup ? path.join(config.backupDir, `${r.backup}.json`) : null;
    if (out.json) {
      out.data({ file, imported: r.imported, overwritten: r.overwritten, backup: r.backup, backupFile, ...warningsOf(ctx, r) });
      return;
    }
    warningsOf(ctx, r);
    if (backupFile) out.out(`Backup: ${backupFile}`);
    out.out(`Imported ${formatCount(r.imported)} users from ${file}${r.overwritten ? ` (${formatCount(r.overwritten)} replaced)` : ''}`);
  },
};

export const exportCmd: Command = {
  name: 'export',
  summary: 'Write the whole store as one JSON file (python json.load reads it), or to stdout',
  args: '[FILE] [--force]',
  positionals: { min: 0, max: 1 },
  options: { force: { type: 'boolean', help: 'replace FILE if it exists' } },
  description: 'The chatmem line format: one user per line, keyed by user id, like the seed\'s memory.json. FILE ending in .gz is compressed.',
  async run(ctx) {
    const { out, config } = ctx;
    const target = ctx.positionals[0];
    if (target === undefined && out.json) throw usage('--json needs FILE: without FILE the export itself is written to stdout');
    const file = target !== undefined ? ctx.resolvePath(target) : null;
    if (file !== null) {
      if (file === config.store.file) throw usage(`${file} is the store itself`);
      const dir = path.dirname(file);
      if (!(await fsp.stat(dir).then((st) => st.isDirectory(), () => false))) throw new CLIError('E_NOT_FOUND', `cannot export to ${file}: no directory ${dir}`);
      if (!flag(ctx.values, 'force')) {
        try {
          await fsp.access(file);
          throw new CLIError('E_EXISTS', `${file} exists; pass --force to replace it`, { exitCode: EXIT.USAGE });
        } catch (err) {
          if (errnoCode(err) !== 'ENOENT') throw err;
        }
      }
    }
    // Exports read the store directly, read-only: the daemon has no bulk-read API, and a read-only
    // open neither claims the store nor disturbs its writer.
    await assertStoreExists(config);
    const opened = await openContext(config, { readOnly: true });
    const progress = out.progress('export');
    const onProgress = (n: number): void => progress.update(n, null);
    try {
      const written = await exportStore(opened.store, file ?? out.io.stdout, { gzip: file?.endsWith('.gz') ?? false, onProgress });
      if (file === null) return;
      progress.end();
      if (out.json) out.data({ exported: written.users, file, bytes: written.bytes, sha256: written.sha256, gzip: file.endsWith('.gz') });
      else out.out(`Exported ${formatCount(written.users)} users to ${file} (${formatBytes(written.bytes)})`);
    } finally {
      progress.end();
      await opened.close();
    }
  },
};
