export { SqliteDriver } from './driver.js';
