import { BaseListChatMessageHistory } from '@langchain/core/chat_history';
import {
  AIMessage,
  HumanMessage,
  SystemMessage,
  mapChatMessagesToStoredMessages,
  mapStoredMessagesToChatMessages,
  type BaseMessage,
  type StoredMessage,
} from '@langchain/core/messages';
import {
  BaseStore,
  type GetOperation,
  type Item,
  type ListNamespacesOperation,
  type Operation,
  type OperationResults,
  type PutOperation,
  type SearchItem,
  type SearchOperation,
} from '@langchain/langgraph-checkpoint';
import { ChatmemClient } from '../client.js';
import type { HistoryEntry, HistoryInput, MemoryRecord } from '../record.js';

/** Where the adapters find the daemon: a client, or what it takes to make one. */
export type ChatmemConnection = { client: ChatmemClient } | { baseUrl: string; apiToken?: string; adminToken?: string };

function clientOf(c: ChatmemConnection): ChatmemClient {
  return 'client' in c ? c.client : new ChatmemClient({ baseUrl: c.baseUrl, apiToken: c.apiToken ?? c.adminToken });
}

// chatmem's roles are the seed's (user, assistant); LangChain's are its message types.
const ROLE_OF: Record<string, string> = { human: 'user', ai: 'assistant', system: 'system', tool: 'tool', function: 'function', generic: 'user' };

function textOf(message: BaseMessage): string {
  const c = message.content;
  if (typeof c === 'string') return c;
  return c.map((part) => (typeof part === 'object' && part !== null && 'text' in part && typeof part.text === 'string' ? part.text : '')).join('');
}

/** A turn the seed's tools can read (role and text), with LangChain's own form kept in `meta.lc` for a faithful round trip. */
function toEntry(message: BaseMessage): HistoryInput {
  const [stored] = mapChatMessagesToStoredMessages([message]);
  const entry: HistoryInput = { role: ROLE_OF[message.getType()] ?? 'user', text: textOf(message), meta: { lc: stored } };
  if (typeof message.id === 'string' && message.id !== '') entry.id = message.id;
  return entry;
}

function fromEntry(entry: HistoryEntry): BaseMessage {
  const lc = entry.meta?.lc as StoredMessage | undefined;
  if (lc && typeof lc === 'object' && typeof lc.type === 'string') {
    const [message] = mapStoredMessagesToChatMessages([lc]);
    if (message) return message;
  }
  // A turn written by the seed bot or another client: role and text are all there is.
  const fields = { content: entry.text, ...(entry.id ? { id: entry.id } : {}) };
  if (entry.role === 'assistant' || entry.role === 'bot' || entry.role === 'ai') return new AIMessage(fields);
  if (entry.role === 'system') return new SystemMessage(fields);
  return new HumanMessage(fields);
}

/**
 * A LangChain chat history kept in one chatmem user's `history`. Messages keep their ids, tool calls and
 * types across instances; the seed's tools still see role and text. The daemon's history cap applies.
 */
export class ChatmemMessageHistory extends BaseListChatMessageHistory {
  lc_namespace = ['chatmem', 'langchain'];
  private readonly client: ChatmemClient;
  readonly userId: string;

  constructor(options: ChatmemConnection & { userId: string }) {
    super();
    this.client = clientOf(options);
    this.userId = options.userId;
  }

  async getMessages(): Promise<BaseMessage[]> {
    const record = await this.client.getUser(this.userId);
    return (record?.history ?? []).map(fromEntry);
  }

  async addMessage(message: BaseMessage): Promise<void> {
    await this.addMessages([message]);
  }

  /** One request for the whole list; messages with an id chatmem already holds are not added twice. */
  override async addMessages(messages: BaseMessage[]): Promise<void> {
    if (messages.length === 0) return;
    await this.client.appendHistoryMany(this.userId, messages.map(toEntry));
  }

  /** Empties the history through chatmem's guarded path: the dropped turns go to a backup first. */
  override async clear(): Promise<void> {
    await this.client.truncateHistory(this.userId, 0);
  }
}

type Field = 'flags' | 'slots';
const FIELDS: readonly Field[] = ['flags', 'slots'];

function fieldOf(namespace: string[]): { userId: string; field: Field } | null {
  const [userId, field, ...rest] = namespace;
  if (userId === undefined || rest.length > 0 || !FIELDS.includes(field as Field)) return null;
  return { userId, field: field as Field };
}

