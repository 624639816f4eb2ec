/**
 * Browser code of the admin page (bundled by scripts/build-web.mjs into one inline script of the page the
 * daemon serves at `GET /admin`).
 *
 * Rules kept here:
 * - The token lives in `sessionStorage` only (never in a URL, a cookie or localStorage); "Forget token" removes it.
 * - Data goes into the DOM as text (`textContent` / text nodes), never parsed as HTML: names and chat text are untrusted.
 * - Destructive actions say what they will do and that a backup is written first; restore and prune always
 *   show a dry run before the real call; clearing everything needs `YES` typed exactly.
 * - The page runs under a CSP that allows only this script and the page's style sheet by hash: no inline
 *   event-handler attributes, no style attributes, no eval, same-origin `fetch` only.
 */

// ---------------------------------------------------------------- types of what the daemon sends

// Types only (erased by the bundler): what the page sends is checked against the daemon's own table.
import type { AdminAction, AdminRequest } from '../admin/api.js';

/** The JSON body an admin action takes (src/admin/api.ts). */
type Body<A extends AdminAction> = AdminRequest<A> extends { body: infer B } ? B : never;

interface UserSummary {
  user_id: string;
  name?: string | null;
  product?: string | null;
  messages?: number;
  updated_at?: string | null;
  created_at?: string | null;
}

interface ChatMessage {
  role?: unknown;
  text?: unknown;
  ts?: unknown;
  meta?: unknown;
}

interface UserRecord {
  [field: string]: unknown;
  user_id: string;
}

interface Backup {
  id: string;
  file?: string;
  size?: number;
  users?: number | null;
  reason?: string;
  scope?: 'full' | string[] | null;
  createdAt?: string | null;
  ageSeconds?: number | null;
  gzip?: boolean;
  state?: string;
  kind?: string;
  /** Only when off-site storage is configured: local, offsite or both. */
  location?: string;
}

interface VerifyResult {
  id?: string;
  ok: boolean;
  legacy?: boolean;
  users?: number | null;
  error?: { code?: string; message?: string };
}

interface ChangedUser {
  user_id?: string;
  fields?: unknown;
  history?: { from?: number; to?: number } | null;
  flags?: { added?: unknown; removed?: unknown; changed?: unknown } | null;
}

interface Diff {
  added?: unknown;
  removed?: unknown;
  changed?: unknown;
  unchanged?: number;
}

interface Actor {
  kind?: string;
  name?: string;
  remote?: string;
}

interface AuditEntry {
  op?: string;
  time?: string;
  actor?: Actor | null;
  action?: string;
  userIds?: unknown;
  backup?: string;
  outcome?: string;
  durationMs?: number;
  error?: { code?: string; message?: string } | null;
}

interface Stats {
  users?: number;
  messages?: number;
  bytes?: number;
  lastUpdate?: string | null;
}

/** The page always says whether it is a dry run, and sends the users it restores as a list. */
type RestoreBody = Body<'restore'> & { dryRun: boolean; users?: string[] };

type Policy = Partial<Record<'last' | 'daily' | 'weekly' | 'monthly', number>> & { within?: string };

// ---------------------------------------------------------------- constants and state

const TOKEN_KEY = 'chatmem.adminToken';
// The API sits next to the page: /admin -> /v1/..., /prefix/admin -> /prefix/v1/... (behind a path-prefix proxy).
const BASE = location.pathname.replace(/\/admin\/?$/, '');
const TABS = ['overview', 'users', 'backups', 'audit', 'danger'] as const;
type Tab = (typeof TABS)[number];
const KNOWN_FIELDS = ['user_id', 'session_token', 'name', 'gender', 'is_company', 'product', 'serial', 'address',
  'summary_context', 'history', 'last_answer', 'flags', 'slots', 'created_at', 'updated_at'];
const LIST_MAX = 200;
/** The daemon's cap on `limit` for search. */
const SEARCH_MAX = 1000;

interface UsersState {
  query: string;
  cursor: string | null;
  stack: (string | null)[];
  next: string | null;
  limit: number;
  /** How many search results to ask for; "Show more results" raises it. */
  searchLimit: number;
  loaded: boolean;
  selected: string | null;
  seq: number;
}

const state = {
  memoryToken: '',
  tab: 'overview' as Tab,
  users: newUsersState(50, 0),
  detailSeq: 0,
  historyLimit: 20,
  backups: [] as Backup[],
  bkPage: 0,
  verified: {} as Record<string, VerifyResult>,
  prunePlan: null as { policy: Policy; remove: string[] } | null,
  stats: null as Stats | null,
};

function newUsersState(limit: number, seq: number): UsersState {
  return { query: '', cursor: null, stack: [], next: null, limit, searchLimit: limit, loaded: false, selected: null, seq };
}

// ---------------------------------------------------------------- DOM helpers (text only: never parse data as HTML)

type Child = Node | string | number | null | undefined | false | Child[];
type Props = Record<string, unknown>;

function $<T extends HTMLElement = HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (!el) throw new Error(`the page has no #${id}`);
  return el as T;
}
const input = (id: string) => $<HTMLInputElement>(id);
const select = (id: string) => $<HTMLSelectElement>(id);
const button = (id: string) => $<HTMLButtonElement>(id);

