// Prometheus metrics of one node (prom-client), in a registry of its own so that several nodes in one
// process (ra-mesh up) never mix their numbers. Every series carries the node id and role as labels.
// Served on the node's `metrics` listener (topology) at /metrics, and by the gateway on its HTTP port.

import { createServer, type Server } from 'node:http';
import { Counter, Registry, collectDefaultMetrics } from 'prom-client';
import { splitHostPort, urlHost } from '../config/index.js';

export class NodeMetrics {
  readonly registry = new Registry();
  /** Envelopes and results a node refused to handle, by reason (malformed, bad-signature, replayed, ...). */
  readonly envelopesRejected: Counter<'reason'>;

  constructor(readonly node: string, readonly role: string, opts: { processMetrics?: boolean } = {}) {
    this.registry.setDefaultLabels({ node, role });
    this.envelopesRejected = new Counter({
      name: 'ramesh_envelopes_rejected_total',
      help: 'Envelopes dropped by this node because they failed verification, by reason',
      labelNames: ['reason'],
      registers: [this.registry],
    });
    if (opts.processMetrics) collectDefaultMetrics({ register: this.registry, prefix: 'ramesh_' });
  }

  /** The exposition text (what /metrics answers). */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** Serves GET /metrics on `listen` (host:port). */
  async serve(listen: string): Promise<{ url: string; close(): Promise<void> }> {
    const [host, port] = splitHostPort(listen);
    const server: Server = createServer((req, res) => {
      if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found; try /metrics\n');
        return;
      }
      this.text().then(
        (body) => res.writeHead(200, { 'content-type': this.contentType }).end(body),
        (e: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${e.message}\n`),
      );
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    const addr = server.address();
    const url = `http://${urlHost(host)}:${typeof addr === 'object' && addr ? addr.port : port}/metrics`;
    return { url, close: () => new Promise((r) => server.close(() => r())) };
  }
}
