import { errnoCode } from '../errors.js';
import { CLIError } from './errors.js';

/**
 * Imports a module of this package that may be absent from a build (the daemon and its client are
 * optional pieces). The specifier is resolved against this file, like a static import from src/cli/.
 */
export async function importOptional<T>(specifier: string, what: string): Promise<T> {
  // A non-literal specifier keeps the compiler from requiring the module at build time.
  const spec: string = specifier;
  try {
    return (await import(spec)) as T;
  } catch (err) {
    const message = err instanceof Error ? err.message : '';
    const name = spec.replace(/^.*\//, '').replace(/\.js$/, '');
    if ((errnoCode(err) === 'ERR_MODULE_NOT_FOUND' || /Cannot find module|Failed to load url/i.test(message)) && message.includes(name)) {
      throw new CLIError('E_UNAVAILABLE', `${what} is not part of this build (${spec} is missing)`, { cause: err });
    }
    throw err;
  }
}