function h<K extends keyof HTMLElementTagNameMap>(tag: K, props?: Props | null, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  if (props) {
    for (const [k, v] of Object.entries(props)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') el.className = String(v);
      else if (k === 'text') el.textContent = String(v);
      else if (k === 'onclick') { if (typeof v === 'function') el.addEventListener('click', v as EventListener); }
      // Properties, not attributes: `checked` and `value` must reflect the live state.
      else if (k === 'value' || k === 'checked' || k === 'disabled' || k === 'type') (el as unknown as Record<string, unknown>)[k] = v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  for (const c of children) add(el, c);
  return el;
}

function add(el: Node, child: Child): void {
  if (child === null || child === undefined || child === false) return;
  if (Array.isArray(child)) { for (const c of child) add(el, c); return; }
  if (child instanceof Node) { el.appendChild(child); return; }
  el.appendChild(document.createTextNode(String(child)));
}

/** Copies each column's header text onto its cells (data-label), for the stacked layout on small screens. */
function labelCells(table: HTMLElement): void {
  const heads = Array.from(table.querySelectorAll('thead th'), (th) => th.textContent ?? '');
  for (const tr of Array.from(table.querySelectorAll('tbody tr'))) {
    Array.from(tr.children).forEach((td, i) => {
      const head = heads[i];
      if (!td.hasAttribute('colspan') && head) td.setAttribute('data-label', head);
    });
  }
}

function setText(el: HTMLElement, value: unknown): void { el.textContent = value === null || value === undefined ? '' : String(value); }
function clear(el: Node): void { while (el.firstChild) el.removeChild(el.firstChild); }
function fill<E extends Node>(el: E, ...children: Child[]): E { clear(el); for (const c of children) add(el, c); return el; }
function tbody(tableId: string): HTMLTableSectionElement {
  const b = document.querySelector<HTMLTableSectionElement>(`#${tableId} tbody`);
  if (!b) throw new Error(`#${tableId} has no tbody`);
  return b;
}
const code = (text: unknown) => h('code', { text: String(text) });
const dash = () => h('span', { class: 'faint', text: '—' });
const orDash = (v: unknown): Child => (v === null || v === undefined || v === '' ? dash() : fmtValue(v));
const badge = (text: string, kind?: string, title?: string | null) => h('span', { class: 'badge' + (kind ? ' ' + kind : ''), text, title });
const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
const strs = (v: unknown): string[] => arr(v).map(String);
const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

// ---------------------------------------------------------------- formatting

const pad = (n: number) => (n < 10 ? '0' + n : String(n));
function toDate(v: unknown): Date | null {
  if (v === null || v === undefined || v === '') return null;
  const d = new Date(v as string);
  return Number.isNaN(d.getTime()) ? null : d;
}
function fmtDate(v: unknown): string {
  const d = toDate(v);
  if (!d) return '—';
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}
function fmtAge(seconds: unknown): string {
  if (typeof seconds !== 'number' || !Number.isFinite(seconds)) return '—';
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return '< 1 min';
  if (s < 3600) return Math.floor(s / 60) + ' min';
  if (s < 86400) return Math.floor(s / 3600) + ' h';
  const d = Math.floor(s / 86400);
  return d + (d === 1 ? ' day' : ' days');
}
function fmtAgo(v: unknown): string {
  const d = toDate(v);
  if (!d) return '—';
  const s = (Date.now() - d.getTime()) / 1000;
  return s < 45 ? 'just now' : fmtAge(s) + ' ago';
}
const fmtInt = (n: unknown) => (typeof n === 'number' && Number.isFinite(n) ? n.toLocaleString('en-US') : '—');
function fmtBytes(n: unknown): string {
  if (typeof n !== 'number' || !Number.isFinite(n)) return '—';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? String(n) : n.toFixed(n < 10 ? 1 : 0)) + ' ' + units[i];
}
function fmtMs(ms: unknown): string {
  if (typeof ms !== 'number' || !Number.isFinite(ms)) return '—';
  if (ms < 1000) return Math.round(ms) + ' ms';
  if (ms < 60000) return (ms / 1000).toFixed(1) + ' s';
  return Math.floor(ms / 60000) + ' min ' + Math.round((ms % 60000) / 1000) + ' s';
}
function fmtValue(v: unknown): string {
  if (typeof v === 'string') return v;
  try { return JSON.stringify(v) ?? String(v); } catch { return String(v); }
}
function when(v: unknown) {
  const d = toDate(v);
  return h('span', { class: 'nowrap', title: d ? d.toISOString() : null, text: fmtDate(v) });
}
const plural = (n: number, one: string, many: string) => fmtInt(n) + ' ' + (n === 1 ? one : many);

// ---------------------------------------------------------------- token

function getToken(): string {
  try { return sessionStorage.getItem(TOKEN_KEY) ?? ''; } catch { return state.memoryToken; }
}
function setToken(t: string): void {
  state.memoryToken = t;
  try { sessionStorage.setItem(TOKEN_KEY, t); } catch { /* private mode: memory only */ }
}
function forgetToken(): void {
  state.memoryToken = '';
  try { sessionStorage.removeItem(TOKEN_KEY); } catch { /* nothing stored */ }
}

// ---------------------------------------------------------------- API

class ApiError extends Error {
  constructor(readonly status: number, readonly code: string, message: string) {
    super(message);
    this.name = 'ApiError';
  }
}
const statusOf = (err: unknown) => (err instanceof ApiError ? err.status : -1);
const enc = encodeURIComponent;

function authHeaders(token: string): Record<string, string> {
  return { Authorization: 'Bearer ' + token, Accept: 'application/json' };
}

async function api<T = unknown>(method: string, path: string, body?: unknown): Promise<T> {
  const token = getToken();
  if (!token) { showLogin(); throw new ApiError(401, 'E_AUTH', 'No admin token: sign in first.'); }
  const headers = authHeaders(token);
  const init: RequestInit = { method, headers, cache: 'no-store', credentials: 'same-origin', referrerPolicy: 'no-referrer' };
  if (body !== undefined) { headers['Content-Type'] = 'application/json'; init.body = JSON.stringify(body); }
  let res: Response;
  try {
    res = await fetch(BASE + path, init);
  } catch (err) {
    throw new ApiError(0, 'E_NETWORK', `Cannot reach the chatmem daemon (${err instanceof Error ? err.message : 'network error'}).`);
  }
  let raw = '';
  try { raw = await res.text(); } catch { raw = ''; }
  let data: unknown = null;
  let parsed = false;
  if (raw) { try { data = JSON.parse(raw); parsed = true; } catch { parsed = false; } }
  const where = method + ' ' + (path.split('?')[0] ?? path);
  if (!res.ok) {
    const e = isObj(data) && isObj(data.error) ? data.error : {};
    const err = new ApiError(res.status, typeof e.code === 'string' ? e.code : 'HTTP_' + res.status,
      typeof e.message === 'string' ? e.message : `${res.statusText || 'Request failed'} (${where})`);
    if (res.status === 401) authFailed(err);
    throw err;
  }
  if (raw && !parsed) throw new ApiError(res.status, 'E_BAD_RESPONSE', `The daemon answered ${where} with something that is not JSON.`);
  return data as T;
}

/** Accepts a bare array or one wrapped in an object ({items}, {backups}, {entries}, {results}...). */
function listOf<T>(data: unknown, ...keys: string[]): T[] {
  if (Array.isArray(data)) return data as T[];
  if (isObj(data)) {
    for (const k of [...keys, 'items', 'results', 'entries', 'backups', 'users', 'data']) {
      const v = data[k];
      if (Array.isArray(v)) return v as T[];
    }
  }
  return [];
}

// ---------------------------------------------------------------- banners

function showError(err: unknown, what?: string): void {
  const b = $('banner');
  const c = err instanceof ApiError ? err.code : 'E_UNKNOWN';
  const m = err instanceof Error ? err.message : String(err);
  fill(b,
    h('div', { class: 'grow' },
      h('span', { class: 'title', text: what ?? 'Something went wrong.' }),
      h('span', { class: 'code', text: c }),
      h('span', { text: m })),
    h('button', { type: 'button', class: 'sm', text: 'Dismiss', onclick: hideError }));
  b.hidden = false;
  b.scrollIntoView({ block: 'nearest' });
}
function hideError(): void { $('banner').hidden = true; clear($('banner')); }
/** Errors go to the banner, except a refused token: that one already sent the operator to the sign-in form. */
function report(err: unknown, what: string): void { if (statusOf(err) !== 401) showError(err, what); }

function showNotice(...parts: Child[]): void {
  const n = $('notice');
  fill(n, h('div', { class: 'grow' }, parts), h('button', { type: 'button', class: 'sm', text: 'Dismiss', onclick: hideNotice }));
  n.hidden = false;
}
function hideNotice(): void { $('notice').hidden = true; clear($('notice')); }

const formError = (message: string) => new ApiError(0, 'E_FORM', message);

/** Runs a user action: busy button, errors to the banner. */
async function act<T>(btn: HTMLButtonElement | null, busyLabel: string, what: string, fn: () => Promise<T>): Promise<T | undefined> {
  hideError();
  const label = btn ? btn.textContent : '';
  if (btn) { btn.disabled = true; btn.setAttribute('aria-busy', 'true'); if (busyLabel) btn.textContent = busyLabel; }
  try {
    return await fn();
  } catch (err) {
    report(err, what);
    return undefined;
  } finally {
    if (btn) { btn.disabled = false; btn.removeAttribute('aria-busy'); if (busyLabel) btn.textContent = label; }
  }
}

// ---------------------------------------------------------------- dialog

function confirmDialog(title: string, body: Child, okLabel?: string): Promise<boolean> {
  const dlg = $<HTMLDialogElement>('dlg');
  if (typeof dlg.showModal !== 'function') {
    const plain = document.createElement('div');
    add(plain, body);
    return Promise.resolve(window.confirm(title + '\n\n' + (plain.textContent ?? '')));
  }
  setText($('dlg-title'), title);
  fill($('dlg-body'), body);
  setText($('dlg-ok'), okLabel ?? 'OK');
  dlg.returnValue = '';
  return new Promise((resolve) => {
    dlg.addEventListener('close', () => resolve(dlg.returnValue === 'ok'), { once: true });
    dlg.showModal();
    $('dlg-cancel').focus();
  });
}

// ---------------------------------------------------------------- session and tabs

function showLogin(): void {
  $('login').hidden = false;
  $('tabs').hidden = true;
  $('session').hidden = true;
  for (const t of TABS) $('tab-' + t).hidden = true;
  input('token-input').value = '';
  input('token-input').focus();
}

function authFailed(err: ApiError): void {
  forgetToken();
  resetData();
  showLogin();
  showError(err, 'The daemon refused the admin token.');
}

function signedIn(): void {
  $('login').hidden = true;
  $('tabs').hidden = false;
  $('session').hidden = false;
  void loadWhoami();
  const wanted = location.hash.replace(/^#/, '');
  showTab((TABS as readonly string[]).includes(wanted) ? (wanted as Tab) : 'overview');
}

/**
 * Names the signed-in token when the daemon can (`GET /v1/admin/whoami` → `{name}`). Older daemons have no
 * such route: any other answer keeps the plain "Signed in", with no banner and no sign-out.
 */
async function loadWhoami(): Promise<void> {
  const el = $('whoami');
  setText(el, 'Signed in');
  el.classList.remove('named');
  const token = getToken();
  if (!token) return;
  try {
    const res = await fetch(BASE + '/v1/admin/whoami', { headers: authHeaders(token), cache: 'no-store', credentials: 'same-origin', referrerPolicy: 'no-referrer' });
    if (res.status !== 200) return;
    const data: unknown = await res.json();
    if (isObj(data) && typeof data.name === 'string' && data.name && getToken() === token) {
      setText(el, 'Logged in as ' + data.name);
      el.classList.add('named');
    }
  } catch {
    // no whoami: the plain label stays
  }
}

function resetData(): void {
  state.users = newUsersState(state.users.limit, state.users.seq + 1);
  state.backups = [];
  state.bkPage = 0;
  state.verified = {};
  state.prunePlan = null;
  state.stats = null;
  state.detailSeq++;
  clear($('ov-stats'));
  fill($('ov-backup'), h('span', { class: 'muted', text: 'Loading…' }));
  fill($('ov-audit'), h('span', { class: 'muted', text: 'Loading…' }));
  clear(tbody('user-table'));
  clear(tbody('bk-table'));
  clear(tbody('au-table'));
  closeDetail();
  $('bk-panel').hidden = true;
  clear($('bk-panel'));
  $('prune').hidden = true;
  clear($('prune-result'));
  clear($('dz-result'));
  input('dz-input').value = '';
  button('dz-clear').disabled = true;
  setText($('dz-count'), '…');
  input('user-q').value = '';
  setText($('whoami'), 'Signed in');
  $('whoami').classList.remove('named');
  hideNotice();
}

function showTab(name: Tab): void {
  state.tab = name;
  for (const t of TABS) $('tab-' + t).hidden = t !== name;
  for (const b of Array.from(document.querySelectorAll('#tabs [data-tab]'))) {
    b.setAttribute('aria-selected', b.getAttribute('data-tab') === name ? 'true' : 'false');
  }
  if (location.hash !== '#' + name) history.replaceState(null, '', '#' + name);
  if (name === 'overview') void loadOverview();
  else if (name === 'users') { if (!state.users.loaded) void loadUsers(); }
  else if (name === 'backups') void loadBackups();
  else if (name === 'audit') void loadAudit();
  else void loadDanger();
}

// ---------------------------------------------------------------- overview

function stat(label: string, value: string, sub?: string, title?: string | null) {
  return h('div', { class: 'stat', title },
    h('div', { class: 'label', text: label }),
    h('div', { class: 'value', text: value }),
    h('div', { class: 'sub', text: sub || '\u00a0' }));
}

function sortBackups(list: Backup[]): Backup[] {
  return list.slice().sort((a, b) => {
    const ta = toDate(a.createdAt), tb = toDate(b.createdAt);
    if (ta && tb && ta.getTime() !== tb.getTime()) return tb.getTime() - ta.getTime();
    if (ta && !tb) return -1;
    if (!ta && tb) return 1;
    return String(b.id) < String(a.id) ? -1 : String(b.id) > String(a.id) ? 1 : 0;
  });
}

async function loadOverview(): Promise<void> {
  hideError();
  const [rs, rb, ra] = await Promise.allSettled([
    api<Stats>('GET', '/v1/admin/stats'),
    api('GET', '/v1/admin/backups'),
    api('GET', '/v1/admin/audit?limit=20'),
  ]);
  if (state.tab !== 'overview') return;
  const s = rs.status === 'fulfilled' ? rs.value ?? {} : null;
  const backups = rb.status === 'fulfilled' ? sortBackups(listOf<Backup>(rb.value, 'backups')) : null;
  const audit = ra.status === 'fulfilled' ? listOf<AuditEntry>(ra.value, 'entries') : null;
  if (s) state.stats = s;
  if (backups) state.backups = backups;
  const newest = backups?.[0] ?? null;
  const users = num(s?.users), messages = num(s?.messages);
  fill($('ov-stats'),
    stat('Users', fmtInt(users), 'in the store'),
    stat('Messages', fmtInt(messages), users && messages !== null ? 'about ' + fmtInt(Math.round(messages / users)) + ' per user' : 'chat history entries'),
    stat('Size', fmtBytes(s?.bytes), 'stored records'),
    stat('Last update', s?.lastUpdate ? fmtAgo(s.lastUpdate) : '—', s?.lastUpdate ? fmtDate(s.lastUpdate) : 'no data yet', s?.lastUpdate ? String(s.lastUpdate) : null),
    stat('Backups', backups ? fmtInt(backups.length) : '—', newest ? 'newest ' + (newest.createdAt ? fmtAgo(newest.createdAt) : newest.id) : 'none yet'));
  if (!backups) fill($('ov-backup'), h('span', { class: 'muted', text: 'Could not load backups.' }));
  else if (!newest) fill($('ov-backup'), h('p', { class: 'muted', text: 'No backups yet. Create one on the Backups page.' }));
  else {
    fill($('ov-backup'), h('dl', { class: 'facts' },
      h('dt', { text: 'ID' }), h('dd', {}, code(newest.id)),
      h('dt', { text: 'Created' }), h('dd', {}, when(newest.createdAt), h('span', { class: 'muted', text: newest.createdAt ? '  (' + fmtAgo(newest.createdAt) + ')' : '' })),
      h('dt', { text: 'Reason' }), h('dd', { text: reasonLabel(newest.reason) }),
      h('dt', { text: 'Users' }), h('dd', { text: fmtInt(newest.users) }),
      h('dt', { text: 'Size' }), h('dd', { text: fmtBytes(newest.size) }),
      h('dt', { text: 'State' }), h('dd', {}, stateBadge(newest))));
  }
  if (!audit) fill($('ov-audit'), h('span', { class: 'muted', text: 'Could not load the audit log.' }));
  else if (!audit.length) fill($('ov-audit'), h('p', { class: 'muted', text: 'Nothing yet.' }));
  else {
    const items = collapseStarted(audit.slice().sort(byTimeDesc)).slice(0, 6).map((e) =>
      h('li', {},
        h('span', { class: 'when', text: fmtAgo(e.time), title: fmtDate(e.time) }),
        h('span', { text: actionLabel(e.action) }),
        outcomeBadge(e.outcome),
        h('span', { class: 'muted small', text: 'by ' + actorName(e.actor) })));
    fill($('ov-audit'), h('ul', { class: 'activity' }, items));
  }
  const failed = [rs, rb, ra].find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) report(failed.reason, 'Could not load the overview.');
}

// ---------------------------------------------------------------- users

function userRow(u: UserSummary): HTMLTableRowElement {
  const tr = h('tr', { class: 'clickable', tabindex: '0', 'data-id': u.user_id, title: 'Open ' + u.user_id },
    h('td', { class: 'id', text: u.user_id }),
    h('td', { class: 'clip', title: u.name ? String(u.name) : null }, orDash(u.name)),
    h('td', { class: 'clip col-product', title: u.product ? String(u.product) : null }, orDash(u.product)),
    h('td', { class: 'num', text: fmtInt(u.messages) }),
    h('td', { class: 'nowrap', title: fmtDate(u.updated_at), text: fmtAgo(u.updated_at) }));
  if (state.users.selected === u.user_id) tr.classList.add('selected');
  tr.addEventListener('click', () => void openUser(u.user_id));
  tr.addEventListener('keydown', (ev) => { if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); void openUser(u.user_id); } });
  return tr;
}

