import { parseDuration, type CasConfig, type Topology } from '../../../shared/config/index.js';
import type { Logger } from '../../../shared/logging/logger.js';
import type { KeyedLock, NodeStore } from '../../../shared/store/index.js';
import { BuiltinCas } from './builtin-cas.js';
import type { CertificateAuthorityService } from './cas.js';
import { CloudCas } from './cloudcas-cas.js';
import { StepCas } from './stepca-cas.js';
import { VaultCas } from './vault-cas.js';

/** What a CA service backend may use of the gateway: its store, locks, logger, and paths relative to the topology. */
export interface CasContext {
  topology: Topology;
  nodeId: string;
  db: NodeStore;
  locks: KeyedLock;
  log: Logger;
}

/** The gateway's CA service from its `cas` block (after step-ca's cas/apiv1 registry: one switch, one file per backend). */
export async function createCas(config: CasConfig, ctx: CasContext): Promise<CertificateAuthorityService> {
  switch (config.type) {
    case 'builtin':
      return BuiltinCas.create(ctx.topology.storeDir(ctx.nodeId), ctx.topology.config.mesh, ctx.db, ctx.locks, ctx.log, {
        ...(config.crlUrl ? { crlUrl: config.crlUrl } : {}),
        crlValidityMs: parseDuration(config.crlValidity),
      });
    case 'stepca':
      return StepCas.create(config, ctx);
    case 'vault':
      return VaultCas.create(config, ctx);
    case 'cloudcas':
      return CloudCas.create(config, ctx);
  }
}
