/**
 * The admin web page the daemon serves at `GET /admin`: one self-contained HTML document (inline CSS and
 * one plain inline script, no external resources) that drives the admin HTTP API with the operator's
 * admin token.
 *
 * Rules the page keeps:
 * - The token lives in `sessionStorage` only (never in a URL, a cookie or localStorage); "Forget token" removes it.
 * - Every piece of data is put into the DOM as text (`textContent` / text nodes), never parsed as HTML:
 *   user names and chat text are untrusted.
 * - Destructive actions say what they will do and that a backup is written first; restore and prune
 *   always show a dry run before the real call; clearing everything needs `YES` typed exactly.
 * - It works under `default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'`:
 *   no inline event-handler attributes, no eval, same-origin `fetch` only.
 *
 * The strings below are `String.raw` templates without interpolation: the script and the styles are
 * plain text, written as they are sent.
 */

const STYLE = String.raw`
:root {
  --bg: #f4f5f7;
  --card: #ffffff;
  --text: #1d2430;
  --muted: #5e6a79;
  --faint: #8a94a3;
  --line: #e2e6ec;
  --line-strong: #cfd5de;
  --accent: #2c5aa8;
  --accent-weak: #e9effa;
  --ok: #1d7048;
  --ok-weak: #e5f3eb;
  --warn: #85570a;
  --warn-weak: #fbf1da;
  --danger: #b3261e;
  --danger-weak: #fcebea;
  --radius: 10px;
  --mono: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace;
}
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body {
  margin: 0;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "Helvetica Neue", Arial, sans-serif,
    "Apple Color Emoji", "Segoe UI Emoji", "Noto Color Emoji";
  color: var(--text);
  background: var(--bg);
}
[hidden] { display: none !important; }
h1, h2, h3, h4 { line-height: 1.25; margin: 0; }
h1 { font-size: 22px; font-weight: 650; }
h2 { font-size: 19px; font-weight: 650; }
h3 { font-size: 16px; font-weight: 620; }
h4 { font-size: 13px; font-weight: 620; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; margin: 18px 0 8px; }
p { margin: 0 0 10px; }
code, .mono { font-family: var(--mono); font-size: .9em; }
code { background: #eef1f5; border-radius: 4px; padding: 1px 5px; overflow-wrap: anywhere; }
.muted { color: var(--muted); }
.faint { color: var(--faint); }
.small { font-size: 13px; }
.nowrap { white-space: nowrap; }

/* header */
header.top { background: var(--card); border-bottom: 1px solid var(--line); position: sticky; top: 0; z-index: 5; }
.top-inner { max-width: 1240px; margin: 0 auto; padding: 10px 24px; display: flex; align-items: center; gap: 8px 28px; flex-wrap: wrap; }
.brand { display: flex; align-items: baseline; gap: 8px; font-size: 17px; font-weight: 680; letter-spacing: -.01em; white-space: nowrap; }
.brand .dot { width: 10px; height: 10px; border-radius: 3px; background: var(--accent); display: inline-block; transform: translateY(-1px); }
.brand .sub { font-weight: 450; color: var(--muted); }
nav.tabs { display: flex; gap: 2px; flex-wrap: wrap; flex: 1; }
nav.tabs button { background: none; border: none; border-radius: 8px; padding: 6px 12px; color: var(--muted); font-weight: 520; box-shadow: none; }
nav.tabs button:hover { background: #f0f2f5; color: var(--text); }
nav.tabs button[aria-selected="true"] { background: var(--accent-weak); color: var(--accent); }
nav.tabs button.tab-danger[aria-selected="true"] { background: var(--danger-weak); color: var(--danger); }
.session { display: flex; align-items: center; gap: 10px; font-size: 13px; color: var(--muted); }
.session .pill { display: inline-flex; align-items: center; gap: 6px; }
.session .pill::before { content: ""; width: 8px; height: 8px; border-radius: 50%; background: var(--ok); }

main { max-width: 1240px; margin: 0 auto; padding: 22px 24px 48px; }
footer { max-width: 1240px; margin: 0 auto; padding: 0 24px 28px; color: var(--faint); font-size: 12.5px; }

/* banners */
.banner { display: flex; gap: 12px; align-items: flex-start; border-radius: var(--radius); padding: 12px 14px; margin-bottom: 16px; border: 1px solid; }
.banner .grow { flex: 1; min-width: 0; overflow-wrap: anywhere; }
.banner .title { font-weight: 620; margin-right: 6px; }
.banner.error { background: var(--danger-weak); border-color: #f2c4c0; color: #7a1a14; }
.banner.notice { background: var(--ok-weak); border-color: #bfe0cc; color: #14502f; }
.banner .code { font-family: var(--mono); font-size: 12.5px; background: rgba(255,255,255,.7); border: 1px solid currentColor; border-radius: 5px; padding: 0 6px; margin-right: 8px; white-space: nowrap; }
.banner button { flex: none; }

/* layout */
.section-head { display: flex; align-items: center; justify-content: space-between; gap: 12px; flex-wrap: wrap; margin-bottom: 14px; }
.section-head p { margin: 4px 0 0; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: var(--radius); padding: 18px 20px; }
.card + .card, .card + .stack, .stack + .card { margin-top: 16px; }
.card.flush { padding: 0; overflow: hidden; }
.card-head { display: flex; align-items: flex-start; justify-content: space-between; gap: 12px; margin-bottom: 12px; }
.card-head > div { min-width: 0; }
.grid2 { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 16px; margin-top: 16px; }
.grid2 > .card { margin-top: 0; }
.stats { display: grid; grid-template-columns: repeat(auto-fit, minmax(170px, 1fr)); gap: 12px; }
.stat { background: var(--card); border: 1px solid var(--line); border-radius: var(--radius); padding: 14px 16px; min-width: 0; }
.stat .label { font-size: 13px; color: var(--muted); }
.stat .value { font-size: 26px; font-weight: 650; letter-spacing: -.01em; margin-top: 2px; font-variant-numeric: tabular-nums; overflow-wrap: anywhere; }
.stat .sub { font-size: 12.5px; color: var(--faint); margin-top: 2px; overflow-wrap: anywhere; }
.split { display: grid; grid-template-columns: minmax(0, 1fr); gap: 16px; align-items: start; }
.split.has-detail { grid-template-columns: minmax(0, 1.15fr) minmax(0, 1fr); }
.split.has-detail .col-product { display: none; }
.split.has-detail td.clip { max-width: 190px; }
.narrow { max-width: 520px; margin: 40px auto; }

/* controls */
button, select, input, textarea { font: inherit; color: inherit; }
button {
  display: inline-flex; align-items: center; justify-content: center; gap: 6px;
  background: var(--card); border: 1px solid var(--line-strong); border-radius: 8px;
  padding: 6px 13px; cursor: pointer; font-weight: 520; line-height: 1.4; white-space: nowrap;
  box-shadow: 0 1px 0 rgba(16, 24, 40, .03);
}
button:hover { background: #f3f5f8; }
button:focus-visible, input:focus-visible, select:focus-visible, textarea:focus-visible, tr[tabindex]:focus-visible {
  outline: 2px solid var(--accent); outline-offset: 1px;
}
button:disabled { opacity: .5; cursor: not-allowed; }
button.primary { background: var(--accent); border-color: var(--accent); color: #fff; }
button.primary:hover:not(:disabled) { background: #244c90; }
button.danger { background: var(--danger); border-color: var(--danger); color: #fff; }
button.danger:hover:not(:disabled) { background: #951f18; }
button.danger-outline { color: var(--danger); border-color: #e6b4b0; }
button.danger-outline:hover:not(:disabled) { background: var(--danger-weak); }
button.sm { padding: 3px 9px; font-size: 13px; border-radius: 7px; }
button.link { border: none; background: none; box-shadow: none; padding: 0 2px; color: var(--accent); font-weight: 520; }
button.icon { padding: 2px 9px; font-size: 18px; line-height: 1.2; border: none; box-shadow: none; color: var(--muted); }
input[type="text"], input[type="search"], input[type="password"], input[type="number"], input[type="date"], select, textarea {
  background: #fff; border: 1px solid var(--line-strong); border-radius: 8px; padding: 6px 10px; min-width: 0;
}
textarea { width: 100%; font-family: var(--mono); font-size: 13.5px; resize: vertical; }
label { font-weight: 520; }
label.inline { display: inline-flex; align-items: center; gap: 8px; font-weight: 450; color: var(--muted); }
.toolbar { display: flex; align-items: center; gap: 8px; flex-wrap: wrap; }
.toolbar input[type="search"] { flex: 1 1 260px; }
.field { display: flex; flex-direction: column; gap: 4px; }
.field .hint { font-size: 12.5px; color: var(--faint); font-weight: 400; }
.form-grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 12px 14px; margin: 12px 0 14px; }
.choice { display: flex; gap: 10px; align-items: flex-start; padding: 8px 0; font-weight: 450; }
.choice input { margin-top: 4px; }
.choice b { font-weight: 600; }
fieldset { border: none; padding: 0; margin: 0 0 12px; min-width: 0; }
legend { font-weight: 600; padding: 0; margin-bottom: 2px; }
.actions { display: flex; gap: 8px; flex-wrap: wrap; align-items: center; margin-top: 14px; }

/* tables */
.table-wrap { overflow-x: auto; }
table { width: 100%; border-collapse: collapse; font-size: 14px; }
th { text-align: left; font-weight: 600; color: var(--muted); font-size: 12.5px; background: #f8f9fb; padding: 9px 12px; border-bottom: 1px solid var(--line); white-space: nowrap; }
td { padding: 9px 12px; border-top: 1px solid var(--line); vertical-align: top; overflow-wrap: break-word; }
td.clip, .clip { max-width: 280px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
td .clip { max-width: 180px; }
tbody tr:first-child td { border-top: none; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.id { font-family: var(--mono); font-size: 13px; white-space: nowrap; }
#bk-table th, #bk-table td { padding-left: 9px; padding-right: 9px; }
#bk-table td.id { font-size: 12.5px; }
td.actions-cell { white-space: nowrap; }
tr.clickable { cursor: pointer; }
tr.clickable:hover td { background: #f7f9fc; }
tr.selected td { background: var(--accent-weak) !important; }
td.empty { text-align: center; color: var(--muted); padding: 28px 12px; }
.btns { display: flex; gap: 4px; }
.kv { width: 100%; font-size: 13.5px; }
.kv td { padding: 5px 8px; border-top: 1px solid var(--line); }
.kv td:first-child { color: var(--muted); width: 38%; font-family: var(--mono); font-size: 12.5px; }
.kv td:last-child { font-family: var(--mono); font-size: 12.5px; white-space: pre-wrap; }
.pager { display: flex; align-items: center; gap: 8px; padding: 10px 12px; border-top: 1px solid var(--line); flex-wrap: wrap; }
.pager .grow { flex: 1; }

/* badges and chips */
.badge { display: inline-block; font-size: 12px; font-weight: 600; border-radius: 999px; padding: 1px 9px; white-space: nowrap; background: #eef1f5; color: var(--muted); }
.badge.ok { background: var(--ok-weak); color: var(--ok); }
.badge.warn { background: var(--warn-weak); color: var(--warn); }
.badge.bad { background: var(--danger-weak); color: var(--danger); }
.badge.info { background: var(--accent-weak); color: var(--accent); }
.chips { display: flex; flex-wrap: wrap; gap: 5px; }
.chip { display: inline-block; font-family: var(--mono); font-size: 12.5px; background: #eef1f5; border-radius: 6px; padding: 1px 7px; overflow-wrap: anywhere; }
.chip.add { background: var(--ok-weak); color: var(--ok); }
.chip.rem { background: var(--danger-weak); color: var(--danger); }
.chip.chg { background: var(--warn-weak); color: var(--warn); }

/* detail */
.detail { position: sticky; top: 70px; max-height: calc(100vh - 90px); overflow: auto; }
dl.facts { display: grid; grid-template-columns: max-content minmax(0, 1fr); gap: 5px 16px; margin: 0; font-size: 14px; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
ul.plain { margin: 0; padding-left: 18px; }
.chat { display: flex; flex-direction: column; gap: 8px; padding: 12px; background: #eef1f5; border-radius: 10px; }
.msg { max-width: 82%; align-self: flex-start; background: #fff; border: 1px solid var(--line); border-radius: 12px 12px 12px 4px; padding: 7px 11px; }
.msg.out { align-self: flex-end; background: #e3ecfa; border-color: #cbd9f1; border-radius: 12px 12px 4px 12px; }
.msg .who { font-size: 12px; color: var(--muted); display: flex; gap: 8px; justify-content: space-between; }
.msg .who b { font-weight: 600; }
.msg .text { white-space: pre-wrap; overflow-wrap: anywhere; }
.msg .meta { font-family: var(--mono); font-size: 11.5px; color: var(--faint); margin-top: 3px; overflow-wrap: anywhere; }
.danger-box { border: 1px solid #efc6c2; background: #fffafa; border-radius: var(--radius); padding: 14px 16px; margin-top: 18px; }
.danger-box h3 { color: var(--danger); }
.result { border-radius: 8px; padding: 10px 12px; background: var(--ok-weak); color: #14502f; margin-top: 12px; overflow-wrap: anywhere; }
.result.warn { background: var(--warn-weak); color: #5e3d05; }
.diff-sum { display: flex; gap: 8px; flex-wrap: wrap; margin: 6px 0 10px; }
.diff-list { margin-top: 12px; }
.cols { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 16px; }
.list-box { border: 1px solid var(--line); border-radius: 8px; max-height: 340px; overflow: auto; }
.list-box .row { display: flex; gap: 8px; align-items: baseline; justify-content: space-between; padding: 6px 10px; border-top: 1px solid var(--line); flex-wrap: wrap; }
.list-box .row:first-child { border-top: none; }
.activity { list-style: none; margin: 0; padding: 0; }
.activity li { display: flex; gap: 10px; align-items: baseline; padding: 7px 0; border-top: 1px solid var(--line); flex-wrap: wrap; }
.activity li:first-child { border-top: none; }
.activity .when { color: var(--faint); font-size: 13px; min-width: 86px; }

/* danger zone */
.danger-card { border-color: #efc6c2; }
.danger-card h3 { color: var(--danger); margin-bottom: 8px; }
.danger-card input { font-family: var(--mono); width: 9em; }

/* dialog */
dialog { border: none; border-radius: 12px; padding: 0; width: min(520px, calc(100vw - 32px)); box-shadow: 0 20px 50px rgba(16, 24, 40, .25); color: var(--text); }
dialog::backdrop { background: rgba(20, 26, 36, .45); }
dialog form { padding: 20px 22px; margin: 0; }
dialog h2 { font-size: 18px; margin-bottom: 12px; }
dialog .body { overflow-wrap: anywhere; }
dialog .body p { margin-bottom: 10px; }
dialog .dlg-actions { display: flex; justify-content: flex-end; gap: 8px; margin-top: 18px; }

@media (max-width: 1180px) {
  #bk-table .btns { flex-wrap: wrap; }
}
@media (max-width: 980px) {
  .split.has-detail { grid-template-columns: minmax(0, 1fr); }
  .detail { position: static; max-height: none; }
}
@media (max-width: 720px) {
  .top-inner { padding: 10px 14px; }
  main { padding: 16px 12px 40px; }
  footer { padding: 0 14px 24px; }
  .grid2, .cols { grid-template-columns: minmax(0, 1fr); }
  .card { padding: 14px; }
  .stat .value { font-size: 22px; }
  .msg { max-width: 92%; }
  header.top { position: static; }
  .top-inner { gap: 6px 12px; }
  .session { order: 2; margin-left: auto; }
  .session .pill { display: none; }
  nav.tabs { order: 3; flex-basis: 100%; }
  nav.tabs button { padding: 5px 10px; }
  /* tables become label/value cards */
  table.stack-sm thead { display: none; }
  table.stack-sm, table.stack-sm tbody, table.stack-sm tr { display: block; width: 100%; }
  table.stack-sm tr { border-top: 1px solid var(--line); padding: 8px 0; }
  table.stack-sm tbody tr:first-child { border-top: none; }
  table.stack-sm td { display: flex; align-items: flex-start; gap: 12px; border: none; padding: 3px 14px; text-align: left; white-space: normal; max-width: none; }
  table.stack-sm td > * { min-width: 0; }
  table.stack-sm td[data-label]::before { content: attr(data-label); flex: none; width: 84px; color: var(--muted); font-size: 12.5px; font-family: system-ui, sans-serif; padding-top: 1px; }
  table.stack-sm td.empty { display: block; text-align: center; }
  .btns { flex-wrap: wrap; }
  table.stack-sm td.clip, .split.has-detail table.stack-sm td.clip { max-width: none; overflow: visible; white-space: normal; }
  .split.has-detail .col-product { display: flex; }
}
`;

