import { type Command } from '../command.js';
import { usage } from '../errors.js';
import { table } from '../output.js';

export const token: Command = {
  name: 'token',
  summary: 'Named admin tokens: add NAME (shown once), list, remove NAME',
  args: 'add NAME | list | remove NAME',
  description:
    'Each operator or tool gets its own admin token, so the audit log says whose it was. Only a hash is kept ' +
    '(data/admin-tokens.json, 0600); a running daemon sees additions and removals at once. The built-in token ' +
    '(CHATMEM_ADMIN_TOKEN or data/admin-token) keeps working under the name "admin".',
  positionals: { min: 1, max: 2 },
  async run(ctx) {
    const { out, config, positionals } = ctx;
    const [verb, name] = positionals;
    const mod = await import('../../server/admin-tokens.js');
    if (verb === 'add' && name !== undefined) {
      const t = await mod.addAdminToken(config, name);
      if (out.json) out.data(t);
      else {
        out.say(`chatmem: admin token "${t.name}" created; it is shown only this once and stored only as a hash:`);
        out.out(t.token);
      }
      return;
    }
    if (verb === 'remove' && name !== undefined) {
      await mod.removeAdminToken(config, name);
      if (out.json) out.data({ removed: name });
      else out.out(`Removed admin token "${name}"; the daemon refuses it from now on.`);
      return;
    }
    if (verb === 'list' && name === undefined) {
      const tokens = (await mod.readAdminTokens(mod.adminTokensFile(config))).map((t) => ({ name: t.name, created: t.created }));
      if (out.json) out.data({ tokens });
      else if (tokens.length === 0) out.out(`No named admin tokens (the built-in "${mod.BUILTIN_TOKEN_NAME}" token is not listed).`);
      else table(['NAME', 'CREATED (UTC)'], tokens.map((t) => [t.name, t.created])).forEach((l) => out.out(l));
      return;
    }
    throw usage('usage: chatmem token add NAME | chatmem token list | chatmem token remove NAME');
  },
};
