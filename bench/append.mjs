// Bench 1: append throughput (messages/s), random users, sequential (1 in flight) and concurrent
// (BENCH_CONCURRENCY in flight, default 64: exercises the SQLite driver's group commit).
//
//   SQLite at each size of BENCH_APPEND_USERS (default 10000,100000; the 1M point runs in
//   big-store.mjs on its shared 1M store), BENCH_SECONDS per run (default 10).
//   The JSON-file driver (the seed's way: whole file rewritten per flush) at BENCH_JSON_USERS
//   (default 10000), bounded by BENCH_JSON_SECONDS per run (default 20). BENCH_JSON_USERS=0 skips it.
import * as path from 'node:path';
import { envInt, envInts, loadUsers, machineInfo, openStoreAt, Reporter, rmDir, round, runAppends, tmpDir, dirBytes, MB } from './lib.mjs';

const sizes = envInts('BENCH_APPEND_USERS', [10_000, 100_000]);
const seconds = envInt('BENCH_SECONDS', 10);
const concurrency = envInt('BENCH_CONCURRENCY', 64);
const jsonUsers = envInt('BENCH_JSON_USERS', 10_000);
const jsonSeconds = envInt('BENCH_JSON_SECONDS', 20);

const rep = new Reporter('append');

async function sqliteAt(users) {
  const dir = await tmpDir(`append-sqlite-${users}`);
  try {
    const store = await openStoreAt(`sqlite:${path.join(dir, 'memory.db')}`);
    const loadS = await loadUsers(store, users, { label: `sqlite ${users}` });
    rep.note(`sqlite ${users} users loaded in ${round(loadS)} s (not measured), ${round((await dirBytes(dir)) / MB)} MB on disk`);
    const seq = await runAppends(store, { users, concurrency: 1, seconds, seed: users });
    rep.add(`sqlite users=${users} sequential`, { users, inFlight: 1, msgsPerSec: seq.perSec, ops: seq.ops, seconds: seq.seconds, latencyMs: seq.latencyMs, errors: seq.errors });
    const conc = await runAppends(store, { users, concurrency, seconds, seed: users + 1 });
    rep.add(`sqlite users=${users} concurrent`, { users, inFlight: concurrency, msgsPerSec: conc.perSec, ops: conc.ops, seconds: conc.seconds, latencyMs: conc.latencyMs, errors: conc.errors });
    await store.close();
  } finally {
    await rmDir(dir);
  }
}

async function jsonAt(users) {
  const dir = await tmpDir(`append-json-${users}`);
  try {
    const file = path.join(dir, 'memory.json');
    const store = await openStoreAt(`json:${file}`);
    // One putMany of everything: the JSON driver rewrites the whole file per mutation anyway.
    const loadS = await loadUsers(store, users, { batch: users, label: `json ${users}` });
    rep.note(`json ${users} users loaded in ${round(loadS)} s (not measured), file ${round((await dirBytes(dir)) / MB)} MB`);
    const seq = await runAppends(store, { users, concurrency: 1, seconds: jsonSeconds, seed: users });
    rep.add(`json users=${users} sequential`, { users, inFlight: 1, msgsPerSec: round(seq.perSec, 2), ops: seq.ops, seconds: seq.seconds, latencyMs: seq.latencyMs, errors: seq.errors });
    const conc = await runAppends(store, { users, concurrency, seconds: jsonSeconds, seed: users + 1 });
    rep.add(`json users=${users} concurrent`, { users, inFlight: concurrency, msgsPerSec: round(conc.perSec, 2), ops: conc.ops, seconds: conc.seconds, latencyMs: conc.latencyMs, errors: conc.errors });
    await store.close();
  } finally {
    await rmDir(dir);
  }
}

const t0 = performance.now();
for (const users of sizes) await sqliteAt(users);
if (jsonUsers > 0) await jsonAt(jsonUsers);
rep.summary({ machine: machineInfo(), config: { sizes, seconds, concurrency, jsonUsers, jsonSeconds }, wallSeconds: round((performance.now() - t0) / 1000) });