const BODY = String.raw`
<header class="top">
  <div class="top-inner">
    <div class="brand"><span class="dot" aria-hidden="true"></span><span>chatmem</span><span class="sub">admin</span></div>
    <nav class="tabs" id="tabs" role="tablist" aria-label="Sections" hidden>
      <button type="button" role="tab" data-tab="overview" aria-selected="true">Overview</button>
      <button type="button" role="tab" data-tab="users" aria-selected="false">Users</button>
      <button type="button" role="tab" data-tab="backups" aria-selected="false">Backups</button>
      <button type="button" role="tab" data-tab="audit" aria-selected="false">Audit log</button>
      <button type="button" role="tab" data-tab="danger" aria-selected="false" class="tab-danger">Danger zone</button>
    </nav>
    <div class="session" id="session" hidden>
      <span class="pill">Signed in</span>
      <button type="button" class="sm" id="forget">Forget token</button>
    </div>
  </div>
</header>

<main>
  <div id="banner" class="banner error" role="alert" hidden></div>
  <div id="notice" class="banner notice" role="status" hidden></div>

  <section id="login" class="card narrow" aria-labelledby="login-title">
    <h1 id="login-title">Sign in</h1>
    <p class="muted" style="margin-top:8px">Paste the admin token of this chatmem daemon. It is kept only in this browser tab and is removed when you close the tab or press “Forget token”.</p>
    <form id="login-form" autocomplete="off">
      <div class="field">
        <label for="token-input">Admin token</label>
        <input id="token-input" type="password" autocomplete="off" spellcheck="false" autocapitalize="off" required>
      </div>
      <div class="actions"><button type="submit" class="primary">Sign in</button></div>
    </form>
  </section>

  <section id="tab-overview" class="tab" role="tabpanel" hidden>
    <div class="section-head">
      <div><h1>Overview</h1></div>
      <button type="button" id="ov-refresh">Refresh</button>
    </div>
    <div class="stats" id="ov-stats"></div>
    <div class="grid2">
      <div class="card"><div class="card-head"><h3>Latest backup</h3><button type="button" class="link" data-goto="backups">All backups</button></div><div id="ov-backup"><span class="muted">Loading…</span></div></div>
      <div class="card"><div class="card-head"><h3>Recent activity</h3><button type="button" class="link" data-goto="audit">Audit log</button></div><div id="ov-audit"><span class="muted">Loading…</span></div></div>
    </div>
  </section>

  <section id="tab-users" class="tab" role="tabpanel" hidden>
    <div class="section-head">
      <div><h1>Users</h1><p class="muted small">Search finds a user by ID, name, address, product, summary or chat text (1–2 characters: IDs starting with them).</p></div>
    </div>
    <form id="user-search" class="toolbar" role="search" style="margin-bottom:14px">
      <input id="user-q" type="search" placeholder="User ID, name, address, product or chat text" aria-label="Search users" autocomplete="off" spellcheck="false">
      <button type="submit" class="primary">Search</button>
      <button type="button" id="user-all">Show all</button>
      <label class="inline">Per page
        <select id="user-limit"><option>25</option><option selected>50</option><option>100</option></select>
      </label>
    </form>
    <div class="split" id="user-split">
      <div class="card flush">
        <div class="table-wrap">
          <table id="user-table" class="stack-sm">
            <thead><tr><th>ID</th><th>Name</th><th class="col-product">Product</th><th class="num">Messages</th><th>Updated</th></tr></thead>
            <tbody></tbody>
          </table>
        </div>
        <div class="pager">
          <span id="user-info" class="muted small grow"></span>
          <button type="button" class="sm" id="user-prev">← Previous</button>
          <button type="button" class="sm" id="user-next">Next →</button>
        </div>
      </div>
      <aside id="detail" class="card detail" aria-live="polite" hidden></aside>
    </div>
  </section>

  <section id="tab-backups" class="tab" role="tabpanel" hidden>
    <div class="section-head">
      <div><h1>Backups</h1><p class="muted small">Every delete, clear and restore writes a verified backup first. Newest first.</p></div>
      <div class="toolbar">
        <label class="inline"><input type="checkbox" id="bk-gzip"> Compress (gzip)</label>
        <button type="button" class="primary" id="bk-create">Create backup</button>
        <button type="button" id="bk-prune-open">Prune old backups…</button>
        <button type="button" id="bk-refresh">Refresh</button>
      </div>
    </div>
    <div class="card flush">
      <div class="table-wrap">
        <table id="bk-table" class="stack-sm">
          <thead><tr><th>ID</th><th>Created</th><th class="num">Users</th><th class="num">Size</th><th>Reason</th><th>State</th><th>Actions</th></tr></thead>
          <tbody></tbody>
        </table>
      </div>
    </div>
    <div id="bk-panel" class="card" hidden></div>
    <div id="prune" class="card" hidden>
      <div class="card-head">
        <div><h3>Prune old backups</h3><p class="muted small" style="margin:4px 0 0">Choose what to keep. A backup is kept if any rule keeps it. The newest backup and backups without a date are always kept. You will see the list before anything is removed.</p></div>
        <button type="button" class="icon" id="prune-close" aria-label="Close">×</button>
      </div>
      <form id="prune-form" autocomplete="off">
        <div class="form-grid">
          <div class="field"><label for="pr-last">Keep last</label><input id="pr-last" type="number" min="0" step="1" inputmode="numeric" placeholder="e.g. 10"><span class="hint">newest N backups</span></div>
          <div class="field"><label for="pr-daily">Keep daily</label><input id="pr-daily" type="number" min="0" step="1" inputmode="numeric" placeholder="e.g. 7"><span class="hint">one per day, N days</span></div>
          <div class="field"><label for="pr-weekly">Keep weekly</label><input id="pr-weekly" type="number" min="0" step="1" inputmode="numeric" placeholder="e.g. 4"><span class="hint">one per week, N weeks</span></div>
          <div class="field"><label for="pr-monthly">Keep monthly</label><input id="pr-monthly" type="number" min="0" step="1" inputmode="numeric" placeholder="e.g. 6"><span class="hint">one per month, N months</span></div>
          <div class="field"><label for="pr-within">Keep all within</label><input id="pr-within" type="text" spellcheck="false" placeholder="e.g. 30d"><span class="hint">e.g. 36h, 30d, 2m, 1y</span></div>
        </div>
        <div class="actions"><button type="submit" class="primary" id="prune-preview">Preview (dry run)</button></div>
      </form>
      <div id="prune-result"></div>
    </div>
  </section>

  <section id="tab-audit" class="tab" role="tabpanel" hidden>
    <div class="section-head">
      <div><h1>Audit log</h1><p class="muted small">Who did what, newest first.</p></div>
    </div>
    <form id="audit-form" class="toolbar" style="margin-bottom:14px" autocomplete="off">
      <input id="au-user" type="search" placeholder="Filter by user ID" aria-label="Filter by user ID" spellcheck="false">
      <label class="inline">Since <input id="au-since" type="date"></label>
      <label class="inline">Last <select id="au-limit"><option>50</option><option selected>100</option><option>500</option></select> entries</label>
      <label class="inline" title="Each operation writes a start line and an outcome line"><input type="checkbox" id="au-started"> Show start lines</label>
      <button type="submit" class="primary">Apply</button>
    </form>
    <div class="card flush">
      <div class="table-wrap">
        <table id="au-table" class="stack-sm">
          <thead><tr><th>Time</th><th>Actor</th><th>Action</th><th>Users</th><th>Backup</th><th>Outcome</th><th class="num">Duration</th></tr></thead>
          <tbody></tbody>
        </table>
      </div>
    </div>
  </section>

  <section id="tab-danger" class="tab" role="tabpanel" hidden>
    <div class="section-head"><div><h1>Danger zone</h1></div></div>
    <div class="card danger-card">
      <h3>Clear all users</h3>
      <p>This deletes the memory of <b>every</b> user (<span id="dz-count">…</span>): profiles, flags, slots and chat history.</p>
      <p class="muted">A full backup is written and verified first. If you need the data back, restore that backup from the Backups page.</p>
      <div class="field" style="margin-top:14px">
        <label for="dz-input">Type <code>YES</code> to confirm</label>
        <div class="toolbar">
          <input id="dz-input" type="text" autocomplete="off" spellcheck="false" autocapitalize="off" aria-describedby="dz-help">
          <button type="button" class="danger" id="dz-clear" disabled>Clear all users</button>
        </div>
        <span id="dz-help" class="hint">Capital letters, exactly YES.</span>
      </div>
      <div id="dz-result"></div>
    </div>
  </section>
</main>
<footer id="footer"></footer>

<dialog id="dlg" aria-labelledby="dlg-title">
  <form method="dialog">
    <h2 id="dlg-title"></h2>
    <div class="body" id="dlg-body"></div>
    <div class="dlg-actions">
      <button value="cancel" id="dlg-cancel">Cancel</button>
      <button value="ok" id="dlg-ok" class="danger">OK</button>
    </div>
  </form>
</dialog>
`;

