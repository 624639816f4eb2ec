// PostgreSQL backup memory: loads BENCH_PG_USERS users into a fresh schema of the database at
// CHATMEM_TEST_PG (default postgres://postgres@127.0.0.1:5432/test), backs them up in a child process
// through Operations.createBackup (REPEATABLE READ cursor), and prints the child's peak RSS (VmHWM).
// BENCH_NODE_FLAGS passes V8 flags to the child (e.g. --max-semi-space-size=2). Needs a build.
import { openStore } from '../dist/store/open.js';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'; import { tmpdir } from 'node:os'; import path from 'node:path';
import pg from 'pg';
import { fileURLToPath } from 'node:url';
const dist = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../dist');
const N = Number(process.env.BENCH_PG_USERS ?? 200000);
const PG = process.env.CHATMEM_TEST_PG ?? 'postgres://postgres@127.0.0.1:5432/test';
const schema = `chatmem_bench_${process.pid}`;
const admin = new pg.Client({ connectionString: PG });
await admin.connect();
await admin.query(`CREATE SCHEMA ${schema}`);
const u = new URL(PG);
u.searchParams.set('options', `-c search_path=${schema}`);
const url = u.toString();
const fixture = Object.values(JSON.parse(readFileSync(path.resolve(dist, '../test/fixtures/seed-format/memory.json'), 'utf8')));
const store = await openStore(url);
const t0 = performance.now();
for (let i = 0; i < N; i += 1000) {
  const batch = Array.from({ length: Math.min(1000, N - i) }, (_, k) => ({ ...fixture[(i + k) % fixture.length], user_id: `62810${String(i + k).padStart(7, '0')}` }));
  await store.exclusive('all', (ctx) => ctx.putMany(batch));
}
console.log(`loaded ${N} users in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
await store.close();
const dir = mkdtempSync(path.join(tmpdir(), 'pgmem-'));
const child = `
import { openStore } from '${dist}/store/open.js';
import { Operations } from '${dist}/ops/operations.js';
import { AuditLog } from '${dist}/ops/audit.js';
import { readFileSync } from 'node:fs';
const store = await openStore(${JSON.stringify(url)});
const ops = new Operations({ store, backupDir: ${JSON.stringify(dir)} + '/backups', audit: new AuditLog(${JSON.stringify(dir)} + '/audit.log'), actor: { kind: 'os', name: 'bench' } });
const t = performance.now();
const b = await ops.createBackup();
const hwm = /VmHWM:\\s+(\\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))[1];
console.log('backup', b.manifest.users, 'users', (b.manifest.bytes / 1e6).toFixed(0), 'MB in', ((performance.now() - t) / 1000).toFixed(1), 's; peak RSS', (hwm / 1024).toFixed(1), 'MB');
await store.close();
`;
console.log(execFileSync(process.execPath, [...(process.env.BENCH_NODE_FLAGS ? process.env.BENCH_NODE_FLAGS.split(' ') : []), '--input-type=module', '-e', child]).toString().trim());
await admin.query(`DROP SCHEMA ${schema} CASCADE`);
await admin.end();
rmSync(dir, { recursive: true, force: true });