function summaryOfRecord(r: UserRecord): UserSummary {
  return { user_id: r.user_id, name: r.name as string | null, product: r.product as string | null, messages: arr(r.history).length, updated_at: r.updated_at as string | null, created_at: r.created_at as string | null };
}

async function lookupId(q: string): Promise<UserRecord | null> {
  if (!q || /\s/.test(q)) return null;
  try {
    const r = await api<unknown>('GET', '/v1/admin/users/' + enc(q));
    return isObj(r) && typeof r.user_id === 'string' ? (r as UserRecord) : null;
  } catch (err) {
    if (statusOf(err) === 404 || statusOf(err) === 400) return null;
    throw err;
  }
}

async function loadUsers(): Promise<void> {
  const u = state.users;
  const seq = ++u.seq;
  const body = tbody('user-table');
  hideError();
  if (!body.firstChild) fill(body, h('tr', {}, h('td', { class: 'empty', colspan: '5', text: 'Loading…' })));
  button('user-prev').disabled = true;
  button('user-next').disabled = true;
  button('user-more').hidden = true;
  try {
    let items: UserSummary[];
    let next: string | null = null;
    // Search has no cursor: ask for one more than shown to learn whether there are more, and "Show more
    // results" asks again with a bigger limit (results come in user-ID order, so each answer extends the last).
    let more = false;
    if (u.query) {
      const ask = Math.min(u.searchLimit + 1, SEARCH_MAX);
      const [found, direct] = await Promise.all([api('GET', '/v1/admin/search?q=' + enc(u.query) + '&limit=' + ask), lookupId(u.query)]);
      items = listOf<UserSummary>(found, 'items');
      more = items.length >= ask;
      if (items.length > u.searchLimit) items = items.slice(0, u.searchLimit);
      if (direct && !items.some((x) => x.user_id === direct.user_id)) items.unshift(summaryOfRecord(direct));
    } else {
      const page = await api<unknown>('GET', '/v1/admin/users?limit=' + u.limit + (u.cursor ? '&cursor=' + enc(u.cursor) : ''));
      items = listOf<UserSummary>(page, 'items');
      next = isObj(page) && typeof page.next === 'string' && page.next ? page.next : null;
    }
    if (seq !== u.seq) return;
    u.loaded = true;
    u.next = next;
    if (!items.length) {
      fill(body, h('tr', {}, h('td', { class: 'empty', colspan: '5' },
        u.query ? ['No users match ', h('b', { text: '“' + u.query + '”' }), '.'] : (u.stack.length ? 'No more users.' : 'No users yet.'))));
    } else {
      fill(body, items.map(userRow));
      labelCells($('user-table'));
    }
    if (u.query) {
      const capped = more && u.searchLimit >= SEARCH_MAX - 1;
      setText($('user-info'), (more ? 'First ' : '') + plural(items.length, 'result', 'results') + ' for “' + u.query + '”' +
        (capped ? ' — more match: narrow the search to see them' : more ? ' — more match' : ''));
      button('user-more').hidden = !more || capped;
    } else {
      setText($('user-info'), 'Page ' + (u.stack.length + 1) + ' · ' + plural(items.length, 'user', 'users'));
    }
    $('user-prev').hidden = !!u.query;
    $('user-next').hidden = !!u.query;
    button('user-prev').disabled = u.stack.length === 0;
    button('user-next').disabled = !next;
  } catch (err) {
    if (seq !== u.seq) return;
    fill(body, h('tr', {}, h('td', { class: 'empty', colspan: '5', text: 'Could not load users.' })));
    report(err, 'Could not load users.');
  }
}

