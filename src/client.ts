/**
 * `chatmem/client`: a small typed client for the chatmem daemon's HTTP API. It uses the global
 * `fetch` and imports no server code, so a bot pays for nothing it does not call.
 */
import type { HistoryInput, MemoryRecord, RecordInput, RecordPatch } from './record.js';
import type { Page, StoreStats, UserSummary } from './store/types.js';
import { call, orNull, queryString, seg, type FetchFn, type Transport } from './http-call.js';

export type { HistoryInput, MemoryRecord, RecordInput, RecordPatch, Page, StoreStats, UserSummary };
export { RemoteError } from './http-call.js';

export interface ChatmemClientOptions {
  /** The daemon, e.g. `http://127.0.0.1:8737`. */
  baseUrl: string;
  /** `CHATMEM_API_TOKEN` of the daemon, when it requires one. */
  apiToken?: string;
  /** A fetch implementation (default: the global one). */
  fetch?: FetchFn;
  /** Per-request timeout in ms (default 10 000; 0 disables). */
  timeoutMs?: number;
}

/** The data API, for chatbots. Every method throws {@link RemoteError} on failure. */
export class ChatmemClient {
  private readonly t: Transport;

  constructor(options: ChatmemClientOptions) {
    this.t = {
      baseUrl: options.baseUrl,
      token: options.apiToken ?? null,
      fetch: options.fetch ?? globalThis.fetch,
      timeoutMs: options.timeoutMs ?? 10_000,
    };
  }

  /** The user's record, or null when the user does not exist. */
  getUser(id: string): Promise<MemoryRecord | null> {
    return orNull(call<MemoryRecord>(this.t, 'GET', `/v1/users/${seg(id)}`));
  }

  /** Replaces the record (creating the user). Unknown fields are kept. */
  putUser(id: string, record: RecordInput): Promise<MemoryRecord> {
    return call(this.t, 'PUT', `/v1/users/${seg(id)}`, record);
  }

  /** Top-level merge; `flags` and `slots` merge key by key (null removes a key). Creates the user. */
  patchUser(id: string, patch: RecordPatch): Promise<MemoryRecord> {
    return call(this.t, 'PATCH', `/v1/users/${seg(id)}`, patch);
  }

  /** Appends a chat turn (`ts` defaults to now); a `user` turn also becomes `last_answer`. Creates the user. */
  appendHistory(id: string, entry: HistoryInput): Promise<MemoryRecord> {
    return call(this.t, 'POST', `/v1/users/${seg(id)}/history`, entry);
  }

  /**
   * Appends turns in order, in one write. Give each entry an `id` (e.g. the WhatsApp message id): an entry
   * whose id the user's history already holds is skipped, so a retry or a re-sent list never duplicates.
   */
  appendHistoryMany(id: string, entries: HistoryInput[]): Promise<MemoryRecord> {
    return call(this.t, 'POST', `/v1/users/${seg(id)}/history`, entries);
  }

  /** The user's record, created (with a session token, as the seed's store did) when unknown. */
  ensureUser(id: string): Promise<MemoryRecord> {
    return call(this.t, 'GET', `/v1/users/${seg(id)}?ensure=true`);
  }

  /** One flag without downloading the record: `found` is false when the flag is not set. */
  getFlag(id: string, key: string): Promise<{ key: string; found: boolean; value: unknown }> {
    return call(this.t, 'GET', `/v1/users/${seg(id)}/flags/${seg(key)}`);
  }

  /** One slot without downloading the record. */
  getSlot(id: string, key: string): Promise<{ key: string; found: boolean; value: unknown }> {
    return call(this.t, 'GET', `/v1/users/${seg(id)}/slots/${seg(key)}`);
  }

  /** A new session token for the user (created when unknown). */
  async refreshSessionToken(id: string): Promise<string> {
    const r = await call<MemoryRecord>(this.t, 'POST', `/v1/users/${seg(id)}/session-token`);
    return r.session_token ?? '';
  }

  /** A distinct `summary_context` entry (newest `maxItems`, default 15, kept) and recognised product/serials, atomically. */
  addContext(id: string, input: { text?: string; maxItems?: number; product?: string; serials?: string[] }): Promise<MemoryRecord> {
    return call(this.t, 'POST', `/v1/users/${seg(id)}/context`, input);
  }

  /** Keeps the newest `keepLast` turns; the dropped ones are first written to a per-user backup. */
  truncateHistory(id: string, keepLast: number): Promise<{ record: MemoryRecord; dropped: number; backup: string | null }> {
    return call(this.t, 'POST', `/v1/users/${seg(id)}/history/truncate`, { keepLast });
  }

  setFlag(id: string, key: string, value: unknown): Promise<MemoryRecord> {
    return call(this.t, 'PUT', `/v1/users/${seg(id)}/flags/${seg(key)}`, { value });
  }

  /** Removes a flag; a missing flag is not an error, a missing user is (`E_UNKNOWN_USER`). */
  clearFlag(id: string, key: string): Promise<MemoryRecord> {
    return call(this.t, 'DELETE', `/v1/users/${seg(id)}/flags/${seg(key)}`);
  }

  setSlot(id: string, key: string, value: unknown): Promise<MemoryRecord> {
    return call(this.t, 'PUT', `/v1/users/${seg(id)}/slots/${seg(key)}`, { value });
  }

  /** Removes a slot; a missing slot is not an error, a missing user is (`E_UNKNOWN_USER`). */
  clearSlot(id: string, key: string): Promise<MemoryRecord> {
    return call(this.t, 'DELETE', `/v1/users/${seg(id)}/slots/${seg(key)}`);
  }

  /** Sets several slots verbatim (a null value is stored as null). */
  fillSlots(id: string, values: Record<string, unknown>): Promise<MemoryRecord> {
    return call(this.t, 'POST', `/v1/users/${seg(id)}/slots`, { values });
  }

  /** One page of users in id order; pass `next` back as `cursor` for the following page. */
  listUsers(options: { cursor?: string | null; limit?: number } = {}): Promise<Page<UserSummary>> {
    return call(this.t, 'GET', `/v1/users${queryString({ cursor: options.cursor, limit: options.limit })}`);
  }

  /** Case-insensitive keyword search over product, summary and chat text. */
  async search(query: string, options: { limit?: number } = {}): Promise<UserSummary[]> {
    const r = await call<{ items: UserSummary[] }>(this.t, 'GET', `/v1/search${queryString({ q: query, limit: options.limit })}`);
    return r.items;
  }

  stats(): Promise<StoreStats> {
    return call(this.t, 'GET', '/v1/stats');
  }
}
