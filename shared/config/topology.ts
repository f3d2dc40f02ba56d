import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { isMap, isSeq, LineCounter, parseDocument, type Node as YamlNode } from 'yaml';
import { type z } from 'zod';
import {
  acmeSchema,
  casSchema,
  topologySchema,
  type AcmeConfig,
  type NodeConfig,
  type TopologyConfig,
} from './topology-schema.js';

/** A topology file that does not parse or validate. Each issue names the YAML path (and line:col when known). */
export class TopologyError extends Error {
  constructor(
    readonly source: string,
    readonly issues: Array<{ path: string; line?: number; col?: number; message: string }>,
  ) {
    super(
      `invalid topology ${source}:\n` +
        issues.map((i) => `  ${i.path || '(root)'}${i.line ? ` (line ${i.line}:${i.col})` : ''}: ${i.message}`).join('\n'),
    );
    this.name = 'TopologyError';
  }
}

export function formatPath(path: ReadonlyArray<PropertyKey>): string {
  let out = '';
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`;
    else out += out ? `.${String(p)}` : String(p);
  }
  return out;
}

function deepFreeze<T>(o: T): Readonly<T> {
  if (o && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o as object)) deepFreeze(v);
  }
  return o;
}

/** Locate a zod issue path in the YAML document; walks as deep as the document goes. */
function locate(doc: ReturnType<typeof parseDocument>, lc: LineCounter, path: ReadonlyArray<PropertyKey>) {
  let node: unknown = doc.contents;
  let found: unknown = node;
  for (const p of path) {
    if (isMap(node)) node = node.get(String(p), true);
    else if (isSeq(node) && typeof p === 'number') node = node.get(p, true);
    else break;
    if (!node) break;
    found = node;
  }
  const range = (found as YamlNode | undefined)?.range;
  if (!range) return {};
  const pos = lc.linePos(range[0]);
  return { line: pos.line, col: pos.col };
}

/** Parse and validate topology YAML text. `baseDir` resolves relative paths (stateDir, keysDir, stores). */
export function parseTopology(text: string, source = '<topology>', baseDir = process.cwd()): Topology {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new TopologyError(
      source,
      doc.errors.map((e) => ({ path: '', line: e.linePos?.[0]?.line, col: e.linePos?.[0]?.col, message: e.message.split('\n')[0]! })),
    );
  }
  const raw = doc.toJS();
  const res = topologySchema.safeParse(raw ?? {});
  if (!res.success) {
    throw new TopologyError(
      source,
      res.error.issues.map((i: z.core.$ZodIssue) => ({ path: formatPath(i.path), ...locate(doc, lc, i.path), message: i.message })),
    );
  }
  return new Topology(res.data, baseDir, source);
}

export function loadTopology(file: string): Topology {
  const abs = resolve(file);
  let text: string;
  try {
    text = readFileSync(abs, 'utf8');
  } catch (e) {
    throw new TopologyError(abs, [{ path: '', message: `cannot read file: ${(e as Error).message}` }]);
  }
  return parseTopology(text, abs, dirname(abs));
}

/** A validated, frozen topology with the look-ups every node needs. */
export class Topology {
  readonly config: Readonly<TopologyConfig>;
  private readonly byId: Map<string, NodeConfig>;

  constructor(config: TopologyConfig, readonly baseDir: string, readonly source = '<topology>') {
    // Edges without an acme block get the documented defaults.
    for (const n of config.nodes) if (n.role === 'edge' && !n.acme) n.acme = acmeSchema.parse({});
    if (!config.nodes.some((n) => n.role === 'gateway' && n.cas)) {
      const gw = config.nodes.find((n) => n.role === 'gateway');
      if (gw) gw.cas = casSchema.parse({ type: 'builtin' });
    }
    this.config = deepFreeze(config);
    this.byId = new Map(config.nodes.map((n) => [n.id, n]));
  }

  get nodes(): ReadonlyArray<NodeConfig> {
    return this.config.nodes;
  }

  node(id: string): NodeConfig {
    const n = this.byId.get(id);
    if (!n) throw new Error(`unknown node "${id}" in topology ${this.source}`);
    return n;
  }

  has(id: string): boolean {
    return this.byId.has(id);
  }

  gateway(): NodeConfig {
    return this.config.nodes.find((n) => n.role === 'gateway')!;
  }

  edges(): NodeConfig[] {
    return this.config.nodes.filter((n) => n.role === 'edge');
  }

  children(id: string): NodeConfig[] {
    return this.config.nodes.filter((n) => n.parent === id);
  }

  /** The chain from a node up to the gateway, inclusive: [edge, relay..., gateway]. */
  pathToGateway(id: string): string[] {
    const out: string[] = [];
    let cur: NodeConfig | undefined = this.node(id);
    while (cur) {
      out.push(cur.id);
      cur = cur.parent === undefined ? undefined : this.node(cur.parent);
    }
    return out;
  }

  /** The layers of policy a request from this edge passes, in evaluation order (edge first, gateway last). */
  layersFor(edgeId: string): NodeConfig[] {
    return this.pathToGateway(edgeId).map((id) => this.node(id));
  }

  acme(id: string): AcmeConfig {
    const n = this.node(id);
    if (!n.acme) throw new Error(`node "${id}" is not an edge`);
    return n.acme;
  }

  natsUrl(id: string): string {
    const n = this.node(id);
    return n.nats ?? this.config.nats.dcs[n.dc] ?? this.config.nats.hub;
  }

  /**
   * The JetStream domain of the server a node connects to: the dc name for a leaf server, "hub" for
   * the hub (the domains ra-mesh gives the servers it starts).
   */
  jetStreamDomain(id: string): string {
    const url = this.natsUrl(id);
    if (url === this.config.nats.hub) return 'hub';
    const dc = Object.entries(this.config.nats.dcs).find(([, u]) => u === url)?.[0];
    if (!dc) throw new Error(`node "${id}": its NATS URL ${url} is neither the hub nor a data center's leaf server (nats.dcs)`);
    return dc;
  }

  resolvePath(p: string): string {
    return isAbsolute(p) ? p : resolve(this.baseDir, p);
  }

  stateDir(): string {
    return this.resolvePath(this.config.stateDir);
  }

  storeDir(id: string): string {
    const n = this.node(id);
    return n.store ? this.resolvePath(n.store) : resolve(this.stateDir(), 'nodes', id);
  }

  keysDir(): string {
    return this.config.keysDir ? this.resolvePath(this.config.keysDir) : resolve(this.stateDir(), 'keys');
  }

  /** Where NATS credentials live: <node>.nk seeds and leaf-<dc>.pass passwords. */
  natsCredentialsDir(): string {
    const d = this.config.nats.credentialsDir;
    return d ? this.resolvePath(d) : resolve(this.keysDir(), 'nats');
  }

  /** Every edge below a node (the node itself if it is an edge). */
  edgesBelow(id: string): string[] {
    if (this.node(id).role === 'edge') return [id];
    return this.children(id).flatMap((c) => this.edgesBelow(c.id));
  }

  /** The chain as an indented tree, gateway at the top (what `ra-mesh validate` prints). */
  formatTree(): string {
    const lines: string[] = [`mesh ${this.config.mesh}`];
    const walk = (n: NodeConfig, prefix: string, last: boolean, top: boolean) => {
      const where = [n.dc, n.segment].filter(Boolean).join('/');
      const extra = n.role === 'edge' ? ` acme=${n.acme!.listen} [${n.acme!.challenges.join(',')}]` : n.role === 'gateway' ? ` cas=${n.cas?.type}` : '';
      lines.push(`${prefix}${top ? '' : last ? '└─ ' : '├─ '}${n.id} (${n.role}, ${where}, nats ${this.natsUrl(n.id)})${extra}`);
      const kids = this.children(n.id);
      kids.forEach((k, i) => walk(k, prefix + (top ? '' : last ? '   ' : '│  '), i === kids.length - 1, false));
    };
    walk(this.gateway(), '', true, true);
    return lines.join('\n');
  }
}