function closeDetail(): void {
  state.users.selected = null;
  state.detailSeq++;
  $('detail').hidden = true;
  clear($('detail'));
  $('user-split').classList.remove('has-detail');
  markSelected();
}

function markSelected(): void {
  for (const tr of Array.from(document.querySelectorAll('#user-table tbody tr[data-id]'))) {
    tr.classList.toggle('selected', tr.getAttribute('data-id') === state.users.selected);
  }
}

function detailHead(title: string, sub?: string) {
  return h('div', { class: 'card-head' },
    h('div', {}, h('h2', { text: title }), sub ? h('div', { class: 'mono muted small', text: sub }) : null),
    h('button', { type: 'button', class: 'icon', 'aria-label': 'Close', text: '×', onclick: closeDetail }));
}

async function openUser(id: string): Promise<void> {
  const seq = ++state.detailSeq;
  state.users.selected = id;
  markSelected();
  const panel = $('detail');
  panel.hidden = false;
  $('user-split').classList.add('has-detail');
  fill(panel, detailHead('Loading…', id));
  hideError();
  try {
    const rec = await api<unknown>('GET', '/v1/admin/users/' + enc(id));
    if (seq !== state.detailSeq) return;
    if (!isObj(rec)) throw new ApiError(0, 'E_BAD_RESPONSE', 'The daemon sent an empty record.');
    renderDetail({ ...rec, user_id: typeof rec.user_id === 'string' ? rec.user_id : id });
  } catch (err) {
    if (seq !== state.detailSeq) return;
    fill(panel, detailHead('Could not open user', id), h('p', { class: 'muted', text: err instanceof Error ? err.message : String(err) }));
    report(err, 'Could not open user ' + id + '.');
  }
  if (window.matchMedia('(max-width: 980px)').matches) panel.scrollIntoView({ block: 'start', behavior: 'smooth' });
}

function kvTable(obj: unknown) {
  const keys = isObj(obj) ? Object.keys(obj) : [];
  if (!isObj(obj) || !keys.length) return h('p', { class: 'muted small', text: 'None.' });
  return h('table', { class: 'kv' }, h('tbody', {}, keys.map((k) => h('tr', {}, h('td', { text: k }), h('td', { text: fmtValue(obj[k]) })))));
}

function chatView(msgs: unknown[]) {
  const limit = state.historyLimit;
  const shown = limit > 0 ? msgs.slice(-limit) : msgs;
  if (!msgs.length) return h('p', { class: 'muted small', text: 'No messages.' });
  return h('div', { class: 'chat' },
    msgs.length > shown.length ? h('div', { class: 'faint small center', text: plural(msgs.length - shown.length, 'earlier message', 'earlier messages') + ' not shown' }) : null,
    shown.map((raw) => {
      const m: ChatMessage = isObj(raw) ? raw : { text: String(raw) };
      const role = typeof m.role === 'string' && m.role ? m.role : 'unknown';
      return h('div', { class: 'msg' + (role === 'user' ? '' : ' out') },
        h('div', { class: 'who' }, h('b', { text: role }), h('span', { title: m.ts ? String(m.ts) : null, text: m.ts ? fmtDate(m.ts) : '' })),
        h('div', { class: 'text', text: typeof m.text === 'string' ? m.text : fmtValue(m.text) }),
        isObj(m.meta) && Object.keys(m.meta).length ? h('div', { class: 'meta', text: 'meta ' + fmtValue(m.meta) }) : null);
    }));
}

function renderDetail(rec: UserRecord): void {
  const panel = $('detail');
  const msgs = arr(rec.history);
  const summary = arr(rec.summary_context);
  const other = Object.keys(rec).filter((k) => !KNOWN_FIELDS.includes(k));
  const otherObj: Record<string, unknown> = {};
  for (const k of other) otherObj[k] = rec[k];
  const chatHolder = h('div', { class: 'chat-holder' });
  const limitSel = h('select', { 'aria-label': 'Messages to show' },
    [20, 50, 0].map((n) => h('option', { value: String(n), text: n ? 'Last ' + n : 'All' })));
  limitSel.value = String(state.historyLimit);
  limitSel.addEventListener('change', () => { state.historyLimit = Number(limitSel.value); fill(chatHolder, chatView(msgs)); });
  fill(chatHolder, chatView(msgs));
  const company = rec.is_company === true ? 'Yes' : rec.is_company === false ? 'No' : null;
  const delBtn = h('button', { type: 'button', class: 'danger-outline', text: 'Delete user…' });
  delBtn.addEventListener('click', () => void deleteUser(rec, delBtn));

  // The chat is what operators open a user for: it comes right after the profile, before flags and slots.
  fill(panel,
    detailHead(rec.name ? String(rec.name) : '(no name)', rec.user_id),
    h('dl', { class: 'facts' },
      h('dt', { text: 'Product' }), h('dd', {}, orDash(rec.product)),
      h('dt', { text: 'Serial' }), h('dd', {}, orDash(rec.serial)),
      h('dt', { text: 'Gender' }), h('dd', {}, orDash(rec.gender)),
      h('dt', { text: 'Company' }), h('dd', {}, orDash(company)),
      h('dt', { text: 'Address' }), h('dd', {}, orDash(rec.address)),
      h('dt', { text: 'Last answer' }), h('dd', {}, orDash(rec.last_answer)),
      h('dt', { text: 'Session' }), h('dd', {}, rec.session_token ? h('span', { class: 'muted', text: 'token set (hidden)' }) : dash()),
      h('dt', { text: 'Created' }), h('dd', {}, when(rec.created_at)),
      h('dt', { text: 'Updated' }), h('dd', {}, when(rec.updated_at), h('span', { class: 'muted', text: rec.updated_at ? '  (' + fmtAgo(rec.updated_at) + ')' : '' }))),
    h('h4', { text: 'Summary' }),
    summary.length ? h('ul', { class: 'plain' }, summary.map((s) => h('li', { text: fmtValue(s) }))) : h('p', { class: 'muted small', text: 'None.' }),
    h('div', { class: 'card-head chat-head' }, h('h4', { text: 'Chat · ' + plural(msgs.length, 'message', 'messages') }), limitSel),
    chatHolder,
    h('h4', { text: 'Flags' }), kvTable(rec.flags),
    h('h4', { text: 'Slots' }), kvTable(rec.slots),
    other.length ? [h('h4', { text: 'Other fields' }), kvTable(otherObj)] : null,
    h('div', { class: 'danger-box' },
      h('h3', { text: 'Delete this user' }),
      h('p', { class: 'small muted', text: 'Removes all memory of this user. A backup is written first.' }),
      delBtn));
}

async function deleteUser(rec: UserRecord, btn: HTMLButtonElement): Promise<void> {
  const id = rec.user_id;
  const name = rec.name ? String(rec.name) : '(no name)';
  const ok = await confirmDialog('Delete this user?', [
    h('p', {}, 'Delete all memory of ', h('b', { text: name }), ' (', code(id), '): profile, flags, slots and ' + plural(arr(rec.history).length, 'chat message', 'chat messages') + '.'),
    h('p', { class: 'muted', text: 'A backup of this user is written and verified first. You can restore it later from the Backups page.' }),
  ], 'Delete user');
  if (!ok) return;
  await act(btn, 'Deleting…', 'Could not delete user ' + id + '.', async () => {
    const res = (await api<unknown>('DELETE', '/v1/users/' + enc(id))) ?? {};
    const backup = isObj(res) && res.backup ? String(res.backup) : '(unknown)';
    const toBackups = h('button', { type: 'button', text: 'Open Backups', onclick: () => showTab('backups') });
    fill($('detail'), detailHead('User deleted', id),
      h('p', {}, 'All memory of ', h('b', { text: name }), ' was deleted.'),
      h('div', { class: 'result' }, 'Backup written first: ', code(backup)),
      h('p', { class: 'muted small mt12', text: 'To undo: Backups → this backup → Restore… → “Only these users” with ' + id + '.' }),
      h('div', { class: 'actions' }, toBackups));
    showNotice('Deleted user ', code(id), ' (' + name + '). Backup: ', code(backup), '. To undo, restore it from Backups with “Only these users”.');
    state.users.selected = null;
    markSelected();
    void loadUsers();
  });
}

// ---------------------------------------------------------------- backups

const REASONS: Record<string, string> = { 'manual': 'Manual', 'delete-user': 'Before delete', 'clear-all': 'Before clear all', 'restore': 'Before restore', 'scheduled': 'Scheduled', 'import': 'Before import', 'legacy': 'Legacy' };
const reasonLabel = (r: unknown) => (typeof r === 'string' && REASONS[r]) || (r ? String(r) : '—');

function stateBadge(b: Backup) {
  const v = state.verified[b.id];
  if (v) return v.ok ? badge(v.legacy ? 'checked (legacy)' : 'checked ✓', 'ok', 'Verified just now') : badge('check failed', 'bad', v.error ? `${v.error.code ?? ''}: ${v.error.message ?? ''}` : 'Verification failed');
  if (b.state === 'verified') return badge('verified', 'ok', 'Checksum was checked when it was written');
  if (b.state === 'legacy') return badge('legacy', '', 'Old backup without a manifest: not verified');
  return badge(b.state ? String(b.state) : 'unknown');
}

