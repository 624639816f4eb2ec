import type { UIMessage } from 'ai';
import { ChatmemClient } from '../client.js';
import type { HistoryEntry, HistoryInput } from '../record.js';
import type { ChatmemConnection } from './langchain.js';

export type { ChatmemConnection } from './langchain.js';

/** The daemon's default address when neither an option nor `CHATMEM_URL` names one. */
const DEFAULT_URL = 'http://127.0.0.1:8737';

function textOf(message: UIMessage): string {
  return message.parts.map((p) => (p.type === 'text' ? p.text : '')).join('');
}

function toEntry(message: UIMessage): HistoryInput {
  // role/text for the seed's tools and the admin page; the parts (tool calls, files, reasoning) for the UI.
  const ui: Record<string, unknown> = { parts: message.parts };
  if (message.metadata !== undefined) ui.metadata = message.metadata;
  return { id: message.id, role: message.role, text: textOf(message), meta: { ui } };
}

function fromEntry(entry: HistoryEntry, index: number): UIMessage {
  const ui = entry.meta?.ui as { parts?: UIMessage['parts']; metadata?: unknown } | undefined;
  const role: UIMessage['role'] = entry.role === 'user' || entry.role === 'system' ? entry.role : 'assistant';
  const message: UIMessage = {
    // A turn the seed bot wrote has no id; a stable one keeps React keys and later saves consistent.
    id: entry.id ?? `chatmem-${index}-${entry.ts}`,
    role,
    parts: Array.isArray(ui?.parts) ? ui.parts : [{ type: 'text', text: entry.text }],
  };
  if (ui?.metadata !== undefined) message.metadata = ui.metadata;
  return message;
}

/** Chat persistence for the AI SDK (`useChat` and `streamText`'s `onFinish`), one chatmem user per chat. */
export interface ChatmemChats {
  /** The chat's messages, oldest first; `[]` for a chat chatmem has not seen. */
  loadChat(chatId: string): Promise<UIMessage[]>;
  /**
   * Saves the whole list the UI holds. Only messages chatmem does not have yet are sent, in one request;
   * saving the same list twice, or a list that grew, never duplicates a message.
   */
  saveChat(args: { chatId: string; messages: UIMessage[] }): Promise<void>;
}

/** `loadChat` / `saveChat` over a chatmem daemon. */
export function createChatmemChats(connection: ChatmemConnection): ChatmemChats {
  const client = 'client' in connection ? connection.client : new ChatmemClient({ baseUrl: connection.baseUrl, apiToken: connection.apiToken ?? connection.adminToken });
  return {
    async loadChat(chatId) {
      const record = await client.getUser(chatId);
      return (record?.history ?? []).map(fromEntry);
    },
    async saveChat({ chatId, messages }) {
      const record = await client.getUser(chatId);
      const known = new Set((record?.history ?? []).map((e) => e.id).filter((id): id is string => typeof id === 'string'));
      // Messages older than the newest known one are either stored or already past the history cap:
      // sending those again would append them as if they were new.
      let last = -1;
      messages.forEach((m, i) => {
        if (known.has(m.id)) last = i;
      });
      const fresh = messages.slice(last + 1);
      if (fresh.length > 0) await client.appendHistoryMany(chatId, fresh.map(toEntry));
    },
  };
}

let fromEnv: ChatmemChats | null = null;
function defaultChats(): ChatmemChats {
  fromEnv ??= createChatmemChats({ baseUrl: process.env.CHATMEM_URL ?? DEFAULT_URL, apiToken: process.env.CHATMEM_API_TOKEN });
  return fromEnv;
}

/** {@link ChatmemChats.loadChat} on the daemon at `CHATMEM_URL` (token from `CHATMEM_API_TOKEN`). */
export function loadChat(chatId: string): Promise<UIMessage[]> {
  return defaultChats().loadChat(chatId);
}

/** {@link ChatmemChats.saveChat} on the daemon at `CHATMEM_URL` (token from `CHATMEM_API_TOKEN`). */
export function saveChat(args: { chatId: string; messages: UIMessage[] }): Promise<void> {
  return defaultChats().saveChat(args);
}
