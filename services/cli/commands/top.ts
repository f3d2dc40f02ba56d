// ra-mesh top <topology.yaml>: every node of a running mesh in the terminal, refreshed live: health,
// NATS state, the link to its parent (state, queued envelopes, p50/p99 queue wait measured at the
// parent), in-flight envelopes, processing (edge: end-to-end) p50/p99, counts. It reads the gateway's
// /status.json, the same data as the status page. q or Ctrl-C quits; --once prints one screen, --json
// the raw status.

import { parseArgs } from 'node:util';
import { loadTopology, splitHostPort, urlHost, type Topology } from '../../../shared/config/index.js';
import { formatMs } from '../../gateway/status/format.js';
import type { Health, MeshStatus } from '../../gateway/status/mesh-status.js';

const USAGE = 'usage: ra-mesh top <topology.yaml> [--url <gateway base url>] [--interval <ms>] [--once] [--json] [--no-color]\n';
const FETCH_TIMEOUT_MS = 5_000;

/** The gateway's base URL from the topology (its `http` listener; a wildcard address is asked on loopback). */
export function gatewayBaseUrl(topology: Topology): string {
  const [host, port] = splitHostPort(topology.gateway().http ?? '127.0.0.1:8080');
  const h = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host;
  return `http://${urlHost(h)}:${port}`;
}

async function fetchStatus(base: string): Promise<MeshStatus> {
  const res = await fetch(`${base}/status.json`, { signal: AbortSignal.timeout(FETCH_TIMEOUT_MS) });
  if (!res.ok) throw new Error(`${base}/status.json answered HTTP ${res.status}`);
  return (await res.json()) as MeshStatus;
}

const COLORS: Record<Health, string> = { ok: '\x1b[32m', warn: '\x1b[33m', down: '\x1b[31m', unknown: '\x1b[90m' };
const RESET = '\x1b[0m';

/** One screen of text (no cursor control). */
export function renderTop(s: MeshStatus, opts: { color: boolean; source: string; width?: number }): string {
  const paint = (h: Health, text: string) => (opts.color ? `${COLORS[h]}${text}${RESET}` : text);
  const byId = new Map(s.nodes.map((n) => [n.id, n]));
  const uplink = new Map(s.links.map((l) => [l.child, l]));
  // Tree order: the gateway first, each node followed by its children, indented by depth.
  const rows: Array<{ id: string; depth: number }> = [];
  const walk = (id: string, depth: number) => {
    rows.push({ id, depth });
    for (const n of s.nodes) if (n.parent === id) walk(n.id, depth + 1);
  };
  walk(s.gateway, 0);
  const head = ['NODE', 'ROLE', 'DC/SEGMENT', 'HEALTH', 'NATS', 'LINK TO PARENT', 'QUEUED', 'WAIT p50/p99', 'IN FLIGHT', 'LATENCY p50/p99', 'DONE', 'REFUSED', 'REJECTED'];
  const table: Array<{ cells: string[]; health: Health[] }> = [];
  const q = (x: { count: number; p50: number | null; p99: number | null } | null) => (x && x.count > 0 ? `${formatMs(x.p50)} / ${formatMs(x.p99)}` : '-');
  const sum = (o: Record<string, number> | undefined) => (o ? String(Object.values(o).reduce((a, b) => a + b, 0)) : '-');
  for (const { id, depth } of rows) {
    const n = byId.get(id)!;
    const l = uplink.get(id);
    table.push({
      cells: [
        `${'  '.repeat(depth)}${id}`,
        n.role,
        n.segment ? `${n.dc}/${n.segment}` : n.dc,
        n.health,
        n.nats,
        l ? `${l.state} -> ${l.parent} (${l.health})` : '-',
        l?.queued === null || l?.queued === undefined ? '-' : String(l.queued),
        l ? q(l.wait) : '-',
        n.inFlight === null ? '-' : String(n.inFlight),
        `${n.role === 'edge' ? 'e2e ' : ''}${q(n.role === 'edge' ? n.issuance : n.processing)}`,
        sum(n.counts?.processed),
        sum(n.counts?.refused),
        sum(n.counts?.rejected),
      ],
      health: [n.health, l?.health ?? 'unknown'],
    });
  }
  const widths = head.map((h, i) => Math.max(h.length, ...table.map((r) => r.cells[i]!.length)));
  const pad = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ');
  const out: string[] = [];
  out.push(`ra-mesh top - mesh ${s.mesh} via ${opts.source} - ${new Date(s.at).toLocaleTimeString()} - issued ${s.totals.issued}, refused ${s.totals.refused}, rejected ${s.totals.rejected}`);
  out.push('');
  out.push(pad(head));
  for (const r of table) {
    let line = pad(r.cells);
    // Colour the health and link cells after padding, so columns stay aligned.
    const start = (i: number) => widths.slice(0, i).reduce((a, w) => a + w + 2, 0);
    if (opts.color) {
      const linkAt = start(5);
      const healthAt = start(3);
      line =
        line.slice(0, healthAt) + paint(r.health[0]!, line.slice(healthAt, healthAt + widths[3]!)) +
        line.slice(healthAt + widths[3]!, linkAt) + paint(r.health[1]!, line.slice(linkAt, linkAt + widths[5]!)) +
        line.slice(linkAt + widths[5]!);
    }
    out.push(line);
  }
  const problems = [...s.nodes.filter((n) => n.reason).map((n) => `  ${n.id}: ${n.reason}`), ...s.links.filter((l) => l.reason).map((l) => `  ${l.child} -> ${l.parent}: ${l.reason}`)];
  if (problems.length > 0) out.push('', 'attention:', ...problems);
  if (s.refusals.length > 0) {
    out.push('', 'recent refusals:');
    for (const r of s.refusals.slice(0, 8)) {
      out.push(`  ${new Date(r.at).toLocaleTimeString()}  ${r.node}  ${r.kind} by ${r.layer}: ${r.reason}  ${r.envelopeId ?? '-'}${r.detail ? `  ${r.detail}` : ''}`);
    }
  }
  const text = out.join('\n');
  return opts.width ? text.split('\n').map((l) => (visibleLength(l) > opts.width! ? cut(l, opts.width!) : l)).join('\n') : text;
}