const backupById = (id: string) => state.backups.find((b) => b.id === id) ?? null;

function scopeText(b: Backup): string {
  if (Array.isArray(b.scope)) return b.scope.length === 1 ? 'user ' + String(b.scope[0]) : b.scope.length + ' selected users';
  if (b.scope === 'full') return 'full store';
  return b.kind === 'user' ? 'one user' : '';
}

async function loadBackups(): Promise<void> {
  const body = tbody('bk-table');
  hideError();
  if (!body.firstChild) fill(body, h('tr', {}, h('td', { class: 'empty', colspan: '7', text: 'Loading…' })));
  try {
    state.backups = sortBackups(listOf<Backup>(await api('GET', '/v1/admin/backups'), 'backups'));
    renderBackups();
  } catch (err) {
    fill(body, h('tr', {}, h('td', { class: 'empty', colspan: '7', text: 'Could not load backups.' })));
    report(err, 'Could not load backups.');
  }
}

/** The backups the filter lets through: the text matches the ID, the reason or a user the backup holds. */
function filteredBackups(): Backup[] {
  const q = input('bk-q').value.trim().toLowerCase();
  const reason = select('bk-reason').value;
  return state.backups.filter((b) => {
    if (reason && b.reason !== reason) return false;
    if (!q) return true;
    const hay = [b.id, b.reason ?? '', reasonLabel(b.reason), ...strs(b.scope)].join('\n').toLowerCase();
    return hay.includes(q);
  });
}

function renderBackups(): void {
  const body = tbody('bk-table');
  const list = filteredBackups();
  const per = Number(select('bk-limit').value) || 10;
  const pages = Math.max(1, Math.ceil(list.length / per));
  state.bkPage = Math.min(Math.max(0, state.bkPage), pages - 1);
  const shown = list.slice(state.bkPage * per, state.bkPage * per + per);
  button('bk-prev').disabled = state.bkPage === 0;
  button('bk-next').disabled = state.bkPage >= pages - 1;
  const filtered = list.length !== state.backups.length;
  setText($('bk-info'), !list.length ? '' :
    (pages > 1 ? `${fmtInt(state.bkPage * per + 1)}–${fmtInt(state.bkPage * per + shown.length)} of ` : '') + plural(list.length, 'backup', 'backups') +
    (filtered ? ` (filtered from ${fmtInt(state.backups.length)})` : '') + (pages > 1 ? ` · page ${state.bkPage + 1} of ${pages}` : ''));
  if (!state.backups.length) {
    fill(body, h('tr', {}, h('td', { class: 'empty', colspan: '7', text: 'No backups yet. “Create backup” makes one now.' })));
    return;
  }
  if (!list.length) {
    fill(body, h('tr', {}, h('td', { class: 'empty', colspan: '7', text: 'No backup matches the filter.' })));
    return;
  }
  fill(body, shown.map((b) => {
    const created = toDate(b.createdAt);
    const age = typeof b.ageSeconds === 'number' ? b.ageSeconds : created ? (Date.now() - created.getTime()) / 1000 : null;
    const verifyBtn = h('button', { type: 'button', class: 'sm', text: 'Verify' });
    verifyBtn.addEventListener('click', () => void verifyBackup(b, verifyBtn));
    const detailsBtn = h('button', { type: 'button', class: 'sm', text: 'Details' });
    detailsBtn.addEventListener('click', () => void inspectBackup(b, detailsBtn));
    const diffBtn = h('button', { type: 'button', class: 'sm', text: 'Diff', title: 'Compare with the current store' });
    diffBtn.addEventListener('click', () => void diffBackup(b, diffBtn));
    const restoreBtn = h('button', { type: 'button', class: 'sm', text: 'Restore…', onclick: () => openRestore(b, []) });
    const scope = scopeText(b);
    return h('tr', { 'data-id': b.id },
      h('td', { class: 'id' }, b.id, b.gzip ? h('span', { class: 'badge ml6', text: 'gz' }) : null),
      h('td', { class: 'nowrap' }, when(b.createdAt), h('div', { class: 'faint small', text: age === null ? 'age unknown' : fmtAge(age) + (age >= 60 ? ' ago' : '') })),
      h('td', { class: 'num', text: fmtInt(b.users) }),
      h('td', { class: 'num', text: fmtBytes(b.size) }),
      h('td', { class: 'nowrap' }, h('div', { text: reasonLabel(b.reason) }), scope && scope !== 'full store' ? h('div', { class: 'faint small clip', title: scope, text: scope }) : null),
      h('td', { class: 'state-cell' }, stateBadge(b), b.location ? h('div', { class: 'faint small', text: b.location === 'both' ? 'local + off-site' : b.location === 'offsite' ? 'off-site only' : 'local only' }) : null),
      h('td', { class: 'actions-cell' }, h('div', { class: 'btns' }, verifyBtn, detailsBtn, diffBtn, restoreBtn)));
  }));
  labelCells($('bk-table'));
}

function openPanel(title: string, sub?: Child): HTMLDivElement {
  const panel = $('bk-panel');
  panel.hidden = false;
  const content = h('div');
  fill(panel,
    h('div', { class: 'card-head' },
      h('div', {}, h('h3', { text: title }), sub ? h('div', { class: 'muted small mt4' }, sub) : null),
      h('button', { type: 'button', class: 'icon', 'aria-label': 'Close', text: '×', onclick: () => { panel.hidden = true; clear(panel); } })),
    content);
  return content;
}
function reveal(el: Element): void { requestAnimationFrame(() => el.scrollIntoView({ block: 'start', behavior: 'smooth' })); }

async function createBackup(btn: HTMLButtonElement): Promise<void> {
  await act(btn, 'Writing backup…', 'Could not create a backup.', async () => {
    const res = (await api<unknown>('POST', '/v1/admin/backups', { gzip: input('bk-gzip').checked } satisfies Body<'createBackup'>)) ?? {};
    const r = isObj(res) ? res : {};
    const m = isObj(r.manifest) ? r.manifest : null;
    const id = r.id ?? r.backup ?? m?.file ?? '(unknown)';
    const users = m && typeof m.users === 'number' ? ' with ' + plural(m.users, 'user', 'users') : '';
    showNotice('Backup created: ', code(String(id)), users + '.');
    state.bkPage = 0;
    await loadBackups();
  });
}

async function verifyBackup(b: Backup, btn: HTMLButtonElement): Promise<void> {
  await act(btn, 'Checking…', 'Could not verify ' + b.id + '.', async () => {
    const res = await api<unknown>('POST', '/v1/admin/backups/' + enc(b.id) + '/verify', {});
    const r = listOf<VerifyResult>(res, 'results')[0] ?? (isObj(res) && 'ok' in res && res.id ? (res as unknown as VerifyResult) : null);
    if (!r) throw new ApiError(0, 'E_BAD_RESPONSE', 'The daemon did not say whether the backup is OK.');
    state.verified[b.id] = r;
    const cell = document.querySelector(`#bk-table tbody tr[data-id="${CSS.escape(b.id)}"] .state-cell`);
    if (cell) fill(cell, stateBadge(b));
    if (r.ok) {
      showNotice(r.legacy ? 'Legacy backup ' : 'Backup ', code(b.id), r.legacy ? ' reads correctly (it has no checksum to compare).' : ' is OK: checksum and user count match' + (typeof r.users === 'number' ? ' (' + plural(r.users, 'user', 'users') + ').' : '.'));
    } else {
      const e = r.error ?? {};
      showError(new ApiError(0, e.code ?? 'E_VERIFY', e.message ?? 'the backup does not match its manifest'), 'Backup ' + b.id + ' failed the check.');
    }
  });
}