const SCRIPT = String.raw`
(function () {
  'use strict';

  var TOKEN_KEY = 'chatmem.adminToken';
  // The API sits next to the page: /admin -> /v1/..., /prefix/admin -> /prefix/v1/... (behind a path-prefix proxy).
  var BASE = location.pathname.replace(/\/admin\/?$/, '');
  var TABS = ['overview', 'users', 'backups', 'audit', 'danger'];
  var KNOWN_FIELDS = ['user_id', 'session_token', 'name', 'gender', 'is_company', 'product', 'serial', 'address',
    'summary_context', 'history', 'last_answer', 'flags', 'slots', 'created_at', 'updated_at'];
  var LIST_MAX = 200;

  var state = {
    memoryToken: '',
    tab: 'overview',
    users: { query: '', cursor: null, stack: [], next: null, limit: 50, loaded: false, selected: null, seq: 0 },
    detailSeq: 0,
    historyLimit: 20,
    backups: [],
    verified: {},
    prunePlan: null,
    stats: null
  };

  /* ---------------- DOM helpers (text only: never parse data as HTML) ---------------- */

  function $(id) { return document.getElementById(id); }

  function h(tag, props) {
    var el = document.createElement(tag);
    if (props) {
      Object.keys(props).forEach(function (k) {
        var v = props[k];
        if (v === undefined || v === null || v === false) return;
        if (k === 'class') el.className = v;
        else if (k === 'text') el.textContent = String(v);
        else if (k.slice(0, 2) === 'on') { if (typeof v === 'function') el.addEventListener(k.slice(2), v); }
        else if (k === 'value' || k === 'checked' || k === 'disabled' || k === 'type') el[k] = v;
        else el.setAttribute(k, v === true ? '' : String(v));
      });
    }
    for (var i = 2; i < arguments.length; i++) add(el, arguments[i]);
    return el;
  }

  function add(el, child) {
    if (child === null || child === undefined || child === false) return;
    if (Array.isArray(child)) { child.forEach(function (c) { add(el, c); }); return; }
    if (child instanceof Node) { el.appendChild(child); return; }
    el.appendChild(document.createTextNode(String(child)));
  }

  /** Copies each column's header text onto its cells (data-label), for the stacked layout on small screens. */
  function labelCells(table) {
    var heads = Array.prototype.map.call(table.querySelectorAll('thead th'), function (th) { return th.textContent; });
    Array.prototype.forEach.call(table.querySelectorAll('tbody tr'), function (tr) {
      Array.prototype.forEach.call(tr.children, function (td, i) {
        if (!td.hasAttribute('colspan') && heads[i]) td.setAttribute('data-label', heads[i]);
      });
    });
  }

  function setText(el, value) { el.textContent = value === null || value === undefined ? '' : String(value); }
  function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); }
  function fill(el) { clear(el); for (var i = 1; i < arguments.length; i++) add(el, arguments[i]); return el; }
  function code(text) { return h('code', { text: text }); }
  function dash() { return h('span', { class: 'faint', text: '—' }); }
  function orDash(v) { return v === null || v === undefined || v === '' ? dash() : String(v); }
  function badge(text, kind, title) { return h('span', { class: 'badge' + (kind ? ' ' + kind : ''), text: text, title: title }); }

  /* ---------------- formatting ---------------- */

  function pad(n) { return n < 10 ? '0' + n : String(n); }
  function toDate(v) {
    if (v === null || v === undefined || v === '') return null;
    var d = new Date(v);
    return isNaN(d.getTime()) ? null : d;
  }
  function fmtDate(v) {
    var d = toDate(v);
    if (!d) return '—';
    return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' + pad(d.getHours()) + ':' + pad(d.getMinutes());
  }
  function fmtAge(seconds) {
    if (typeof seconds !== 'number' || !isFinite(seconds)) return '—';
    var s = Math.max(0, Math.round(seconds));
    if (s < 60) return '< 1 min';
    if (s < 3600) return Math.floor(s / 60) + ' min';
    if (s < 86400) return Math.floor(s / 3600) + ' h';
    var d = Math.floor(s / 86400);
    return d + (d === 1 ? ' day' : ' days');
  }
  function fmtAgo(v) {
    var d = toDate(v);
    if (!d) return '—';
    var s = (Date.now() - d.getTime()) / 1000;
    if (s < 45) return 'just now';
    return fmtAge(s) + ' ago';
  }
  function fmtInt(n) { return typeof n === 'number' && isFinite(n) ? n.toLocaleString('en-US') : '—'; }
  function fmtBytes(n) {
    if (typeof n !== 'number' || !isFinite(n)) return '—';
    var units = ['B', 'KB', 'MB', 'GB', 'TB'];
    var i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? String(n) : n.toFixed(n < 10 ? 1 : 0)) + ' ' + units[i];
  }
  function fmtMs(ms) {
    if (typeof ms !== 'number' || !isFinite(ms)) return '—';
    if (ms < 1000) return Math.round(ms) + ' ms';
    if (ms < 60000) return (ms / 1000).toFixed(1) + ' s';
    return Math.floor(ms / 60000) + ' min ' + Math.round((ms % 60000) / 1000) + ' s';
  }
  function fmtValue(v) {
    if (typeof v === 'string') return v;
    try { return JSON.stringify(v); } catch { return String(v); }
  }
  function when(v) { return h('span', { class: 'nowrap', title: toDate(v) ? toDate(v).toISOString() : null, text: fmtDate(v) }); }
  function plural(n, one, many) { return fmtInt(n) + ' ' + (n === 1 ? one : many); }

  /* ---------------- token ---------------- */

  function getToken() {
    try { return sessionStorage.getItem(TOKEN_KEY) || ''; } catch { return state.memoryToken; }
  }
  function setToken(t) {
    state.memoryToken = t;
    try { sessionStorage.setItem(TOKEN_KEY, t); } catch { /* private mode: memory only */ }
  }
  function forgetToken() {
    state.memoryToken = '';
    try { sessionStorage.removeItem(TOKEN_KEY); } catch { /* nothing stored */ }
  }

  /* ---------------- API ---------------- */

  function ApiError(status, errCode, message) {
    var e = new Error(message);
    e.name = 'ApiError';
    e.status = status;
    e.code = errCode;
    return e;
  }

  function enc(s) { return encodeURIComponent(s); }

  async function api(method, path, body) {
    var token = getToken();
    if (!token) { showLogin(); throw ApiError(401, 'E_AUTH', 'No admin token: sign in first.'); }
    var headers = { 'Authorization': 'Bearer ' + token, 'Accept': 'application/json' };
    var init = { method: method, headers: headers, cache: 'no-store', credentials: 'same-origin', referrerPolicy: 'no-referrer' };
    if (body !== undefined) { headers['Content-Type'] = 'application/json'; init.body = JSON.stringify(body); }
    var res;
    try {
      res = await fetch(BASE + path, init);
    } catch (err) {
      throw ApiError(0, 'E_NETWORK', 'Cannot reach the chatmem daemon (' + (err && err.message ? err.message : 'network error') + ').');
    }
    var raw = '';
    try { raw = await res.text(); } catch { raw = ''; }
    var data = null;
    var parsed = false;
    if (raw) { try { data = JSON.parse(raw); parsed = true; } catch { parsed = false; } }
    if (!res.ok) {
      var e = data && typeof data === 'object' && data.error && typeof data.error === 'object' ? data.error : {};
      var err = ApiError(res.status, typeof e.code === 'string' ? e.code : 'HTTP_' + res.status,
        typeof e.message === 'string' ? e.message : (res.statusText || 'Request failed') + ' (' + method + ' ' + path.split('?')[0] + ')');
      if (res.status === 401) authFailed(err);
      throw err;
    }
    if (raw && !parsed) throw ApiError(res.status, 'E_BAD_RESPONSE', 'The daemon answered ' + method + ' ' + path.split('?')[0] + ' with something that is not JSON.');
    return data;
  }

  /** Accepts a bare array or one wrapped in an object ({items}, {backups}, {entries}, {results}...). */
  function listOf(data) {
    if (Array.isArray(data)) return data;
    if (data && typeof data === 'object') {
      var keys = Array.prototype.slice.call(arguments, 1).concat(['items', 'results', 'entries', 'backups', 'users', 'data']);
      for (var i = 0; i < keys.length; i++) if (Array.isArray(data[keys[i]])) return data[keys[i]];
    }
    return [];
  }
  function arr(v) { return Array.isArray(v) ? v : []; }

  /* ---------------- banners ---------------- */

  function showError(err, what) {
    var b = $('banner');
    var c = err && err.code ? String(err.code) : 'E_UNKNOWN';
    var m = err && err.message ? String(err.message) : String(err);
    fill(b,
      h('div', { class: 'grow' },
        h('span', { class: 'title', text: what || 'Something went wrong.' }),
        h('span', { class: 'code', text: c }),
        h('span', { text: m })),
      h('button', { type: 'button', class: 'sm', text: 'Dismiss', onclick: hideError }));
    b.hidden = false;
    b.scrollIntoView({ block: 'nearest' });
  }
  function hideError() { $('banner').hidden = true; clear($('banner')); }

  function showNotice() {
    var n = $('notice');
    var parts = Array.prototype.slice.call(arguments);
    fill(n, h('div', { class: 'grow' }, parts), h('button', { type: 'button', class: 'sm', text: 'Dismiss', onclick: hideNotice }));
    n.hidden = false;
  }
  function hideNotice() { $('notice').hidden = true; clear($('notice')); }

  function formError(message) { return ApiError(0, 'E_FORM', message); }

  /** Runs a user action: busy button, errors to the banner. */
  async function act(button, busyLabel, what, fn) {
    hideError();
    var label = button ? button.textContent : '';
    if (button) { button.disabled = true; button.setAttribute('aria-busy', 'true'); if (busyLabel) button.textContent = busyLabel; }
    try {
      return await fn();
    } catch (err) {
      if (!(err && err.status === 401)) showError(err, what);
      return undefined;
    } finally {
      if (button) { button.disabled = false; button.removeAttribute('aria-busy'); if (busyLabel) button.textContent = label; }
    }
  }

  /* ---------------- dialog ---------------- */

  function confirmDialog(title, body, okLabel) {
    var dlg = $('dlg');
    if (typeof dlg.showModal !== 'function') {
      var plain = document.createElement('div');
      add(plain, body);
      return Promise.resolve(window.confirm(title + '\n\n' + plain.textContent));
    }
    setText($('dlg-title'), title);
    fill($('dlg-body'), body);
    setText($('dlg-ok'), okLabel || 'OK');
    dlg.returnValue = '';
    return new Promise(function (resolve) {
      dlg.addEventListener('close', function () { resolve(dlg.returnValue === 'ok'); }, { once: true });
      dlg.showModal();
      $('dlg-cancel').focus();
    });
  }

  /* ---------------- session and tabs ---------------- */

  function showLogin() {
    $('login').hidden = false;
    $('tabs').hidden = true;
    $('session').hidden = true;
    TABS.forEach(function (t) { $('tab-' + t).hidden = true; });
    $('token-input').value = '';
    $('token-input').focus();
  }

  function authFailed(err) {
    forgetToken();
    resetData();
    showLogin();
    showError(err, 'The daemon refused the admin token.');
  }

  function signedIn() {
    $('login').hidden = true;
    $('tabs').hidden = false;
    $('session').hidden = false;
    var wanted = location.hash.replace(/^#/, '');
    showTab(TABS.indexOf(wanted) >= 0 ? wanted : 'overview');
  }

  function resetData() {
    state.users = { query: '', cursor: null, stack: [], next: null, limit: state.users.limit, loaded: false, selected: null, seq: state.users.seq + 1 };
    state.backups = [];
    state.verified = {};
    state.prunePlan = null;
    state.stats = null;
    state.detailSeq++;
    clear($('ov-stats'));
    fill($('ov-backup'), h('span', { class: 'muted', text: 'Loading…' }));
    fill($('ov-audit'), h('span', { class: 'muted', text: 'Loading…' }));
    clear(document.querySelector('#user-table tbody'));
    clear(document.querySelector('#bk-table tbody'));
    clear(document.querySelector('#au-table tbody'));
    closeDetail();
    $('bk-panel').hidden = true;
    clear($('bk-panel'));
    $('prune').hidden = true;
    clear($('prune-result'));
    clear($('dz-result'));
    $('dz-input').value = '';
    $('dz-clear').disabled = true;
    setText($('dz-count'), '…');
    $('user-q').value = '';
    hideNotice();
  }

  function showTab(name) {
    state.tab = name;
    TABS.forEach(function (t) { $('tab-' + t).hidden = t !== name; });
    Array.prototype.forEach.call(document.querySelectorAll('#tabs [data-tab]'), function (b) {
      b.setAttribute('aria-selected', b.getAttribute('data-tab') === name ? 'true' : 'false');
    });
    if (location.hash !== '#' + name) history.replaceState(null, '', '#' + name);
    if (name === 'overview') loadOverview();
    else if (name === 'users') { if (!state.users.loaded) loadUsers(); }
    else if (name === 'backups') loadBackups();
    else if (name === 'audit') loadAudit();
    else if (name === 'danger') loadDanger();
  }

  /* ---------------- overview ---------------- */

  function stat(label, value, sub, title) {
    return h('div', { class: 'stat', title: title },
      h('div', { class: 'label', text: label }),
      h('div', { class: 'value', text: value }),
      h('div', { class: 'sub', text: sub || '\u00a0' }));
  }

  function sortBackups(list) {
    return list.slice().sort(function (a, b) {
      var ta = toDate(a.createdAt), tb = toDate(b.createdAt);
      if (ta && tb && ta.getTime() !== tb.getTime()) return tb.getTime() - ta.getTime();
      if (ta && !tb) return -1;
      if (!ta && tb) return 1;
      return String(b.id) < String(a.id) ? -1 : String(b.id) > String(a.id) ? 1 : 0;
    });
  }

  async function loadOverview() {
    hideError();
    var results = await Promise.allSettled([
      api('GET', '/v1/admin/stats'),
      api('GET', '/v1/admin/backups'),
      api('GET', '/v1/admin/audit?limit=20')
    ]);
    if (state.tab !== 'overview') return;
    var s = results[0].status === 'fulfilled' ? results[0].value || {} : null;
    var backups = results[1].status === 'fulfilled' ? sortBackups(listOf(results[1].value, 'backups')) : null;
    var audit = results[2].status === 'fulfilled' ? listOf(results[2].value, 'entries') : null;
    if (s) state.stats = s;
    if (backups) state.backups = backups;
    var newest = backups && backups.length ? backups[0] : null;
    fill($('ov-stats'),
      stat('Users', s ? fmtInt(s.users) : '—', 'in the store'),
      stat('Messages', s ? fmtInt(s.messages) : '—', s && s.users ? 'about ' + fmtInt(Math.round(s.messages / s.users)) + ' per user' : 'chat history entries'),
      stat('Size', s ? fmtBytes(s.bytes) : '—', 'stored records'),
      stat('Last update', s && s.lastUpdate ? fmtAgo(s.lastUpdate) : '—', s && s.lastUpdate ? fmtDate(s.lastUpdate) : 'no data yet', s && s.lastUpdate ? String(s.lastUpdate) : null),
      stat('Backups', backups ? fmtInt(backups.length) : '—', newest ? 'newest ' + (newest.createdAt ? fmtAgo(newest.createdAt) : newest.id) : 'none yet'));
    if (!backups) fill($('ov-backup'), h('span', { class: 'muted', text: 'Could not load backups.' }));
    else if (!newest) fill($('ov-backup'), h('p', { class: 'muted', text: 'No backups yet. Create one on the Backups page.' }));
    else {
      fill($('ov-backup'), h('dl', { class: 'facts' },
        h('dt', { text: 'ID' }), h('dd', {}, code(newest.id)),
        h('dt', { text: 'Created' }), h('dd', {}, when(newest.createdAt), h('span', { class: 'muted', text: newest.createdAt ? '  (' + fmtAgo(newest.createdAt) + ')' : '' })),
        h('dt', { text: 'Reason' }), h('dd', { text: reasonLabel(newest.reason) }),
        h('dt', { text: 'Users' }), h('dd', { text: newest.users === null || newest.users === undefined ? '—' : fmtInt(newest.users) }),
        h('dt', { text: 'Size' }), h('dd', { text: fmtBytes(newest.size) }),
        h('dt', { text: 'State' }), h('dd', {}, stateBadge(newest))));
    }
    if (!audit) fill($('ov-audit'), h('span', { class: 'muted', text: 'Could not load the audit log.' }));
    else if (!audit.length) fill($('ov-audit'), h('p', { class: 'muted', text: 'Nothing yet.' }));
    else {
      var items = collapseStarted(audit.slice().sort(byTimeDesc)).slice(0, 6).map(function (e) {
        return h('li', {},
          h('span', { class: 'when', text: fmtAgo(e.time), title: fmtDate(e.time) }),
          h('span', { text: actionLabel(e.action) }),
          outcomeBadge(e.outcome),
          h('span', { class: 'muted small', text: actorName(e.actor) }));
      });
      fill($('ov-audit'), h('ul', { class: 'activity' }, items));
    }
    var failed = results.filter(function (r) { return r.status === 'rejected'; });
    if (failed.length && !(failed[0].reason && failed[0].reason.status === 401)) showError(failed[0].reason, 'Could not load the overview.');
  }

  /* ---------------- users ---------------- */

  function userRow(u) {
    var tr = h('tr', { class: 'clickable', tabindex: '0', 'data-id': u.user_id, title: 'Open ' + u.user_id },
      h('td', { class: 'id', text: u.user_id }),
      h('td', { class: 'clip', title: u.name ? String(u.name) : null }, orDash(u.name)),
      h('td', { class: 'clip col-product', title: u.product ? String(u.product) : null }, orDash(u.product)),
      h('td', { class: 'num', text: fmtInt(u.messages) }),
      h('td', { class: 'nowrap', title: fmtDate(u.updated_at), text: fmtAgo(u.updated_at) }));
    if (state.users.selected === u.user_id) tr.classList.add('selected');
    tr.addEventListener('click', function () { openUser(u.user_id); });
    tr.addEventListener('keydown', function (ev) { if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); openUser(u.user_id); } });
    return tr;
  }

  function summaryOfRecord(r) {
    return { user_id: r.user_id, name: r.name, product: r.product, messages: arr(r.history).length, updated_at: r.updated_at, created_at: r.created_at };
  }

  async function lookupId(q) {
    if (!q || /\s/.test(q)) return null;
    try {
      var r = await api('GET', '/v1/admin/users/' + enc(q));
      return r && typeof r === 'object' && r.user_id ? r : null;
    } catch (err) {
      if (err && (err.status === 404 || err.status === 400)) return null;
      throw err;
    }
  }

  async function loadUsers() {
    var u = state.users;
    var seq = ++u.seq;
    var body = document.querySelector('#user-table tbody');
    hideError();
    if (!body.firstChild) fill(body, h('tr', {}, h('td', { class: 'empty', colspan: '5', text: 'Loading…' })));
    $('user-prev').disabled = true;
    $('user-next').disabled = true;
    try {
      var items, next = null;
      if (u.query) {
        var both = await Promise.all([api('GET', '/v1/admin/search?q=' + enc(u.query) + '&limit=' + 200), lookupId(u.query)]);
        items = listOf(both[0], 'items');
        var direct = both[1];
        if (direct && !items.some(function (x) { return x.user_id === direct.user_id; })) items.unshift(summaryOfRecord(direct));
      } else {
        var page = await api('GET', '/v1/admin/users?limit=' + u.limit + (u.cursor ? '&cursor=' + enc(u.cursor) : ''));
        items = listOf(page, 'items');
        next = page && typeof page === 'object' && typeof page.next === 'string' && page.next ? page.next : null;
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
      if (u.query) setText($('user-info'), plural(items.length, 'result', 'results') + ' for “' + u.query + '”');
      else setText($('user-info'), 'Page ' + (u.stack.length + 1) + ' · ' + plural(items.length, 'user', 'users'));
      $('user-prev').hidden = !!u.query;
      $('user-next').hidden = !!u.query;
      $('user-prev').disabled = u.stack.length === 0;
      $('user-next').disabled = !next;
    } catch (err) {
      if (seq !== u.seq) return;
      fill(body, h('tr', {}, h('td', { class: 'empty', colspan: '5', text: 'Could not load users.' })));
      if (!(err && err.status === 401)) showError(err, 'Could not load users.');
    }
  }

  function closeDetail() {
    state.users.selected = null;
    state.detailSeq++;
    $('detail').hidden = true;
    clear($('detail'));
    $('user-split').classList.remove('has-detail');
    markSelected();
  }

  function markSelected() {
    Array.prototype.forEach.call(document.querySelectorAll('#user-table tbody tr[data-id]'), function (tr) {
      tr.classList.toggle('selected', tr.getAttribute('data-id') === state.users.selected);
    });
  }

  function detailHead(title, sub) {
    return h('div', { class: 'card-head' },
      h('div', {}, h('h2', { text: title }), sub ? h('div', { class: 'mono muted small', text: sub }) : null),
      h('button', { type: 'button', class: 'icon', 'aria-label': 'Close', text: '×', onclick: closeDetail }));
  }

  async function openUser(id) {
    var seq = ++state.detailSeq;
    state.users.selected = id;
    markSelected();
    var panel = $('detail');
    panel.hidden = false;
    $('user-split').classList.add('has-detail');
    fill(panel, detailHead('Loading…', id));
    hideError();
    try {
      var rec = await api('GET', '/v1/admin/users/' + enc(id));
      if (seq !== state.detailSeq) return;
      if (!rec || typeof rec !== 'object') throw ApiError(0, 'E_BAD_RESPONSE', 'The daemon sent an empty record.');
      renderDetail(rec);
    } catch (err) {
      if (seq !== state.detailSeq) return;
      fill(panel, detailHead('Could not open user', id), h('p', { class: 'muted', text: err && err.message ? err.message : String(err) }));
      if (!(err && err.status === 401)) showError(err, 'Could not open user ' + id + '.');
    }
    if (window.matchMedia && window.matchMedia('(max-width: 980px)').matches) panel.scrollIntoView({ block: 'start', behavior: 'smooth' });
  }

  function kvTable(obj) {
    var keys = obj && typeof obj === 'object' ? Object.keys(obj) : [];
    if (!keys.length) return h('p', { class: 'muted small', text: 'None.' });
    return h('table', { class: 'kv' }, h('tbody', {}, keys.map(function (k) {
      return h('tr', {}, h('td', { text: k }), h('td', { text: fmtValue(obj[k]) }));
    })));
  }

  function chatView(msgs) {
    var limit = state.historyLimit;
    var shown = limit > 0 ? msgs.slice(-limit) : msgs;
    if (!msgs.length) return h('p', { class: 'muted small', text: 'No messages.' });
    var box = h('div', { class: 'chat' },
      msgs.length > shown.length ? h('div', { class: 'faint small', style: 'text-align:center', text: plural(msgs.length - shown.length, 'earlier message', 'earlier messages') + ' not shown' }) : null,
      shown.map(function (m) {
        m = m && typeof m === 'object' ? m : { text: String(m) };
        var role = typeof m.role === 'string' && m.role ? m.role : 'unknown';
        var incoming = role === 'user';
        return h('div', { class: 'msg' + (incoming ? '' : ' out') },
          h('div', { class: 'who' }, h('b', { text: role }), h('span', { title: m.ts ? String(m.ts) : null, text: m.ts ? fmtDate(m.ts) : '' })),
          h('div', { class: 'text', text: typeof m.text === 'string' ? m.text : fmtValue(m.text) }),
          m.meta && typeof m.meta === 'object' && Object.keys(m.meta).length ? h('div', { class: 'meta', text: 'meta ' + fmtValue(m.meta) }) : null);
      }));
    return box;
  }

  function renderDetail(rec) {
    var panel = $('detail');
    var msgs = arr(rec.history);
    var summary = arr(rec.summary_context);
    var other = Object.keys(rec).filter(function (k) { return KNOWN_FIELDS.indexOf(k) < 0; });
    var otherObj = {};
    other.forEach(function (k) { otherObj[k] = rec[k]; });
    var chatHolder = h('div');
    var limitSel = h('select', { 'aria-label': 'Messages to show' },
      [20, 50, 0].map(function (n) { return h('option', { value: String(n), text: n ? 'Last ' + n : 'All' }); }));
    limitSel.value = String(state.historyLimit);
    limitSel.addEventListener('change', function () { state.historyLimit = Number(limitSel.value); fill(chatHolder, chatView(msgs)); });
    fill(chatHolder, chatView(msgs));
    var company = rec.is_company === true ? 'Yes' : rec.is_company === false ? 'No' : null;
    var delBtn = h('button', { type: 'button', class: 'danger-outline', text: 'Delete user…' });
    delBtn.addEventListener('click', function () { deleteUser(rec, delBtn); });

    fill(panel,
      detailHead(rec.name ? String(rec.name) : '(no name)', String(rec.user_id)),
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
      summary.length ? h('ul', { class: 'plain' }, summary.map(function (s) { return h('li', { text: fmtValue(s) }); })) : h('p', { class: 'muted small', text: 'None.' }),
      h('h4', { text: 'Flags' }), kvTable(rec.flags),
      h('h4', { text: 'Slots' }), kvTable(rec.slots),
      other.length ? [h('h4', { text: 'Other fields' }), kvTable(otherObj)] : null,
      h('div', { class: 'card-head', style: 'margin:18px 0 8px;align-items:center' },
        h('h4', { style: 'margin:0', text: 'Chat · ' + plural(msgs.length, 'message', 'messages') }), limitSel),
      chatHolder,
      h('div', { class: 'danger-box' },
        h('h3', { text: 'Delete this user' }),
        h('p', { class: 'small muted', style: 'margin:4px 0 10px', text: 'Removes all memory of this user. A backup is written first.' }),
        delBtn));
  }

  async function deleteUser(rec, button) {
    var id = String(rec.user_id);
    var name = rec.name ? String(rec.name) : '(no name)';
    var ok = await confirmDialog('Delete this user?', [
      h('p', {}, 'Delete all memory of ', h('b', { text: name }), ' (', code(id), '): profile, flags, slots and ' + plural(arr(rec.history).length, 'chat message', 'chat messages') + '.'),
      h('p', { class: 'muted', text: 'A backup of this user is written and verified first. You can restore it later from the Backups page.' })
    ], 'Delete user');
    if (!ok) return;
    await act(button, 'Deleting…', 'Could not delete user ' + id + '.', async function () {
      var res = await api('DELETE', '/v1/users/' + enc(id)) || {};
      var backup = res.backup ? String(res.backup) : '(unknown)';
      var toBackups = h('button', { type: 'button', text: 'Open Backups' });
      toBackups.addEventListener('click', function () { showTab('backups'); });
      fill($('detail'), detailHead('User deleted', id),
        h('p', {}, 'All memory of ', h('b', { text: name }), ' was deleted.'),
        h('div', { class: 'result' }, 'Backup written first: ', code(backup)),
        h('p', { class: 'muted small', style: 'margin-top:12px', text: 'To undo: Backups → this backup → Restore… → “Only these users” with ' + id + '.' }),
        h('div', { class: 'actions' }, toBackups));
      showNotice('Deleted user ', code(id), ' (' + name + '). Backup: ', code(backup), '. To undo, restore it from Backups with “Only these users”.');
      state.users.selected = null;
      markSelected();
      loadUsers();
    });
  }

  /* ---------------- backups ---------------- */

  var REASONS = { 'manual': 'Manual', 'delete-user': 'Before delete', 'clear-all': 'Before clear all', 'restore': 'Before restore', 'scheduled': 'Scheduled', 'import': 'Before import', 'legacy': 'Legacy' };
  function reasonLabel(r) { return REASONS[r] || (r ? String(r) : '—'); }

  function stateBadge(b) {
    var v = state.verified[b.id];
    if (v) return v.ok ? badge(v.legacy ? 'checked (legacy)' : 'checked ✓', 'ok', 'Verified just now') : badge('check failed', 'bad', v.error ? v.error.code + ': ' + v.error.message : 'Verification failed');
    if (b.state === 'verified') return badge('verified', 'ok', 'Checksum was checked when it was written');
    if (b.state === 'legacy') return badge('legacy', '', 'Old backup without a manifest: not verified');
    return badge(b.state ? String(b.state) : 'unknown');
  }

  function backupById(id) {
    for (var i = 0; i < state.backups.length; i++) if (state.backups[i].id === id) return state.backups[i];
    return null;
  }

  function scopeText(b) {
    if (Array.isArray(b.scope)) return b.scope.length === 1 ? 'user ' + b.scope[0] : b.scope.length + ' selected users';
    if (b.scope === 'full') return 'full store';
    return b.kind === 'user' ? 'one user' : '';
  }

  async function loadBackups() {
    var body = document.querySelector('#bk-table tbody');
    hideError();
    if (!body.firstChild) fill(body, h('tr', {}, h('td', { class: 'empty', colspan: '7', text: 'Loading…' })));
    try {
      var list = sortBackups(listOf(await api('GET', '/v1/admin/backups'), 'backups'));
      state.backups = list;
      renderBackups();
    } catch (err) {
      fill(body, h('tr', {}, h('td', { class: 'empty', colspan: '7', text: 'Could not load backups.' })));
      if (!(err && err.status === 401)) showError(err, 'Could not load backups.');
    }
  }

  function renderBackups() {
    var body = document.querySelector('#bk-table tbody');
    if (!state.backups.length) {
      fill(body, h('tr', {}, h('td', { class: 'empty', colspan: '7', text: 'No backups yet. “Create backup” makes one now.' })));
      return;
    }
    fill(body, state.backups.map(function (b) {
      var age = typeof b.ageSeconds === 'number' ? b.ageSeconds : (toDate(b.createdAt) ? (Date.now() - toDate(b.createdAt).getTime()) / 1000 : null);
      var verifyBtn = h('button', { type: 'button', class: 'sm', text: 'Verify' });
      verifyBtn.addEventListener('click', function () { verifyBackup(b, verifyBtn); });
      var detailsBtn = h('button', { type: 'button', class: 'sm', text: 'Details' });
      detailsBtn.addEventListener('click', function () { inspectBackup(b, detailsBtn); });
      var diffBtn = h('button', { type: 'button', class: 'sm', text: 'Diff' , title: 'Compare with the current store' });
      diffBtn.addEventListener('click', function () { diffBackup(b, diffBtn); });
      var restoreBtn = h('button', { type: 'button', class: 'sm', text: 'Restore…' });
      restoreBtn.addEventListener('click', function () { openRestore(b, []); });
      var scope = scopeText(b);
      return h('tr', { 'data-id': b.id },
        h('td', { class: 'id' }, b.id, b.gzip ? h('span', { class: 'badge', style: 'margin-left:6px', text: 'gz' }) : null),
        h('td', { class: 'nowrap' }, when(b.createdAt), h('div', { class: 'faint small', text: age === null ? 'age unknown' : fmtAge(age) + (age >= 60 ? ' ago' : '') })),
        h('td', { class: 'num', text: b.users === null || b.users === undefined ? '—' : fmtInt(b.users) }),
        h('td', { class: 'num', text: fmtBytes(b.size) }),
        h('td', { class: 'nowrap' }, h('div', { text: reasonLabel(b.reason) }), scope && scope !== 'full store' ? h('div', { class: 'faint small clip', title: scope, text: scope }) : null),
        h('td', { class: 'state-cell' }, stateBadge(b)),
        h('td', { class: 'actions-cell' }, h('div', { class: 'btns' }, verifyBtn, detailsBtn, diffBtn, restoreBtn)));
    }));
    labelCells($('bk-table'));
  }

  function openPanel(title, sub) {
    var panel = $('bk-panel');
    panel.hidden = false;
    var content = h('div');
    fill(panel,
      h('div', { class: 'card-head' },
        h('div', {}, h('h3', { text: title }), sub ? h('div', { class: 'muted small', style: 'margin-top:2px' }, sub) : null),
        h('button', { type: 'button', class: 'icon', 'aria-label': 'Close', text: '×', onclick: function () { panel.hidden = true; clear(panel); } })),
      content);
    return content;
  }
  function reveal(el) { requestAnimationFrame(function () { el.scrollIntoView({ block: 'start', behavior: 'smooth' }); }); }

  async function createBackup(button) {
    await act(button, 'Writing backup…', 'Could not create a backup.', async function () {
      var res = await api('POST', '/v1/admin/backups', { gzip: $('bk-gzip').checked }) || {};
      var id = res.id || res.backup || (res.manifest && res.manifest.file) || '(unknown)';
      var users = res.manifest && typeof res.manifest.users === 'number' ? ' with ' + plural(res.manifest.users, 'user', 'users') : '';
      showNotice('Backup created: ', code(String(id)), users + '.');
      await loadBackups();
    });
  }

  async function verifyBackup(b, button) {
    await act(button, 'Checking…', 'Could not verify ' + b.id + '.', async function () {
      var res = await api('POST', '/v1/admin/backups/' + enc(b.id) + '/verify', {});
      var r = listOf(res, 'results')[0] || (res && typeof res === 'object' && 'ok' in res && res.id ? res : null);
      if (!r) throw ApiError(0, 'E_BAD_RESPONSE', 'The daemon did not say whether the backup is OK.');
      state.verified[b.id] = r;
      var row = document.querySelector('#bk-table tbody tr[data-id="' + cssEscape(b.id) + '"] .state-cell');
      if (row) fill(row, stateBadge(b));
      if (r.ok) {
        showNotice(r.legacy ? 'Legacy backup ' : 'Backup ', code(b.id), r.legacy ? ' reads correctly (it has no checksum to compare).' : ' is OK: checksum and user count match' + (typeof r.users === 'number' ? ' (' + plural(r.users, 'user', 'users') + ').' : '.'));
      } else {
        var e = r.error || {};
        showError(ApiError(0, e.code || 'E_VERIFY', e.message || 'the backup does not match its manifest'), 'Backup ' + b.id + ' failed the check.');
      }
    });
  }

  function cssEscape(s) { return window.CSS && CSS.escape ? CSS.escape(s) : String(s).replace(/["\\]/g, '\\$&'); }

  async function inspectBackup(b, button) {
    await act(button, '…', 'Could not read ' + b.id + '.', async function () {
      var res = await api('GET', '/v1/admin/backups/' + enc(b.id) + '?sample=50') || {};
      var info = res.backup || b;
      var m = res.manifest || null;
      var sample = arr(res.sample);
      var content = openPanel('Backup ' + b.id, [when(info.createdAt), ' · ', reasonLabel(info.reason)]);
      var facts = h('dl', { class: 'facts' },
        h('dt', { text: 'File' }), h('dd', {}, code(String(info.file || ''))),
        h('dt', { text: 'Users' }), h('dd', { text: fmtInt(typeof res.users === 'number' && res.users >= 0 ? res.users : info.users) }),
        h('dt', { text: 'Size' }), h('dd', { text: fmtBytes(info.size) + (info.gzip ? ' (gzip)' : '') }),
        h('dt', { text: 'Scope' }), h('dd', { text: scopeText(info) || '—' }),
        h('dt', { text: 'State' }), h('dd', {}, stateBadge(info)),
        m ? [
          h('dt', { text: 'Checksum' }), h('dd', {}, code(String(m.sha256 || '—'))),
          h('dt', { text: 'Verified at' }), h('dd', {}, when(m.verifiedAt)),
          h('dt', { text: 'Source' }), h('dd', { text: m.source || '—' }),
          h('dt', { text: 'chatmem' }), h('dd', { text: m.chatmemVersion || '—' }),
          h('dt', { text: 'Audit op' }), h('dd', {}, m.auditOp ? code(String(m.auditOp)) : dash())
        ] : null);
      var checks = [];
      var sampleBox = sample.length ? h('div', { class: 'list-box', style: 'margin-top:6px' }, sample.map(function (s) {
        var cb = h('input', { type: 'checkbox', value: s.user_id, 'aria-label': 'Select ' + s.user_id });
        checks.push(cb);
        return h('label', { class: 'row', style: 'font-weight:400;cursor:pointer' },
          h('span', {}, cb, ' ', h('span', { class: 'mono small', text: s.user_id }), ' ', h('span', { text: s.name ? String(s.name) : '' })),
          h('span', { class: 'faint small', text: plural(s.messages, 'message', 'messages') }));
      })) : h('p', { class: 'muted small', text: 'No users in this backup.' });
      var restoreSel = h('button', { type: 'button', text: 'Restore selected users…' });
      restoreSel.addEventListener('click', function () {
        var ids = checks.filter(function (c) { return c.checked; }).map(function (c) { return c.value; });
        if (!ids.length) { showError(formError('Tick at least one user first.'), 'Nothing selected.'); return; }
        openRestore(b, ids);
      });
      fill(content, facts,
        h('h4', { text: sample.length ? 'Users (first ' + sample.length + ')' : 'Users' }), sampleBox,
        sample.length ? h('div', { class: 'actions' }, restoreSel) : null);
      reveal($('bk-panel'));
    });
  }

  /** labels: { added, removed, changed, none } describe the direction of this diff. */
  function renderDiff(diff, labels) {
    diff = diff && typeof diff === 'object' ? diff : {};
    var added = arr(diff.added), removed = arr(diff.removed), changed = arr(diff.changed);
    var unchanged = typeof diff.unchanged === 'number' ? diff.unchanged : 0;
    var wrap = h('div');
    add(wrap, h('div', { class: 'diff-sum' },
      badge(fmtInt(added.length) + ' ' + labels.addedShort, added.length ? 'ok' : ''),
      badge(fmtInt(removed.length) + ' ' + labels.removedShort, removed.length ? 'bad' : ''),
      badge(fmtInt(changed.length) + ' ' + labels.changedShort, changed.length ? 'warn' : ''),
      badge(fmtInt(unchanged) + ' unchanged')));
    if (!added.length && !removed.length && !changed.length) {
      add(wrap, h('p', { class: 'muted', text: labels.none }));
      return wrap;
    }
    function idList(ids, cls) {
      return h('div', { class: 'chips' }, ids.slice(0, LIST_MAX).map(function (id) { return h('span', { class: 'chip ' + cls, text: String(id) }); }),
        ids.length > LIST_MAX ? h('span', { class: 'faint small', text: 'and ' + fmtInt(ids.length - LIST_MAX) + ' more' }) : null);
    }
    if (added.length) add(wrap, h('div', { class: 'diff-list' }, h('h4', { text: labels.added }), idList(added, 'add')));
    if (removed.length) add(wrap, h('div', { class: 'diff-list' }, h('h4', { text: labels.removed }), idList(removed, 'rem')));
    if (changed.length) {
      add(wrap, h('div', { class: 'diff-list' }, h('h4', { text: labels.changed }),
        h('div', { class: 'list-box' }, changed.slice(0, LIST_MAX).map(function (c) {
          c = c || {};
          var parts = [];
          var fields = arr(c.fields).filter(function (f) { return f !== 'history' && f !== 'flags'; });
          if (c.history && typeof c.history === 'object') parts.push(h('span', { class: 'chip chg', text: 'history ' + fmtInt(c.history.from) + ' → ' + fmtInt(c.history.to) + ' messages' }));
          else if (arr(c.fields).indexOf('history') >= 0) parts.push(h('span', { class: 'chip chg', text: 'history' }));
          if (c.flags && typeof c.flags === 'object') {
            arr(c.flags.added).forEach(function (f) { parts.push(h('span', { class: 'chip add', text: '+ flag ' + f })); });
            arr(c.flags.removed).forEach(function (f) { parts.push(h('span', { class: 'chip rem', text: '− flag ' + f })); });
            arr(c.flags.changed).forEach(function (f) { parts.push(h('span', { class: 'chip chg', text: '~ flag ' + f })); });
          } else if (arr(c.fields).indexOf('flags') >= 0) parts.push(h('span', { class: 'chip chg', text: 'flags' }));
          fields.forEach(function (f) { parts.push(h('span', { class: 'chip', text: String(f) })); });
          return h('div', { class: 'row' }, h('span', { class: 'mono small', text: String(c.user_id) }), h('span', { class: 'chips' }, parts));
        }),
        changed.length > LIST_MAX ? h('div', { class: 'row faint small', text: 'and ' + fmtInt(changed.length - LIST_MAX) + ' more' }) : null)));
    }
    return wrap;
  }

  var SINCE_LABELS = {
    addedShort: 'new since', removedShort: 'gone since', changedShort: 'changed since',
    added: 'New since the backup (only in the current store)',
    removed: 'Gone since the backup (only in the backup)',
    changed: 'Changed since the backup',
    none: 'The current store is the same as this backup.'
  };
  var RESTORE_LABELS = {
    addedShort: 'to add back', removedShort: 'to remove', changedShort: 'to overwrite',
    added: 'Will be added back (in the backup, not in the store now)',
    removed: 'Will be removed (in the store now, not in the backup)',
    changed: 'Will be overwritten with the backup’s version',
    none: 'Nothing would change: the store already matches this backup.'
  };

  async function diffBackup(b, button) {
    await act(button, '…', 'Could not compare ' + b.id + ' with the current store.', async function () {
      var diff = await api('GET', '/v1/admin/diff?a=' + enc(b.id) + '&b=current');
      var content = openPanel('Changes since ' + b.id, ['Backup from ', when(b.createdAt), ' compared with the current store.']);
      var restoreBtn = h('button', { type: 'button', text: 'Restore from this backup…' });
      restoreBtn.addEventListener('click', function () { openRestore(b, []); });
      fill(content, renderDiff(diff, SINCE_LABELS), h('div', { class: 'actions' }, restoreBtn));
      reveal($('bk-panel'));
    });
  }

  function parseIds(text) {
    var seen = {};
    return String(text).split(/[\s,;]+/).filter(function (s) {
      if (!s || seen[s]) return false;
      seen[s] = true;
      return true;
    });
  }

  function openRestore(b, presetUsers) {
    var name = 'restore-' + Math.random().toString(36).slice(2);
    // A backup taken before a delete or a selective restore holds only some users: restoring it as the
    // whole store would remove everyone else, so such a backup starts on "Only these users".
    var partial = Array.isArray(b.scope) || b.kind === 'user';
    if (!presetUsers.length && Array.isArray(b.scope)) presetUsers = b.scope.map(String);
    var some = presetUsers.length > 0 || partial;
    var scopeAll = h('input', { type: 'radio', name: name + '-scope', value: 'all', checked: !some });
    var scopeSome = h('input', { type: 'radio', name: name + '-scope', value: 'some', checked: some });
    var ids = h('textarea', { rows: '3', spellcheck: 'false', placeholder: 'One user ID per line', 'aria-label': 'User IDs to restore' });
    ids.value = presetUsers.join('\n');
    var modeReplace = h('input', { type: 'radio', name: name + '-mode', value: 'replace', checked: true });
    var modeMerge = h('input', { type: 'radio', name: name + '-mode', value: 'merge' });
    var modeSet = h('fieldset', {},
      h('legend', { text: 'How' }),
      h('label', { class: 'choice' }, modeReplace, h('span', {}, h('b', { text: 'Replace' }), ' — the store becomes exactly this backup. Users added since the backup are removed.')),
      h('label', { class: 'choice' }, modeMerge, h('span', {}, h('b', { text: 'Merge' }), ' — put back the users in the backup, keep everyone else.')));
    var preview = h('div');
    var warn = h('div', { class: 'result warn', text: 'This backup holds only ' + (typeof b.users === 'number' ? plural(b.users, 'user', 'users') : 'some users') + '. Restoring it as the whole store with “Replace” removes every other user.' });
    var previewBtn = h('button', { type: 'submit', class: 'primary', text: 'Preview changes (dry run)' });
    var form = h('form', { autocomplete: 'off' },
      h('fieldset', {},
        h('legend', { text: 'What to restore' }),
        h('label', { class: 'choice' }, scopeAll, h('span', {}, h('b', { text: 'Whole store' }))),
        h('label', { class: 'choice' }, scopeSome, h('span', {}, h('b', { text: 'Only these users' }), h('span', { class: 'muted', text: ' — the others are left alone' }))),
        ids),
      modeSet,
      warn,
      h('div', { class: 'actions' }, previewBtn));

    function sync() {
      ids.disabled = !scopeSome.checked;
      modeSet.hidden = scopeSome.checked;
      warn.hidden = !(partial && scopeAll.checked && modeReplace.checked);
    }
    function request(dryRun) {
      var body = { backup: b.id, dryRun: dryRun };
      if (scopeSome.checked) {
        var list = parseIds(ids.value);
        if (!list.length) throw formError('Enter at least one user ID, or choose “Whole store”.');
        body.users = list;
      } else {
        body.mode = modeMerge.checked ? 'merge' : 'replace';
      }
      return body;
    }
    // A preview belongs to exactly the choices it was made with: any change throws it away.
    form.addEventListener('input', function () { sync(); clear(preview); });
    form.addEventListener('change', function () { sync(); clear(preview); });
    form.addEventListener('submit', function (ev) {
      ev.preventDefault();
      act(previewBtn, 'Checking…', 'Could not preview the restore.', async function () {
        var body = request(true);
        var res = await api('POST', '/v1/admin/restore', body) || {};
        var diff = res.diff || {};
        var n = arr(diff.added).length + arr(diff.removed).length + arr(diff.changed).length;
        var go = h('button', { type: 'button', class: 'danger', text: 'Restore now…' });
        fill(preview,
          h('h4', { text: 'Dry run: what the restore would do' }),
          renderDiff(diff, RESTORE_LABELS),
          n ? h('div', { class: 'actions' }, go, h('span', { class: 'muted small', text: 'The current data it overwrites is backed up first.' })) : null);
        go.addEventListener('click', function () { runRestore(b, body, diff, go, preview); });
      });
    });
    sync();
    var content = openPanel('Restore from ' + b.id, ['Backup from ', when(b.createdAt), typeof b.users === 'number' ? ' · ' + plural(b.users, 'user', 'users') : '']);
    fill(content, form, preview);
    reveal($('bk-panel'));
    if (some) ids.focus();
  }

  async function runRestore(b, previewBody, diff, button, preview) {
    var body = {};
    Object.keys(previewBody).forEach(function (k) { body[k] = previewBody[k]; });
    body.dryRun = false;
    var who = body.users ? plural(body.users.length, 'selected user', 'selected users') : 'the whole store';
    var ok = await confirmDialog('Restore from this backup?', [
      h('p', {}, 'Restore ', who, ' from ', code(b.id), body.mode ? ' (' + body.mode + ')' : '', '.'),
      h('p', {}, plural(arr(diff.changed).length, 'user', 'users') + ' overwritten, ' + fmtInt(arr(diff.added).length) + ' added back, ' + fmtInt(arr(diff.removed).length) + ' removed.'),
      h('p', { class: 'muted', text: 'Before anything changes, the current data is backed up and verified.' })
    ], 'Restore now');
    if (!ok) return;
    await act(button, 'Restoring…', 'The restore failed.', async function () {
      var res = await api('POST', '/v1/admin/restore', body) || {};
      var backup = res.backup ? String(res.backup) : null;
      add(preview, h('div', { class: 'result' }, 'Restore done: ' + plural(res.written || 0, 'user', 'users') + ' written, ' + fmtInt(res.removed || 0) + ' removed.',
        backup ? [' The previous data was backed up as ', code(backup), '.'] : null));
      if (button.parentNode) button.parentNode.hidden = true;
      showNotice('Restored from ', code(b.id), '.', backup ? [' Previous data backed up as ', code(backup), '.'] : '');
      state.users.loaded = false;
      await loadBackups();
    });
  }

  /* ---------------- prune ---------------- */

  function prunePolicy() {
    var policy = {};
    [['last', 'pr-last'], ['daily', 'pr-daily'], ['weekly', 'pr-weekly'], ['monthly', 'pr-monthly']].forEach(function (p) {
      var v = $(p[1]).value.trim();
      if (v === '') return;
      if (!/^\d+$/.test(v)) throw formError('“' + $(p[1]).labels[0].textContent + '” must be a whole number.');
      var n = Number(v);
      if (n > 0) policy[p[0]] = n;
    });
    var within = $('pr-within').value.trim();
    if (within) {
      if (!/^(\d+[yYmMwdDhH])+$/.test(within)) throw formError('“Keep all within” looks like 36h, 30d, 2m or 1y2m.');
      policy.within = within;
    }
    if (!Object.keys(policy).length) throw formError('Fill in at least one rule. With no rule nothing is removed.');
    return policy;
  }

  function createdOf(id) { var b = backupById(id); return b ? b.createdAt : null; }

  async function previewPrune(button) {
    await act(button, 'Checking…', 'Could not preview the prune.', async function () {
      state.prunePlan = null;
      var policy = prunePolicy();
      var res = await api('POST', '/v1/admin/prune', { policy: policy, dryRun: true }) || {};
      var keep = arr(res.keep), remove = arr(res.remove);
      state.prunePlan = { policy: policy, remove: remove.map(function (r) { return r.id; }) };
      var go = h('button', { type: 'button', class: 'danger', text: 'Remove ' + plural(remove.length, 'backup', 'backups') + '…' });
      go.addEventListener('click', function () { runPrune(go); });
      fill($('prune-result'),
        h('h4', { text: 'Dry run: keep ' + fmtInt(keep.length) + ', remove ' + fmtInt(remove.length) }),
        h('div', { class: 'cols' },
          h('div', {}, h('div', { class: 'small muted', style: 'margin-bottom:6px', text: 'Keep' }),
            h('div', { class: 'list-box' }, keep.length ? keep.map(function (k) {
              return h('div', { class: 'row' }, h('span', {}, h('span', { class: 'mono small', text: String(k.id) }), ' ', h('span', { class: 'faint small', text: fmtDate(createdOf(k.id)) })),
                h('span', { class: 'chips' }, arr(k.reasons).map(function (r) { return h('span', { class: 'chip add', text: String(r) }); })));
            }) : h('div', { class: 'row muted small', text: 'Nothing.' }))),
          h('div', {}, h('div', { class: 'small muted', style: 'margin-bottom:6px', text: 'Remove' }),
            h('div', { class: 'list-box' }, remove.length ? remove.map(function (r) {
              return h('div', { class: 'row' }, h('span', { class: 'mono small', text: String(r.id) }), h('span', { class: 'faint small', text: fmtDate(createdOf(r.id)) }));
            }) : h('div', { class: 'row muted small', text: 'Nothing to remove with these rules.' })))),
        remove.length ? h('div', { class: 'actions' }, go, h('span', { class: 'muted small', text: 'Removed backups cannot be brought back.' })) : null);
    });
  }

  async function runPrune(button) {
    var plan = state.prunePlan;
    if (!plan) return;
    var ok = await confirmDialog('Remove old backups?', [
      h('p', { text: 'Permanently remove ' + plural(plan.remove.length, 'backup', 'backups') + ' (the ones listed under “Remove”).' }),
      h('p', { class: 'muted', text: 'Removed backups cannot be restored. The backups under “Keep” stay.' })
    ], 'Remove backups');
    if (!ok) return;
    await act(button, 'Removing…', 'The prune failed.', async function () {
      var res = await api('POST', '/v1/admin/prune', { policy: plan.policy, dryRun: false }) || {};
      var removed = arr(res.removed);
      state.prunePlan = null;
      fill($('prune-result'), h('div', { class: 'result' }, 'Removed ' + plural(removed.length, 'backup', 'backups') + '.'));
      showNotice('Pruned: removed ' + plural(removed.length, 'backup', 'backups') + '.');
      await loadBackups();
    });
  }

  /* ---------------- audit ---------------- */

  function byTimeDesc(a, b) {
    var ta = toDate(a.time), tb = toDate(b.time);
    return (tb ? tb.getTime() : 0) - (ta ? ta.getTime() : 0);
  }
  function actorName(a) {
    if (!a || typeof a !== 'object') return '—';
    return String(a.name || '?');
  }
  var ACTIONS = { 'delete-users': 'Delete users', 'clear-all': 'Clear all', 'restore': 'Restore', 'backup': 'Backup', 'prune': 'Prune', 'import': 'Import', 'auth-failed': 'Bad token' };
  function actionLabel(a) { return ACTIONS[a] || String(a || '—'); }
  /** Drops the "started" line of every operation that also has its outcome line (running or interrupted ones stay). */
  function collapseStarted(entries) {
    var closed = {};
    entries.forEach(function (e) { if (e && e.outcome !== 'started' && e.op) closed[e.op] = true; });
    return entries.filter(function (e) { return !(e && e.outcome === 'started' && closed[e.op]); });
  }
  function outcomeBadge(o) {
    var kind = o === 'done' ? 'ok' : o === 'failed' || o === 'refused' ? 'bad' : o === 'interrupted' ? 'warn' : 'info';
    return badge(String(o || '—'), kind);
  }

  async function loadAudit() {
    var body = document.querySelector('#au-table tbody');
    hideError();
    if (!body.firstChild) fill(body, h('tr', {}, h('td', { class: 'empty', colspan: '7', text: 'Loading…' })));
    var q = ['limit=' + enc($('au-limit').value)];
    var user = $('au-user').value.trim();
    if (user) q.push('user=' + enc(user));
    var since = $('au-since').value;
    if (since) {
      var parts = since.split('-').map(Number);
      var d = new Date(parts[0], parts[1] - 1, parts[2]);
      if (!isNaN(d.getTime())) q.push('since=' + enc(d.toISOString()));
    }
    try {
      var entries = listOf(await api('GET', '/v1/admin/audit?' + q.join('&')), 'entries').slice().sort(byTimeDesc);
      if (!$('au-started').checked) entries = collapseStarted(entries);
      if (!entries.length) { fill(body, h('tr', {}, h('td', { class: 'empty', colspan: '7', text: 'No entries.' }))); return; }
      fill(body, entries.map(function (e) {
        var users = arr(e.userIds);
        var a = e.actor || {};
        var err = e.error && typeof e.error === 'object' ? e.error : null;
        return h('tr', {},
          h('td', { class: 'nowrap', title: String(e.time || '') }, fmtDate(e.time)),
          h('td', {}, h('div', { text: actorName(a) }), h('div', { class: 'faint small', text: [a.kind === 'os' ? 'CLI' : a.kind === 'api' ? 'API' : a.kind, a.remote].filter(Boolean).join(' · ') })),
          h('td', { class: 'nowrap', text: actionLabel(e.action) }),
          h('td', { title: users.join(', ') }, users.length ? [h('span', { class: 'mono small', text: users.slice(0, 2).join(', ') }), users.length > 2 ? h('span', { class: 'faint small', text: ' +' + (users.length - 2) + ' more' }) : null] : dash()),
          h('td', { class: 'nowrap' }, e.backup ? h('span', { class: 'mono small', text: String(e.backup) }) : dash()),
          h('td', {}, h('div', {}, outcomeBadge(e.outcome), err ? h('div', { class: 'small', style: 'color:var(--danger);margin-top:3px', text: String(err.code || '') + (err.message ? ': ' + err.message : '') }) : null)),
          h('td', { class: 'num', text: fmtMs(e.durationMs) }));
      }));
      labelCells($('au-table'));
    } catch (err) {
      fill(body, h('tr', {}, h('td', { class: 'empty', colspan: '7', text: 'Could not load the audit log.' })));
      if (!(err && err.status === 401)) showError(err, 'Could not load the audit log.');
    }
  }

  /* ---------------- danger zone ---------------- */

  async function loadDanger() {
    try {
      var s = await api('GET', '/v1/admin/stats') || {};
      state.stats = s;
      var n = typeof s.users === 'number' ? s.users : 0;
      setText($('dz-count'), n === 0 ? 'the store is empty now' : plural(n, 'user', 'users') + ', ' + plural(typeof s.messages === 'number' ? s.messages : 0, 'message', 'messages'));
    } catch (err) {
      setText($('dz-count'), 'count unknown');
      if (!(err && err.status === 401)) showError(err, 'Could not load the user count.');
    }
  }

  function syncClear() { $('dz-clear').disabled = $('dz-input').value !== 'YES'; }

  async function clearAll() {
    var input = $('dz-input');
    if (input.value !== 'YES') { syncClear(); return; }
    var button = $('dz-clear');
    input.disabled = true;
    await act(button, 'Backing up, then clearing…', 'Clear all failed. Nothing was deleted unless the message says otherwise.', async function () {
      var res = await api('POST', '/v1/admin/clear', { confirm: 'YES' }) || {};
      var backup = res.backup ? String(res.backup) : '(unknown)';
      fill($('dz-result'), h('div', { class: 'result' },
        'Cleared ' + plural(typeof res.deleted === 'number' ? res.deleted : 0, 'user', 'users') + '. Backup written first: ', code(backup), '. To undo, restore this backup on the Backups page.'));
      showNotice('All users cleared. Backup: ', code(backup), '.');
      state.users = { query: '', cursor: null, stack: [], next: null, limit: state.users.limit, loaded: false, selected: null, seq: state.users.seq + 1 };
      loadDanger();
    });
    input.value = '';
    input.disabled = false;
    syncClear();
  }

  /* ---------------- wiring ---------------- */

  function wire() {
    $('login-form').addEventListener('submit', function (ev) {
      ev.preventDefault();
      var t = $('token-input').value.trim();
      if (!t) return;
      setToken(t);
      $('token-input').value = '';
      hideError();
      signedIn();
    });
    $('forget').addEventListener('click', function () {
      forgetToken();
      resetData();
      hideError();
      showLogin();
      showNotice('Token forgotten. Nothing is stored in this browser any more.');
    });
    Array.prototype.forEach.call(document.querySelectorAll('#tabs [data-tab]'), function (b) {
      b.addEventListener('click', function () { hideNotice(); showTab(b.getAttribute('data-tab')); });
    });
    Array.prototype.forEach.call(document.querySelectorAll('[data-goto]'), function (b) {
      b.addEventListener('click', function () { showTab(b.getAttribute('data-goto')); });
    });
    window.addEventListener('hashchange', function () {
      var t = location.hash.replace(/^#/, '');
      if (TABS.indexOf(t) >= 0 && t !== state.tab && getToken()) showTab(t);
    });

    $('ov-refresh').addEventListener('click', function () { loadOverview(); });

    $('user-search').addEventListener('submit', function (ev) {
      ev.preventDefault();
      var u = state.users;
      u.query = $('user-q').value.trim();
      u.cursor = null;
      u.stack = [];
      loadUsers();
    });
    $('user-all').addEventListener('click', function () {
      $('user-q').value = '';
      var u = state.users;
      u.query = '';
      u.cursor = null;
      u.stack = [];
      loadUsers();
    });
    $('user-limit').addEventListener('change', function () {
      var u = state.users;
      u.limit = Number($('user-limit').value) || 50;
      u.cursor = null;
      u.stack = [];
      if (!u.query) loadUsers();
    });
    $('user-next').addEventListener('click', function () {
      var u = state.users;
      if (!u.next) return;
      u.stack.push(u.cursor);
      u.cursor = u.next;
      loadUsers();
    });
    $('user-prev').addEventListener('click', function () {
      var u = state.users;
      if (!u.stack.length) return;
      u.cursor = u.stack.pop();
      loadUsers();
    });

    $('bk-create').addEventListener('click', function () { createBackup($('bk-create')); });
    $('bk-refresh').addEventListener('click', function () { loadBackups(); });
    $('bk-prune-open').addEventListener('click', function () {
      $('prune').hidden = false;
      reveal($('prune'));
      $('pr-last').focus({ preventScroll: true });
    });
    $('prune-close').addEventListener('click', function () { $('prune').hidden = true; state.prunePlan = null; clear($('prune-result')); });
    $('prune-form').addEventListener('submit', function (ev) { ev.preventDefault(); previewPrune($('prune-preview')); });
    $('prune-form').addEventListener('input', function () { state.prunePlan = null; clear($('prune-result')); });

    $('audit-form').addEventListener('submit', function (ev) { ev.preventDefault(); loadAudit(); });
    $('au-started').addEventListener('change', function () { loadAudit(); });

    $('dz-input').addEventListener('input', syncClear);
    $('dz-input').addEventListener('keydown', function (ev) { if (ev.key === 'Enter') { ev.preventDefault(); if ($('dz-input').value === 'YES') clearAll(); } });
    $('dz-clear').addEventListener('click', clearAll);

    var off = -new Date().getTimezoneOffset();
    var tz = 'UTC' + (off >= 0 ? '+' : '−') + pad(Math.floor(Math.abs(off) / 60)) + (Math.abs(off) % 60 ? ':' + pad(Math.abs(off) % 60) : '');
    setText($('footer'), 'chatmem admin · times are shown in your local time (' + tz + ')');
  }

  wire();
  if (getToken()) signedIn(); else showLogin();
})();
`;

const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<meta name="robots" content="noindex, nofollow">
<title>chatmem admin</title>
<style>${STYLE}</style>
</head>
<body>
${BODY}
<script>${SCRIPT}</script>
</body>
</html>
`;

/** The admin page: one self-contained HTML document. */
export function adminPageHtml(): string {
  return PAGE;
}