/** BaseStore values are objects; a slot such as "Bandung" written by the bot comes back as `{ value: "Bandung" }`. */
function asValue(v: unknown): Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : { value: v };
}

function itemsOf(record: MemoryRecord, field: Field): Item[] {
  const at = new Date(record.updated_at);
  return Object.entries(record[field]).map(([key, v]) => ({ key, namespace: [record.user_id, field], value: asValue(v), createdAt: new Date(record.created_at), updatedAt: at }));
}

function matches(value: Record<string, unknown>, filter: Record<string, unknown> | undefined): boolean {
  if (!filter) return true;
  return Object.entries(filter).every(([k, v]) => JSON.stringify(value[k]) === JSON.stringify(v));
}

/**
 * LangGraph's long-term memory store over chatmem users: namespace `[userId, 'slots']` is that user's
 * slots, `[userId, 'flags']` their flags. Each put is one atomic write on the daemon; `null` deletes.
 * Semantic search (`query`) is not supported: chatmem has no embeddings.
 */
export class ChatmemStore extends BaseStore {
  private readonly client: ChatmemClient;

  constructor(options: ChatmemConnection) {
    super();
    this.client = clientOf(options);
  }

  async batch<Op extends Operation[]>(operations: Op): Promise<OperationResults<Op>> {
    const results: unknown[] = [];
    // In order: a get after a put in the same batch must see the put.
    for (const op of operations) {
      if ('key' in op && 'value' in op) results.push(await this.put1(op));
      else if ('key' in op) results.push(await this.get1(op));
      else if ('namespacePrefix' in op) results.push(await this.search1(op));
      else results.push(await this.list1(op as ListNamespacesOperation));
    }
    return results as OperationResults<Op>;
  }

  private async get1(op: GetOperation): Promise<Item | null> {
    const ns = fieldOf(op.namespace);
    if (!ns) return null;
    const record = await this.client.getUser(ns.userId);
    return record ? (itemsOf(record, ns.field).find((i) => i.key === op.key) ?? null) : null;
  }

  private async put1(op: PutOperation): Promise<void> {
    const ns = fieldOf(op.namespace);
    if (!ns) throw new Error(`chatmem stores only the namespaces [userId, "slots"] and [userId, "flags"], got ${JSON.stringify(op.namespace)}`);
    if (op.value === null) {
      if (!(await this.client.getUser(ns.userId))) return;
      await (ns.field === 'flags' ? this.client.clearFlag(ns.userId, op.key) : this.client.clearSlot(ns.userId, op.key));
      return;
    }
    await (ns.field === 'flags' ? this.client.setFlag(ns.userId, op.key, op.value) : this.client.setSlot(ns.userId, op.key, op.value));
  }

  private async search1(op: SearchOperation): Promise<SearchItem[]> {
    if (op.query) throw new Error('chatmem has no semantic search: use filter, or search without query');
    const [userId, field, ...rest] = op.namespacePrefix;
    if (userId === undefined || rest.length > 0 || (field !== undefined && !FIELDS.includes(field as Field))) return [];
    const record = await this.client.getUser(userId);
    if (!record) return [];
    const items = (field === undefined ? FIELDS : [field as Field]).flatMap((f) => itemsOf(record, f)).filter((i) => matches(i.value, op.filter));
    const offset = op.offset ?? 0;
    return items.slice(offset, offset + (op.limit ?? 10));
  }

  private async list1(op: ListNamespacesOperation): Promise<string[][]> {
    const out: string[][] = [];
    let cursor: string | null = null;
    const want = op.offset + op.limit;
    do {
      const page = await this.client.listUsers({ cursor, limit: 1000 });
      for (const u of page.items) for (const f of FIELDS) out.push([u.user_id, f]);
      cursor = page.next;
    } while (cursor !== null && out.length < want);
    const filtered = out.filter((ns) =>
      (op.matchConditions ?? []).every((c) => {
        const part = c.matchType === 'prefix' ? ns.slice(0, c.path.length) : ns.slice(-c.path.length);
        return part.length === c.path.length && c.path.every((p, i) => p === '*' || p === part[i]);
      }),
    );
    const depth = op.maxDepth;
    const cut = depth === undefined ? filtered : [...new Map(filtered.map((ns) => [JSON.stringify(ns.slice(0, depth)), ns.slice(0, depth)])).values()];
    return cut.slice(op.offset, op.offset + op.limit);
  }
}