async function inspectBackup(b: Backup, btn: HTMLButtonElement): Promise<void> {
  await act(btn, '…', 'Could not read ' + b.id + '.', async () => {
    const raw = await api<unknown>('GET', '/v1/admin/backups/' + enc(b.id) + '?sample=50');
    const res = isObj(raw) ? raw : {};
    const info: Backup = isObj(res.backup) ? (res.backup as unknown as Backup) : b;
    const m = isObj(res.manifest) ? res.manifest : null;
    const sample = arr(res.sample).filter(isObj);
    const content = openPanel('Backup ' + b.id, [when(info.createdAt), ' · ', reasonLabel(info.reason)]);
    const facts = h('dl', { class: 'facts' },
      h('dt', { text: 'File' }), h('dd', {}, code(String(info.file ?? ''))),
      h('dt', { text: 'Users' }), h('dd', { text: fmtInt(typeof res.users === 'number' && res.users >= 0 ? res.users : info.users) }),
      h('dt', { text: 'Size' }), h('dd', { text: fmtBytes(info.size) + (info.gzip ? ' (gzip)' : '') }),
      h('dt', { text: 'Scope' }), h('dd', { text: scopeText(info) || '—' }),
      h('dt', { text: 'State' }), h('dd', {}, stateBadge(info)),
      m ? [
        h('dt', { text: 'Checksum' }), h('dd', {}, code(String(m.sha256 ?? '—'))),
        h('dt', { text: 'Verified at' }), h('dd', {}, when(m.verifiedAt)),
        h('dt', { text: 'Source' }), h('dd', { text: m.source ? String(m.source) : '—' }),
        h('dt', { text: 'chatmem' }), h('dd', { text: m.chatmemVersion ? String(m.chatmemVersion) : '—' }),
        h('dt', { text: 'Audit op' }), h('dd', {}, m.auditOp ? code(String(m.auditOp)) : dash()),
      ] : null);
    const checks: HTMLInputElement[] = [];
    const sampleBox = sample.length ? h('div', { class: 'list-box mt4' }, sample.map((s) => {
      const uid = String(s.user_id);
      const cb = h('input', { type: 'checkbox', value: uid, 'aria-label': 'Select ' + uid });
      checks.push(cb);
      return h('label', { class: 'row' },
        h('span', {}, cb, ' ', h('span', { class: 'mono small', text: uid }), ' ', h('span', { text: s.name ? String(s.name) : '' })),
        h('span', { class: 'faint small', text: plural(num(s.messages) ?? 0, 'message', 'messages') }));
    })) : h('p', { class: 'muted small', text: 'No users in this backup.' });
    const restoreSel = h('button', { type: 'button', text: 'Restore selected users…' });
    restoreSel.addEventListener('click', () => {
      const ids = checks.filter((c) => c.checked).map((c) => c.value);
      if (!ids.length) { showError(formError('Tick at least one user first.'), 'Nothing selected.'); return; }
      openRestore(b, ids);
    });
    fill(content, facts,
      h('h4', { text: sample.length ? 'Users (first ' + sample.length + ')' : 'Users' }), sampleBox,
      sample.length ? h('div', { class: 'actions' }, restoreSel) : null);
    reveal($('bk-panel'));
  });
}

interface DiffLabels { addedShort: string; removedShort: string; changedShort: string; added: string; removed: string; changed: string; none: string }

function renderDiff(diff: Diff, labels: DiffLabels) {
  const added = strs(diff.added), removed = strs(diff.removed), changed = arr(diff.changed).filter(isObj) as ChangedUser[];
  const unchanged = typeof diff.unchanged === 'number' ? diff.unchanged : 0;
  const wrap = h('div');
  add(wrap, h('div', { class: 'diff-sum' },
    badge(fmtInt(added.length) + ' ' + labels.addedShort, added.length ? 'ok' : ''),
    badge(fmtInt(removed.length) + ' ' + labels.removedShort, removed.length ? 'bad' : ''),
    badge(fmtInt(changed.length) + ' ' + labels.changedShort, changed.length ? 'warn' : ''),
    badge(fmtInt(unchanged) + ' unchanged')));
  if (!added.length && !removed.length && !changed.length) {
    add(wrap, h('p', { class: 'muted', text: labels.none }));
    return wrap;
  }
  const idList = (ids: string[], cls: string) => h('div', { class: 'chips' }, ids.slice(0, LIST_MAX).map((id) => h('span', { class: 'chip ' + cls, text: id })),
    ids.length > LIST_MAX ? h('span', { class: 'faint small', text: 'and ' + fmtInt(ids.length - LIST_MAX) + ' more' }) : null);
  if (added.length) add(wrap, h('div', { class: 'diff-list' }, h('h4', { text: labels.added }), idList(added, 'add')));
  if (removed.length) add(wrap, h('div', { class: 'diff-list' }, h('h4', { text: labels.removed }), idList(removed, 'rem')));
  if (changed.length) {
    add(wrap, h('div', { class: 'diff-list' }, h('h4', { text: labels.changed }),
      h('div', { class: 'list-box' }, changed.slice(0, LIST_MAX).map((c) => {
        const parts: HTMLElement[] = [];
        const fields = strs(c.fields);
        if (isObj(c.history)) parts.push(h('span', { class: 'chip chg', text: 'history ' + fmtInt(c.history.from) + ' → ' + fmtInt(c.history.to) + ' messages' }));
        else if (fields.includes('history')) parts.push(h('span', { class: 'chip chg', text: 'history' }));
        if (isObj(c.flags)) {
          for (const f of strs(c.flags.added)) parts.push(h('span', { class: 'chip add', text: '+ flag ' + f }));
          for (const f of strs(c.flags.removed)) parts.push(h('span', { class: 'chip rem', text: '− flag ' + f }));
          for (const f of strs(c.flags.changed)) parts.push(h('span', { class: 'chip chg', text: '~ flag ' + f }));
        } else if (fields.includes('flags')) parts.push(h('span', { class: 'chip chg', text: 'flags' }));
        for (const f of fields) if (f !== 'history' && f !== 'flags') parts.push(h('span', { class: 'chip', text: f }));
        return h('div', { class: 'row' }, h('span', { class: 'mono small', text: String(c.user_id) }), h('span', { class: 'chips' }, parts));
      }),
      changed.length > LIST_MAX ? h('div', { class: 'row faint small', text: 'and ' + fmtInt(changed.length - LIST_MAX) + ' more' }) : null)));
  }
  return wrap;
}

const SINCE_LABELS: DiffLabels = {
  addedShort: 'new since', removedShort: 'gone since', changedShort: 'changed since',
  added: 'New since the backup (only in the current store)',
  removed: 'Gone since the backup (only in the backup)',
  changed: 'Changed since the backup',
  none: 'The current store is the same as this backup.',
};
const RESTORE_LABELS: DiffLabels = {
  addedShort: 'to add back', removedShort: 'to remove', changedShort: 'to overwrite',
  added: 'Will be added back (in the backup, not in the store now)',
  removed: 'Will be removed (in the store now, not in the backup)',
  changed: 'Will be overwritten with the backup’s version',
  none: 'Nothing would change: the store already matches this backup.',
};

async function diffBackup(b: Backup, btn: HTMLButtonElement): Promise<void> {
  await act(btn, '…', 'Could not compare ' + b.id + ' with the current store.', async () => {
    const diff = await api<unknown>('GET', '/v1/admin/diff?a=' + enc(b.id) + '&b=current');
    const content = openPanel('Changes since ' + b.id, ['Backup from ', when(b.createdAt), ' compared with the current store.']);
    const restoreBtn = h('button', { type: 'button', text: 'Restore from this backup…', onclick: () => openRestore(b, []) });
    fill(content, renderDiff(isObj(diff) ? diff : {}, SINCE_LABELS), h('div', { class: 'actions' }, restoreBtn));
    reveal($('bk-panel'));
  });
}

function parseIds(text: string): string[] {
  const seen = new Set<string>();
  return text.split(/[\s,;]+/).filter((s) => {
    if (!s || seen.has(s)) return false;
    seen.add(s);
    return true;
  });
}

function openRestore(b: Backup, presetUsers: string[]): void {
  const name = 'restore-' + Math.random().toString(36).slice(2);
  // A backup taken before a delete or a selective restore holds only some users: restoring it as the
  // whole store would remove everyone else, so such a backup starts on "Only these users".
  const partial = Array.isArray(b.scope) || b.kind === 'user';
  if (!presetUsers.length && Array.isArray(b.scope)) presetUsers = b.scope.map(String);
  const some = presetUsers.length > 0 || partial;
  const scopeAll = h('input', { type: 'radio', name: name + '-scope', value: 'all', checked: !some });
  const scopeSome = h('input', { type: 'radio', name: name + '-scope', value: 'some', checked: some });
  const ids = h('textarea', { rows: '3', spellcheck: 'false', placeholder: 'One user ID per line', 'aria-label': 'User IDs to restore' });
  ids.value = presetUsers.join('\n');
  const modeReplace = h('input', { type: 'radio', name: name + '-mode', value: 'replace', checked: true });
  const modeMerge = h('input', { type: 'radio', name: name + '-mode', value: 'merge' });
  const modeSet = h('fieldset', {},
    h('legend', { text: 'How' }),
    h('label', { class: 'choice' }, modeReplace, h('span', {}, h('b', { text: 'Replace' }), ' — the store becomes exactly this backup. Users added since the backup are removed.')),
    h('label', { class: 'choice' }, modeMerge, h('span', {}, h('b', { text: 'Merge' }), ' — put back the users in the backup, keep everyone else.')));
  const preview = h('div', { class: 'restore-preview' });
  const warn = h('div', { class: 'result warn', text: 'This backup holds only ' + (typeof b.users === 'number' ? plural(b.users, 'user', 'users') : 'some users') + '. Restoring it as the whole store with “Replace” removes every other user.' });
  const previewBtn = h('button', { type: 'submit', class: 'primary', text: 'Preview changes (dry run)' });
  const form = h('form', { autocomplete: 'off' },
    h('fieldset', {},
      h('legend', { text: 'What to restore' }),
      h('label', { class: 'choice' }, scopeAll, h('span', {}, h('b', { text: 'Whole store' }))),
      h('label', { class: 'choice' }, scopeSome, h('span', {}, h('b', { text: 'Only these users' }), h('span', { class: 'muted', text: ' — the others are left alone' }))),
      ids),
    modeSet,
    warn,
    h('div', { class: 'actions' }, previewBtn));

  function sync(): void {
    ids.disabled = !scopeSome.checked;
    modeSet.hidden = scopeSome.checked;
    warn.hidden = !(partial && scopeAll.checked && modeReplace.checked);
  }
  function request(dryRun: boolean): RestoreBody {
    const body: RestoreBody = { backup: b.id, dryRun };
    if (scopeSome.checked) {
      const list = parseIds(ids.value);
      if (!list.length) throw formError('Enter at least one user ID, or choose “Whole store”.');
      body.users = list;
    } else {
      body.mode = modeMerge.checked ? 'merge' : 'replace';
    }
    return body;
  }
  // A preview belongs to exactly the choices it was made with: any change throws it away.
  form.addEventListener('input', () => { sync(); clear(preview); });
  form.addEventListener('change', () => { sync(); clear(preview); });
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    void act(previewBtn, 'Checking…', 'Could not preview the restore.', async () => {
      const body = request(true);
      const res = await api<unknown>('POST', '/v1/admin/restore', body);
      const diff: Diff = isObj(res) && isObj(res.diff) ? res.diff : {};
      const n = arr(diff.added).length + arr(diff.removed).length + arr(diff.changed).length;
      const go = h('button', { type: 'button', class: 'danger', text: 'Restore now…' });
      go.addEventListener('click', () => void runRestore(b, body, diff, go, preview));
      // The button sits above the lists, so scrolling the preview's top into view shows it too.
      fill(preview,
        h('h4', { text: 'Dry run: what the restore would do' }),
        n ? h('div', { class: 'actions preview-actions' }, go, h('span', { class: 'muted small', text: 'The current data it overwrites is backed up first.' })) : null,
        renderDiff(diff, RESTORE_LABELS));
      reveal(preview);
    });
  });
  sync();
  const content = openPanel('Restore from ' + b.id, ['Backup from ', when(b.createdAt), typeof b.users === 'number' ? ' · ' + plural(b.users, 'user', 'users') : '']);
  fill(content, form, preview);
  reveal($('bk-panel'));
  if (some) ids.focus({ preventScroll: true });
}

