/** The admin contract: one interface, run in this process or in a daemon, over one table of routes. */
export type { Admin, InspectResult, ProgressFn, RestoreRequest, WhoAmI } from './types.js';
export { LocalAdmin, type LocalAdminOptions } from './local.js';
export { RemoteAdmin, type RemoteAdminOptions } from './remote.js';
export { ADMIN_API, type AdminAction, type AdminRequest, type AdminInput } from './api.js';
