// The second daemon of `BENCH_PAUSE_STORE=postgres node bench/clear-pause.mjs`: appends to random users
// of the same PostgreSQL store through one build's library until `stop` arrives on stdin, then prints
// one JSON line: every append as [startMs, endMs, user, text, ok] on the shared wall clock
// (performance.timeOrigin + performance.now(), comparable across processes).
import { createInterface } from 'node:readline';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { chatMessage, rng, userId } from './lib.mjs';

const [dist, url, nArg, writersArg, seedArg] = process.argv.slice(2);
const n = Number(nArg);
const { openStore } = await import(pathToFileURL(path.join(dist, 'store/open.js')).href);
const store = await openStore(url);
const rand = rng(Number(seedArg));
const now = () => performance.timeOrigin + performance.now();
const log = [];
let stop = false;
let k = 1_000_000_000;
const writer = async () => {
  while (!stop) {
    const user = userId(Math.floor(rand() * n));
    const msg = chatMessage(k++);
    const t0 = now();
    try {
      await store.appendHistory(user, msg);
      log.push([t0, now(), user, msg.text, true]);
    } catch {
      log.push([t0, now(), user, msg.text, false]);
    }
  }
};
const writers = Array.from({ length: Number(writersArg) }, writer);
process.stdout.write('ready\n');
for await (const line of createInterface({ input: process.stdin })) if (line === 'stop') break;
stop = true;
await Promise.all(writers);
await store.close();
process.stdout.write(JSON.stringify(log) + '\n', () => process.exit(0));
