import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';

// Ports handed to servers that a test starts later (nats-server, a node process, a fake CAS) are taken
// below the kernel's ephemeral range. A port from the ephemeral range (what `listen(0)` returns) can be
// picked as the source port of any outgoing connection in the moment between our probe and the real
// bind, and then that bind fails with EADDRINUSE (seen in CI). Ports below the range are only ever
// taken by an explicit bind. Each test process walks the range from its own starting point, so
// concurrent test files rarely probe the same port, and the probe catches it when they do.

function ephemeralRange(): [number, number] {
  try {
    const [lo, hi] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    if (lo && hi && lo <= hi) return [lo, hi];
  } catch {
    // not Linux: IANA's dynamic range
  }
  return [49152, 65535];
}

const [EPHEMERAL_LO] = ephemeralRange();
/** The walk covers [RANGE_LO, RANGE_HI): above the well-known/commonly configured ports, below the ephemeral ones. */
const RANGE_LO = 20000;
const RANGE_HI = Math.max(RANGE_LO + 2000, Math.min(EPHEMERAL_LO, 32768));
const SPAN = RANGE_HI - RANGE_LO;
let cursor = (process.pid * 7919) % SPAN;

function listen(host: string, port: number): Promise<Server | undefined> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.once('error', (e: NodeJS.ErrnoException) => (e.code === 'EADDRINUSE' || e.code === 'EACCES' ? res(undefined) : rej(e)));
    srv.listen({ host, port, exclusive: true }, () => res(srv));
  });
}

function close(srv: Server): Promise<void> {
  return new Promise((res) => srv.close(() => res()));
}

/** A TCP port that was free on `host` a moment ago and lies outside the ephemeral range. */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  const [p] = await freePorts(1, host);
  return p!;
}

/** `n` distinct free ports on `host`: all are held open together before any is released. */
export async function freePorts(n: number, host = '127.0.0.1'): Promise<number[]> {
  const held: Array<{ port: number; srv: Server }> = [];
  try {
    for (let tried = 0; held.length < n; tried++) {
      if (tried >= SPAN) throw new Error(`no ${n} free ports on ${host} in ${RANGE_LO}-${RANGE_HI - 1}`);
      const port = RANGE_LO + cursor;
      cursor = (cursor + 1) % SPAN;
      const srv = await listen(host, port);
      if (srv) held.push({ port, srv });
    }
    return held.map((h) => h.port);
  } finally {
    await Promise.all(held.map((h) => close(h.srv)));
  }
}
