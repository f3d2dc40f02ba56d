import { createServer, type Server } from 'node:net';

function listen0(host: string): Promise<Server> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.once('error', rej);
    srv.listen({ host, port: 0, exclusive: true }, () => res(srv));
  });
}

function close(srv: Server): Promise<void> {
  return new Promise((res) => srv.close(() => res()));
}

/** A TCP port that was free on `host` a moment ago (listen on port 0, read it, close). */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  const [p] = await freePorts(1, host);
  return p!;
}

/** `n` distinct free ports on `host`: all are held open together before any is released. */
export async function freePorts(n: number, host = '127.0.0.1'): Promise<number[]> {
  const servers: Server[] = [];
  try {
    for (let i = 0; i < n; i++) servers.push(await listen0(host));
    return servers.map((s) => {
      const a = s.address();
      if (!a || typeof a === 'string') throw new Error('no TCP address');
      return a.port;
    });
  } finally {
    await Promise.all(servers.map(close));
  }
}
