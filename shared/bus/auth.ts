// Who may use the bus, and for what. With `nats.auth: nkey` (the default) every node has its own
// nkey (an Ed25519 key; the server keeps only the public half) and subject permissions generated
// from the topology, and every leaf server authenticates its link to the hub with its own password:
//   edge  E (parent P): publish up.P.E                        subscribe down.E
//   relay R (parent P): publish up.P.R, down.<edges below R>
//   gateway G:          publish down.<every edge>
// plus the reply inbox and only the JetStream API it needs (queue.ts): its own outbound stream, and
// its one durable consumer on each child's outbound stream. A stolen edge credential can neither inject into another node's queue nor
// read another edge's results; nats-server enforces that, not ra-mesh.

import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { nkeyAuthenticator, nkeys, type ConnectionOptions } from 'nats';
import type { Topology } from '../config/index.js';
import { downSubject, INBOX_PREFIX, jetStreamApiSubjects, upSubject } from './subjects.js';

export interface SubjectPermissions {
  publish: string[];
  subscribe: string[];
}

export interface NatsUser {
  /** The node id (also the connection name). */
  node: string;
  /** Public user nkey ("U..."). */
  nkey: string;
  permissions: SubjectPermissions;
}

export interface LeafLinkUser {
  /** The data center whose leaf server uses this login on its link to the hub. */
  dc: string;
  user: string;
  password: string;
}

/** Everything the servers' configs need: node users and leaf-link logins. Secrets stay in files. */
export interface BusCredentials {
  users: NatsUser[];
  leafLinks: LeafLinkUser[];
}

/** The subjects a node may publish to and subscribe to, derived from its place in the topology. */
export function nodePermissions(topology: Topology, nodeId: string): SubjectPermissions {
  const n = topology.node(nodeId);
  const inbox = `${INBOX_PREFIX}.>`;
  const mine = topology.jetStreamDomain(n.id);
  const api = jetStreamApiSubjects(n.id, {
    out: n.parent !== undefined,
    children: topology.children(n.id).map((c) => {
      const d = topology.jetStreamDomain(c.id);
      return { id: c.id, apiPrefix: d === mine ? '$JS.API' : `$JS.${d}.API` };
    }),
  });
  switch (n.role) {
    case 'edge':
      return { publish: [upSubject(n.parent!, n.id), ...api], subscribe: [downSubject(n.id), inbox] };
    case 'relay':
      return {
        // A relay answers refusals straight to the edges below it.
        publish: [upSubject(n.parent!, n.id), ...topology.edgesBelow(n.id).map(downSubject), ...api],
        subscribe: [inbox],
      };
    case 'gateway':
      return { publish: [...topology.edges().map((e) => downSubject(e.id)), ...api], subscribe: [inbox] };
  }
}

const SEED_FILE = (node: string) => `${node}.nk`;
const LEAF_PASS_FILE = (dc: string) => `leaf-${dc}.pass`;

async function writeSecret(file: string, text: string): Promise<void> {
  await writeFile(file, text, { mode: 0o600, flag: 'wx' });
  await chmod(file, 0o600);
}

async function readOrCreate(file: string, make: () => string): Promise<string> {
  try {
    return (await readFile(file, 'utf8')).trim();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  try {
    await writeSecret(file, make() + '\n');
  } catch (e) {
    // Another process made it first: use theirs.
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
  }
  return (await readFile(file, 'utf8')).trim();
}

/**
 * The bus credentials of a topology: loads every node's seed and every leaf link's password from the
 * credentials dir, creating the missing ones (mode 0600). Returns undefined for `nats.auth: none`.
 */
export async function ensureBusCredentials(topology: Topology): Promise<BusCredentials | undefined> {
  if (topology.config.nats.auth === 'none') return undefined;
  const dir = topology.natsCredentialsDir();
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const users: NatsUser[] = [];
  for (const n of topology.nodes) {
    const seed = await readOrCreate(join(dir, SEED_FILE(n.id)), () => new TextDecoder().decode(nkeys.createUser().getSeed()));
    users.push({ node: n.id, nkey: publicKeyOf(seed, join(dir, SEED_FILE(n.id))), permissions: nodePermissions(topology, n.id) });
  }
  const leafLinks: LeafLinkUser[] = [];
  for (const dc of Object.keys(topology.config.nats.dcs)) {
    const password = await readOrCreate(join(dir, LEAF_PASS_FILE(dc)), () => randomBytes(24).toString('base64url'));
    leafLinks.push({ dc, user: `leaf-${dc}`, password });
  }
  return { users, leafLinks };
}

function publicKeyOf(seed: string, file: string): string {
  try {
    const kp = nkeys.fromSeed(new TextEncoder().encode(seed));
    const pub = kp.getPublicKey();
    if (!pub.startsWith('U')) throw new Error('not a user seed');
    return pub;
  } catch (e) {
    throw new Error(`${file}: not a NATS user nkey seed (${(e as Error).message})`);
  }
}

/**
 * Connection options for a node: its nkey (read from `<credentialsDir>/<node>.nk`) and the TLS CA of
 * the topology. Nothing when the bus is open and plain.
 */
export async function nodeConnectOptions(topology: Topology, nodeId: string): Promise<Partial<ConnectionOptions>> {
  const opts: Partial<ConnectionOptions> = {};
  if (topology.config.nats.auth === 'nkey') {
    const file = join(topology.natsCredentialsDir(), SEED_FILE(nodeId));
    let seed: string;
    try {
      seed = (await readFile(file, 'utf8')).trim();
    } catch (e) {
      throw new Error(
        `NATS credentials of node "${nodeId}" not found at ${file} (${(e as NodeJS.ErrnoException).code}); ` +
          `create them with "ra-mesh nats-config <topology.yaml>"`,
      );
    }
    publicKeyOf(seed, file);
    opts.authenticator = nkeyAuthenticator(new TextEncoder().encode(seed));
  }
  const tls = topology.config.nats.tls;
  if (tls) opts.tls = { caFile: topology.resolvePath(tls.ca) };
  return opts;
}
