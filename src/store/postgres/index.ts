export { PostgresDriver } from './driver.js';
export type { PostgresConnectOptions } from './config.js';
export { POSTGRES_SCHEMA_VERSION } from './migrations.js';
