import type { FastifyPluginAsync, FastifyPluginOptions } from 'fastify';

/**
 * A plugin whose hooks, decorators and handlers apply to the whole app rather than to its own
 * encapsulated context (what the fastify-plugin package does, without the dependency).
 */
export function globalPlugin<O extends FastifyPluginOptions>(plugin: FastifyPluginAsync<O>): FastifyPluginAsync<O> {
  Object.assign(plugin, { [Symbol.for('skip-override')]: true });
  return plugin;
}
