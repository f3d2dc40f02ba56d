// Summarise a V8 .cpuprofile: self time by function (top N) and by file.
import { readFileSync } from 'node:fs';
const p = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const byId = new Map(p.nodes.map((n) => [n.id, n]));
const self = new Map();
const dt = p.timeDeltas;
for (let i = 0; i < p.samples.length; i++) self.set(p.samples[i], (self.get(p.samples[i]) ?? 0) + (dt[i] ?? 0));
const fn = new Map(), file = new Map();
let total = 0;
for (const [id, us] of self) {
  const n = byId.get(id); const cf = n.callFrame;
  if (cf.functionName === '(idle)' || cf.functionName === '(program)') continue;
  total += us;
  const k = `${cf.functionName || '(anon)'} ${cf.url.replace(/.*node_modules\//, 'nm/').replace(/.*\/work\/main\//, '')}:${cf.lineNumber}`;
  fn.set(k, (fn.get(k) ?? 0) + us);
  const f = cf.url.replace(/.*node_modules\/([^/]+(\/[^/]+)?).*/, 'nm:$1').replace(/.*\/work\/main\//, '') || cf.functionName;
  file.set(f, (file.get(f) ?? 0) + us);
}
const top = (m, n) => [...m].sort((a, b) => b[1] - a[1]).slice(0, n).map(([k, v]) => `${(100 * v / total).toFixed(1).padStart(5)}%  ${k}`).join('\n');
console.log(`busy ${(total / 1000).toFixed(0)} ms\n-- by file\n${top(file, 25)}\n-- by function\n${top(fn, 40)}`);