async function runRestore(b: Backup, previewBody: RestoreBody, diff: Diff, btn: HTMLButtonElement, preview: HTMLElement): Promise<void> {
  const body: RestoreBody = { ...previewBody, dryRun: false };
  const who = body.users ? plural(body.users.length, 'selected user', 'selected users') : 'the whole store';
  const ok = await confirmDialog('Restore from this backup?', [
    h('p', {}, 'Restore ', who, ' from ', code(b.id), body.mode ? ' (' + body.mode + ')' : '', '.'),
    h('p', {}, plural(arr(diff.changed).length, 'user', 'users') + ' overwritten, ' + fmtInt(arr(diff.added).length) + ' added back, ' + fmtInt(arr(diff.removed).length) + ' removed.'),
    h('p', { class: 'muted', text: 'Before anything changes, the current data is backed up and verified.' }),
  ], 'Restore now');
  if (!ok) return;
  await act(btn, 'Restoring…', 'The restore failed.', async () => {
    const raw = await api<unknown>('POST', '/v1/admin/restore', body);
    const res = isObj(raw) ? raw : {};
    const backup = res.backup ? String(res.backup) : null;
    const result = h('div', { class: 'result' }, 'Restore done: ' + plural(num(res.written) ?? 0, 'user', 'users') + ' written, ' + fmtInt(num(res.removed) ?? 0) + ' removed.',
      backup ? [' The previous data was backed up as ', code(backup), '.'] : null);
    preview.insertBefore(result, preview.firstChild?.nextSibling ?? null);
    if (btn.parentElement) btn.parentElement.hidden = true;
    showNotice('Restored from ', code(b.id), '.', backup ? [' Previous data backed up as ', code(backup), '.'] : '');
    state.users.loaded = false;
    await loadBackups();
    reveal(result);
  });
}

// ---------------------------------------------------------------- prune

function prunePolicy(): Policy {
  const policy: Policy = {};
  for (const [key, id] of [['last', 'pr-last'], ['daily', 'pr-daily'], ['weekly', 'pr-weekly'], ['monthly', 'pr-monthly']] as const) {
    const v = input(id).value.trim();
    if (v === '') continue;
    if (!/^\d+$/.test(v)) throw formError('“' + (input(id).labels?.[0]?.textContent ?? key) + '” must be a whole number.');
    const n = Number(v);
    if (n > 0) policy[key] = n;
  }
  const within = input('pr-within').value.trim();
  if (within) {
    if (!/^(\d+[yYmMwdDhH])+$/.test(within)) throw formError('“Keep all within” looks like 36h, 30d, 2m or 1y2m.');
    policy.within = within;
  }
  if (!Object.keys(policy).length) throw formError('Fill in at least one rule. With no rule nothing is removed.');
  return policy;
}

const createdOf = (id: string) => backupById(id)?.createdAt ?? null;

// Retention counts full and per-user backups separately; the plan says which group each is in.
const groupLabel = (g: unknown): string => (g === 'user' ? 'per-user' : 'full');

async function previewPrune(btn: HTMLButtonElement): Promise<void> {
  await act(btn, 'Checking…', 'Could not preview the prune.', async () => {
    state.prunePlan = null;
    const policy = prunePolicy();
    const raw = await api<unknown>('POST', '/v1/admin/prune', { policy, dryRun: true } satisfies Body<'prune'>);
    const res = isObj(raw) ? raw : {};
    const keep = arr(res.keep).filter(isObj), remove = arr(res.remove).filter(isObj);
    state.prunePlan = { policy, remove: remove.map((r) => String(r.id)) };
    const go = h('button', { type: 'button', class: 'danger', text: 'Remove ' + plural(remove.length, 'backup', 'backups') + '…' });
    go.addEventListener('click', () => void runPrune(go));
    fill($('prune-result'),
      h('h4', { text: 'Dry run: keep ' + fmtInt(keep.length) + ', remove ' + fmtInt(remove.length) }),
      remove.length ? h('div', { class: 'actions mb14' }, go, h('span', { class: 'muted small', text: 'Removed backups cannot be brought back.' })) : null,
      h('div', { class: 'cols' },
        h('div', {}, h('div', { class: 'small muted mb6', text: 'Keep' }),
          h('div', { class: 'list-box' }, keep.length ? keep.map((k) =>
            h('div', { class: 'row' }, h('span', {}, h('span', { class: 'mono small', text: String(k.id) }), ' ', h('span', { class: 'faint small', text: fmtDate(createdOf(String(k.id))) + ' · ' + groupLabel(k.group) })),
              h('span', { class: 'chips' }, strs(k.reasons).map((r) => h('span', { class: 'chip add', text: r }))))) : h('div', { class: 'row muted small', text: 'Nothing.' }))),
        h('div', {}, h('div', { class: 'small muted mb6', text: 'Remove' }),
          h('div', { class: 'list-box' }, remove.length ? remove.map((r) =>
            h('div', { class: 'row' }, h('span', { class: 'mono small', text: String(r.id) }), h('span', { class: 'faint small', text: fmtDate(createdOf(String(r.id))) + ' · ' + groupLabel(r.group) }))) : h('div', { class: 'row muted small', text: 'Nothing to remove with these rules.' })))));
    reveal($('prune-result'));
  });
}

async function runPrune(btn: HTMLButtonElement): Promise<void> {
  const plan = state.prunePlan;
  if (!plan) return;
  const ok = await confirmDialog('Remove old backups?', [
    h('p', { text: 'Permanently remove ' + plural(plan.remove.length, 'backup', 'backups') + ' (the ones listed under “Remove”).' }),
    h('p', { class: 'muted', text: 'Removed backups cannot be restored. The backups under “Keep” stay.' }),
  ], 'Remove backups');
  if (!ok) return;
  await act(btn, 'Removing…', 'The prune failed.', async () => {
    const raw = await api<unknown>('POST', '/v1/admin/prune', { policy: plan.policy, dryRun: false } satisfies Body<'prune'>);
    const removed = arr(isObj(raw) ? raw.removed : null);
    state.prunePlan = null;
    fill($('prune-result'), h('div', { class: 'result' }, 'Removed ' + plural(removed.length, 'backup', 'backups') + '.'));
    showNotice('Pruned: removed ' + plural(removed.length, 'backup', 'backups') + '.');
    await loadBackups();
  });
}

// ---------------------------------------------------------------- audit

function byTimeDesc(a: AuditEntry, b: AuditEntry): number {
  const ta = toDate(a.time), tb = toDate(b.time);
  return (tb ? tb.getTime() : 0) - (ta ? ta.getTime() : 0);
}
const actorName = (a: unknown) => (isObj(a) ? String(a.name || '?') : '—');
const ACTIONS: Record<string, string> = { 'delete-users': 'Delete users', 'clear-all': 'Clear all', 'restore': 'Restore', 'backup': 'Backup', 'prune': 'Prune', 'import': 'Import', 'auth-failed': 'Bad token' };
const actionLabel = (a: unknown) => (typeof a === 'string' && ACTIONS[a]) || String(a || '—');
/** Drops the "started" line of every operation that also has its outcome line (running or interrupted ones stay). */
function collapseStarted(entries: AuditEntry[]): AuditEntry[] {
  const closed = new Set<string>();
  for (const e of entries) if (e.outcome !== 'started' && e.op) closed.add(e.op);
  return entries.filter((e) => !(e.outcome === 'started' && e.op && closed.has(e.op)));
}
function outcomeBadge(o: unknown) {
  const kind = o === 'done' ? 'ok' : o === 'failed' || o === 'refused' ? 'bad' : o === 'interrupted' ? 'warn' : 'info';
  return badge(String(o || '—'), kind);
}

