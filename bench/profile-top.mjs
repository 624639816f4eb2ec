// Top self-time functions of a V8 .cpuprofile (what BENCH_HTTP_PROFILE writes), and the share of a few
// inclusive frames (the ones named on the command line), as percentages of the profile and of the busy
// (non-idle) time. Usage: node bench/profile-top.mjs FILE.cpuprofile [top=25] [frameName ...]
import { readFileSync } from 'node:fs';

const [file, topArg, ...frames] = process.argv.slice(2);
if (!file) {
  console.error('usage: node bench/profile-top.mjs FILE.cpuprofile [top] [frameName ...]');
  process.exit(2);
}
const top = Number(topArg ?? 25);
const prof = JSON.parse(readFileSync(file, 'utf8'));
const byId = new Map(prof.nodes.map((n) => [n.id, n]));
const parent = new Map();
for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
// Sample weights: the time deltas, attributed to the sample's node.
const self = new Map();
let total = 0;
for (let i = 0; i < prof.samples.length; i++) {
  const dt = prof.timeDeltas[i] ?? 0;
  total += dt;
  self.set(prof.samples[i], (self.get(prof.samples[i]) ?? 0) + dt);
}
const label = (n) => {
  const f = n.callFrame;
  const where = f.url ? `${f.url.replace(/^.*\/(node_modules|dist)\//, '$1/')}:${f.lineNumber + 1}` : '';
  return `${f.functionName || '(anonymous)'} ${where}`.trim();
};
const idle = [...self].filter(([id]) => ['(idle)', '(program)'].includes(byId.get(id).callFrame.functionName)).reduce((a, [, t]) => a + t, 0);
const busy = total - idle;
const fnSelf = new Map();
for (const [id, t] of self) {
  const k = label(byId.get(id));
  fnSelf.set(k, (fnSelf.get(k) ?? 0) + t);
}
const pct = (t, of) => ((100 * t) / of).toFixed(1).padStart(5);
console.log(`profile ${(total / 1e6).toFixed(1)} s, idle+program ${pct(idle, total)}%, busy ${(busy / 1e6).toFixed(1)} s`);
console.log('  %prof %busy  self time by function');
for (const [k, t] of [...fnSelf].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`  ${pct(t, total)} ${pct(t, busy)}  ${k}`);
// Inclusive time of frames whose function name matches (counted once per sample even when recursive).
for (const name of frames) {
  let t = 0;
  for (const [id, dt] of self) {
    for (let cur = id; cur !== undefined; cur = parent.get(cur)) {
      if (byId.get(cur).callFrame.functionName === name) {
        t += dt;
        break;
      }
    }
  }
  console.log(`  inclusive ${name}: ${pct(t, total)}% of profile, ${pct(t, busy)}% of busy`);
}
