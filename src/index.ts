/**
 * chatmem: the memory store of a chatbot, and the guarded operator tools around it.
 * Every destructive operation writes a verified backup first.
 */
export * from './errors.js';
export * from './record.js';
export type * from './store/types.js';
export { createStore, type StoreOptions } from './store/store.js';
export { openStore, openDriver, type OpenStoreOptions } from './store/open.js';
export { parseStoreUrl, redactUrl, DEFAULT_STORE_URL, type ParsedStoreUrl } from './store/url.js';
export { SqliteDriver } from './store/sqlite/index.js';
export { JsonFileDriver } from './store/json-file.js';
export { serializeSeed } from './format/seed.js';
export { resolveConfig, type ResolvedConfig, type ConfigOverrides } from './config.js';
export { openContext, type Context } from './context.js';
export { writeBackup, type BackupResult, type WriteBackupOptions } from './backup/create.js';
export { diffRecords, type DiffResult, type UserChange } from './backup/diff.js';
export { parseBackupName, resolveBackupId } from './backup/format.js';
export { writeBackupStream } from './format/line-writer.js';
export { findInLineBackup } from './format/line-reader.js';
export { readJsonEntries, type JsonEntry } from './format/json-entries.js';
export type { BackupManifest, BackupReason } from './backup/manifest.js';
export { planRetention, parseDuration, isEmptyPolicy, type RetentionPolicy, type RetentionPlan, type RetentionGroup, type RetentionInput } from './backup/retention.js';
export { openBackup, backupRecords, findBackupUser, type BackupSource } from './backup/source.js';
export { Operations, type BackupInfo, type DeleteResult, type RestoreOptions, type RestoreResult, type VerifyResult, type PruneResult } from './ops/operations.js';
export { AuditLog, currentOsActor, AUDIT_ACTIONS, resolveAuditAction, queryAudit, type Actor, type AuditEntry } from './ops/audit.js';
export { LocalAdmin } from './admin/local.js';
export { RemoteAdmin, type RemoteAdminOptions } from './admin/remote.js';
export type { Admin } from './admin/types.js';
export { exportStore } from './ops/export.js';
export { VERSION } from './version.js';