async function loadAudit(): Promise<void> {
  const body = tbody('au-table');
  hideError();
  if (!body.firstChild) fill(body, h('tr', {}, h('td', { class: 'empty', colspan: '7', text: 'Loading…' })));
  const q = ['limit=' + enc(select('au-limit').value)];
  const user = input('au-user').value.trim();
  if (user) q.push('user=' + enc(user));
  const since = input('au-since').value;
  if (since) {
    const [y, m, d] = since.split('-').map(Number);
    const day = new Date(y ?? NaN, (m ?? NaN) - 1, d ?? NaN);
    if (!Number.isNaN(day.getTime())) q.push('since=' + enc(day.toISOString()));
  }
  try {
    let entries = listOf<AuditEntry>(await api('GET', '/v1/admin/audit?' + q.join('&')), 'entries').slice().sort(byTimeDesc);
    if (!input('au-started').checked) entries = collapseStarted(entries);
    if (!entries.length) { fill(body, h('tr', {}, h('td', { class: 'empty', colspan: '7', text: 'No entries.' }))); return; }
    fill(body, entries.map((e) => {
      const users = strs(e.userIds);
      const a: Actor = isObj(e.actor) ? e.actor : {};
      const err = isObj(e.error) ? e.error : null;
      return h('tr', {},
        h('td', { class: 'nowrap', title: String(e.time ?? '') }, fmtDate(e.time)),
        h('td', { class: 'actor' }, h('div', { class: 'actor-name', text: actorName(e.actor) }), h('div', { class: 'faint small', text: [a.kind === 'os' ? 'CLI' : a.kind === 'api' ? 'API' : a.kind, a.remote].filter(Boolean).join(' · ') })),
        h('td', { class: 'nowrap', text: actionLabel(e.action) }),
        h('td', { title: users.join(', ') }, users.length ? [h('span', { class: 'mono small', text: users.slice(0, 2).join(', ') }), users.length > 2 ? h('span', { class: 'faint small', text: ' +' + (users.length - 2) + ' more' }) : null] : dash()),
        h('td', { class: 'nowrap' }, e.backup ? h('span', { class: 'mono small', text: String(e.backup) }) : dash()),
        h('td', {}, h('div', {}, outcomeBadge(e.outcome), err ? h('div', { class: 'small err-text', text: String(err.code ?? '') + (err.message ? ': ' + String(err.message) : '') }) : null)),
        h('td', { class: 'num', text: fmtMs(e.durationMs) }));
    }));
    labelCells($('au-table'));
  } catch (err) {
    fill(body, h('tr', {}, h('td', { class: 'empty', colspan: '7', text: 'Could not load the audit log.' })));
    report(err, 'Could not load the audit log.');
  }
}

// ---------------------------------------------------------------- danger zone

async function loadDanger(): Promise<void> {
  try {
    const s = (await api<Stats>('GET', '/v1/admin/stats')) ?? {};
    state.stats = s;
    const n = num(s.users) ?? 0;
    setText($('dz-count'), n === 0 ? 'the store is empty now' : plural(n, 'user', 'users') + ', ' + plural(num(s.messages) ?? 0, 'message', 'messages'));
  } catch (err) {
    setText($('dz-count'), 'count unknown');
    report(err, 'Could not load the user count.');
  }
}

function syncClear(): void { button('dz-clear').disabled = input('dz-input').value !== 'YES'; }

async function clearAll(): Promise<void> {
  const field = input('dz-input');
  if (field.value !== 'YES') { syncClear(); return; }
  field.disabled = true;
  await act(button('dz-clear'), 'Backing up, then clearing…', 'Clear all failed. Nothing was deleted unless the message says otherwise.', async () => {
    const raw = await api<unknown>('POST', '/v1/admin/clear', { confirm: 'YES' } satisfies Body<'clearAll'>);
    const res = isObj(raw) ? raw : {};
    const backup = res.backup ? String(res.backup) : '(unknown)';
    fill($('dz-result'), h('div', { class: 'result' },
      'Cleared ' + plural(num(res.deleted) ?? 0, 'user', 'users') + '. Backup written first: ', code(backup), '. To undo, restore this backup on the Backups page.'));
    showNotice('All users cleared. Backup: ', code(backup), '.');
    state.users = newUsersState(state.users.limit, state.users.seq + 1);
    void loadDanger();
  });
  field.value = '';
  field.disabled = false;
  syncClear();
}

// ---------------------------------------------------------------- wiring

function restartUsers(query: string): void {
  const u = state.users;
  u.query = query;
  u.cursor = null;
  u.stack = [];
  u.searchLimit = u.limit;
  void loadUsers();
}

function wire(): void {
  $('login-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const t = input('token-input').value.trim();
    if (!t) return;
    setToken(t);
    input('token-input').value = '';
    hideError();
    signedIn();
  });
  $('forget').addEventListener('click', () => {
    forgetToken();
    resetData();
    hideError();
    showLogin();
    showNotice('Token forgotten. Nothing is stored in this browser any more.');
  });
  for (const b of Array.from(document.querySelectorAll('#tabs [data-tab]'))) {
    b.addEventListener('click', () => { hideNotice(); showTab(b.getAttribute('data-tab') as Tab); });
  }
  for (const b of Array.from(document.querySelectorAll('[data-goto]'))) {
    b.addEventListener('click', () => showTab(b.getAttribute('data-goto') as Tab));
  }
  window.addEventListener('hashchange', () => {
    const t = location.hash.replace(/^#/, '');
    if ((TABS as readonly string[]).includes(t) && t !== state.tab && getToken()) showTab(t as Tab);
  });

  $('ov-refresh').addEventListener('click', () => void loadOverview());

  $('user-search').addEventListener('submit', (ev) => { ev.preventDefault(); restartUsers(input('user-q').value.trim()); });
  $('user-all').addEventListener('click', () => { input('user-q').value = ''; restartUsers(''); });
  $('user-limit').addEventListener('change', () => {
    state.users.limit = Number(select('user-limit').value) || 50;
    restartUsers(state.users.query);
  });
  $('user-more').addEventListener('click', () => {
    const u = state.users;
    u.searchLimit = Math.min(u.searchLimit + u.limit, SEARCH_MAX - 1);
    void loadUsers();
  });
  $('user-next').addEventListener('click', () => {
    const u = state.users;
    if (!u.next) return;
    u.stack.push(u.cursor);
    u.cursor = u.next;
    void loadUsers();
  });
  $('user-prev').addEventListener('click', () => {
    const u = state.users;
    if (!u.stack.length) return;
    u.cursor = u.stack.pop() ?? null;
    void loadUsers();
  });

  $('bk-create').addEventListener('click', () => void createBackup(button('bk-create')));
  $('bk-refresh').addEventListener('click', () => void loadBackups());
  $('bk-filter').addEventListener('submit', (ev) => ev.preventDefault());
  // 'input' only (selects fire it too): a 'change' on leaving the text box would re-render the rows under
  // the pointer and swallow the click that caused it.
  $('bk-filter').addEventListener('input', () => { state.bkPage = 0; renderBackups(); });
  $('bk-prev').addEventListener('click', () => { state.bkPage--; renderBackups(); });
  $('bk-next').addEventListener('click', () => { state.bkPage++; renderBackups(); });
  $('bk-prune-open').addEventListener('click', () => {
    $('prune').hidden = false;
    reveal($('prune'));
    input('pr-last').focus({ preventScroll: true });
  });
  $('prune-close').addEventListener('click', () => { $('prune').hidden = true; state.prunePlan = null; clear($('prune-result')); });
  $('prune-form').addEventListener('submit', (ev) => { ev.preventDefault(); void previewPrune(button('prune-preview')); });
  $('prune-form').addEventListener('input', () => { state.prunePlan = null; clear($('prune-result')); });

  $('audit-form').addEventListener('submit', (ev) => { ev.preventDefault(); void loadAudit(); });
  $('au-started').addEventListener('change', () => void loadAudit());

  $('dz-input').addEventListener('input', syncClear);
  $('dz-input').addEventListener('keydown', (ev) => { if (ev.key === 'Enter') { ev.preventDefault(); if (input('dz-input').value === 'YES') void clearAll(); } });
  $('dz-clear').addEventListener('click', () => void clearAll());

  // On a phone a page of backups is a tall stack of cards: start with fewer per page there.
  if (window.matchMedia('(max-width: 720px)').matches) select('bk-limit').value = '5';

  const off = -new Date().getTimezoneOffset();
  const tz = 'UTC' + (off >= 0 ? '+' : '−') + pad(Math.floor(Math.abs(off) / 60)) + (Math.abs(off) % 60 ? ':' + pad(Math.abs(off) % 60) : '');
  setText($('footer'), 'chatmem admin · times are shown in your local time (' + tz + ')');
}

wire();
if (getToken()) signedIn(); else showLogin();