const ANSI = /\x1b\[[0-9;]*m/g;
const visibleLength = (s: string) => s.replace(ANSI, '').length;
/** Cuts a line to `width` visible characters, keeping colour codes balanced. */
function cut(s: string, width: number): string {
  let out = '';
  let n = 0;
  for (let i = 0; i < s.length && n < width; ) {
    if (s[i] === '\x1b') {
      const m = /^\x1b\[[0-9;]*m/.exec(s.slice(i));
      if (m) {
        out += m[0];
        i += m[0].length;
        continue;
      }
    }
    out += s[i];
    i++;
    n++;
  }
  return out + (out.includes('\x1b[') ? RESET : '');
}

export async function topCommand(args: string[]): Promise<number> {
  const { positionals, values } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      url: { type: 'string' },
      interval: { type: 'string', default: '1000' },
      once: { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
      'no-color': { type: 'boolean', default: false },
    },
  });
  if (positionals.length !== 1) {
    process.stderr.write(USAGE);
    return 2;
  }
  const interval = Number(values.interval);
  if (!Number.isFinite(interval) || interval < 100) {
    process.stderr.write(`ra-mesh top: --interval must be a number of milliseconds, at least 100 (got "${values.interval}")\n`);
    return 2;
  }
  const topology = loadTopology(positionals[0]!);
  const base = (values.url ?? gatewayBaseUrl(topology)).replace(/\/$/, '');
  const out = process.stdout;
  const color = !values['no-color'] && out.isTTY === true && !process.env.NO_COLOR;

  if (values.json || values.once) {
    let s: MeshStatus;
    try {
      s = await fetchStatus(base);
    } catch (e) {
      process.stderr.write(`ra-mesh top: cannot read ${base}/status.json: ${(e as Error).message}\n`);
      return 1;
    }
    out.write(values.json ? JSON.stringify(s, null, 2) + '\n' : renderTop(s, { color, source: base }) + '\n');
    return 0;
  }

  // Live: the alternate screen, redrawn every interval; q, Ctrl-C or SIGTERM restores the terminal.
  const stdin = process.stdin;
  const tty = out.isTTY === true;
  return new Promise<number>((resolve) => {
    let timer: NodeJS.Timeout | undefined;
    let stopped = false;
    const stop = (code: number) => {
      if (stopped) return;
      stopped = true;
      if (timer) clearTimeout(timer);
      if (stdin.isTTY) stdin.setRawMode(false);
      stdin.pause();
      stdin.off('data', onKey);
      process.off('SIGINT', onSigint);
      process.off('SIGTERM', onSigint);
      if (tty) out.write('\x1b[?25h\x1b[?1049l');
      resolve(code);
    };
    const onKey = (d: Buffer) => {
      const k = d.toString('utf8');
      // q, Q, Ctrl-C (raw mode delivers it as a byte), Ctrl-D.
      if (k.includes('q') || k.includes('Q') || k.includes('\u0003') || k.includes('\u0004')) stop(0);
    };
    const onSigint = () => stop(0);
    process.on('SIGINT', onSigint);
    process.on('SIGTERM', onSigint);
    if (stdin.isTTY) stdin.setRawMode(true);
    stdin.on('data', onKey);
    stdin.resume();
    if (tty) out.write('\x1b[?1049h\x1b[?25l');
    const draw = async () => {
      let screen: string;
      try {
        screen = renderTop(await fetchStatus(base), { color, source: base, ...(out.columns ? { width: out.columns } : {}) });
      } catch (e) {
        screen = `ra-mesh top - cannot read ${base}/status.json: ${(e as Error).message}; retrying`;
      }
      if (stopped) return;
      out.write((tty ? '\x1b[H\x1b[2J' : '') + screen + `\n\n(refresh ${interval} ms; q or Ctrl-C quits)\n`);
      timer = setTimeout(() => void draw(), interval);
    };
    void draw();
  });
}
