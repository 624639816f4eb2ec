import { OffsiteService } from '../../offsite/service.js';
import type { Command } from '../command.js';
import { CLIError, usage } from '../errors.js';
import { formatCount } from '../output.js';

export const offsite: Command = {
  name: 'offsite',
  summary: 'Off-site copies: `offsite sync` uploads the verified backups not yet off-site',
  args: 'sync',
  positionals: { min: 1, max: 1 },
  description:
    'The target is `offsite` in the config, --offsite s3://BUCKET/PREFIX or CHATMEM_OFFSITE; credentials from AWS_ACCESS_KEY_ID and ' +
    'AWS_SECRET_ACCESS_KEY, endpoint CHATMEM_S3_ENDPOINT. Every verified backup is copied on its own; sync catches up what a failed or ' +
    'interrupted upload left, and names the backups that are off-site only.',
  async run(ctx) {
    const { out, config } = ctx;
    const [sub] = ctx.positionals;
    if (sub !== 'sync') throw usage(`unknown offsite subcommand ${JSON.stringify(sub)}; usage: chatmem offsite sync`);
    if (!config.offsite) throw new CLIError('E_OFFSITE_CONFIG', 'no off-site target: set `offsite` in the config, --offsite s3://BUCKET/PREFIX or CHATMEM_OFFSITE');
    const local = (await ctx.read((a) => a.listBackups(), { allowMissingStore: true })).filter((b) => b.location !== 'offsite');
    const service = new OffsiteService(config.offsite.target(), config.backupDir, {
      maxAttempts: 3,
      baseDelayMs: 500,
      log: (level, message) => (level === 'warn' ? out.warn(message) : out.note(message)),
    });
    const { queued, offsiteOnly } = await service.syncMissing(local);
    await service.idle();
    const failed = service.gaveUp.map((g) => g.fileName);
    const uploaded = queued.filter((q) => !failed.includes(q));
    if (out.json) out.data({ target: service.display, uploaded, failed: service.gaveUp, offsiteOnly });
    else {
      out.out(`${service.display}: uploaded ${formatCount(uploaded.length)}${uploaded.length ? ` (${uploaded.join(', ')})` : ''}; ${formatCount(local.length - queued.length)} already off-site or not verified`);
      if (offsiteOnly.length) out.out(`off-site only (no local copy; fetched on demand by show, verify, diff and restore): ${offsiteOnly.join(', ')}`);
    }
    if (service.gaveUp.length > 0) {
      const first = service.gaveUp[0];
      throw new CLIError(first?.error.code ?? 'E_OFFSITE_REQUEST', `${failed.length} backup${failed.length === 1 ? '' : 's'} not uploaded: ${first?.error.message ?? ''}`);
    }
  },
};
