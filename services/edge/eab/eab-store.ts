import { randomBytes } from 'node:crypto';
import { RaError } from '../../../shared/errors/index.js';
import { formatPath, policySchema, type PolicyConfig } from '../../../shared/config/index.js';
import { PolicyLayer } from '../../../shared/policy/index.js';
import type { Collection, NodeStore } from '../../../shared/store/index.js';

/** An External Account Binding key (RFC 8555 §7.3.4): a MAC key handed to a client out of band. */
export interface EabKeyRecord {
  keyId: string;
  /** base64url HMAC key. */
  hmacKey: string;
  createdAt: string;
  /** Free text an operator gives the key (device group, owner). */
  label?: string;
  /** The account the key is bound to: each key binds once. */
  boundTo: string | null;
  boundAt?: string;
  revoked: boolean;
  revokedAt?: string;
  /**
   * The account layer: a policy (the topology's policy fields) for the account bound to this key,
   * evaluated before the edge's layer (account -> edge -> relays -> gateway).
   */
  policy?: PolicyConfig;
}

export type EabKeyView = Omit<EabKeyRecord, 'hmacKey'>;

const KEY_ID_RE = /^[A-Za-z0-9_-]{1,128}$/;

function view(rec: EabKeyRecord): EabKeyView {
  const { hmacKey: _k, ...v } = rec;
  return v;
}

/** A policy for an EAB key, checked with the topology's policy schema (errors name the field). */
export function parseAccountPolicy(input: unknown): PolicyConfig {
  const r = policySchema.safeParse(input);
  if (!r.success) {
    throw new RaError('malformed', {
      detail: `invalid account policy: ${r.error.issues.map((i) => `${formatPath(i.path) || '(root)'}: ${i.message}`).join('; ')}`,
    });
  }
  return r.data;
}

/** The edge's EAB keys, kept in its level store (managed with `ra-mesh eab add|list|revoke`). */
export class EabStore {
  readonly keys: Collection<EabKeyRecord>;
  /** Account layers by key id, kept so their rate-limit buckets live as long as the edge process. */
  private readonly layers = new Map<string, PolicyLayer>();

  constructor(readonly db: NodeStore) {
    this.keys = db.collection('eab');
  }

  /**
   * The account layer of an account bound to this key (undefined when the key has no policy). The
   * same PolicyLayer object is returned while the stored policy is unchanged.
   */
  async policyLayer(keyId: string | null | undefined): Promise<PolicyLayer | undefined> {
    if (!keyId) return undefined;
    const rec = await this.keys.get(keyId);
    if (!rec?.policy) {
      this.layers.delete(keyId);
      return undefined;
    }
    const fresh = new PolicyLayer(`account:${keyId}`, rec.policy);
    const cached = this.layers.get(keyId);
    if (cached && cached.digest === fresh.digest) return cached;
    this.layers.set(keyId, fresh);
    return fresh;
  }

  async add(opts: { keyId?: string; label?: string; policy?: unknown } = {}): Promise<EabKeyRecord> {
    const keyId = opts.keyId ?? optionSafeRandom(12);
    if (!KEY_ID_RE.test(keyId)) throw new RaError('malformed', { detail: 'EAB key id: 1-128 characters of A-Z a-z 0-9 _ -' });
    if (await this.keys.get(keyId)) throw new RaError('malformed', { detail: `EAB key id "${keyId}" already exists` });
    const policy = opts.policy === undefined ? undefined : parseAccountPolicy(opts.policy);
    const rec: EabKeyRecord = {
      keyId,
      // 256-bit MAC key, base64url as clients expect it (certbot --eab-hmac-key, lego --hmac).
      hmacKey: optionSafeRandom(32),
      createdAt: new Date().toISOString(),
      ...(opts.label ? { label: opts.label } : {}),
      boundTo: null,
      revoked: false,
      ...(policy ? { policy } : {}),
    };
    await this.keys.put(keyId, rec);
    return rec;
  }

  async list(): Promise<EabKeyView[]> {
    return (await this.keys.values()).map(view);
  }

  async revoke(keyId: string): Promise<EabKeyView> {
    const rec = await this.keys.get(keyId);
    if (!rec) throw new RaError('notFound', { detail: `no EAB key "${keyId}"` });
    if (!rec.revoked) {
      rec.revoked = true;
      rec.revokedAt = new Date().toISOString();
      await this.keys.put(keyId, rec);
    }
    return view(rec);
  }
}

/**
 * Random bytes as base64url that never begin with "-": pasted after a command-line flag
 * (`certbot --eab-kid -x...`, `lego --hmac -x...`) such a value would be taken for an option.
 */
function optionSafeRandom(bytes: number): string {
  for (;;) {
    const v = randomBytes(bytes).toString('base64url');
    if (!v.startsWith('-')) return v;
  }
}
