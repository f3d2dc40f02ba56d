import type { CasConfigOf } from '../../../shared/config/index.js';
import { RaError } from '../../../shared/errors/index.js';
import type { CasContext } from './create-cas.js';
import type { CertificateAuthorityService, CreateCertificateRequest, CreateCertificateResponse, RevokeCertificateRequest, RevokeCertificateResponse } from './cas.js';

/** Vault as the gateway's CA service. (Skeleton: being implemented.) */
export class VaultCas implements CertificateAuthorityService {
  readonly type = 'vault';
  readonly idempotent = false;

  private constructor(readonly config: CasConfigOf<'vault'>) {}

  static async create(config: CasConfigOf<'vault'>, _ctx: CasContext): Promise<VaultCas> {
    return new VaultCas(config);
  }

  async createCertificate(_req: CreateCertificateRequest): Promise<CreateCertificateResponse> {
    throw new RaError('serverInternal', { reason: 'cas-config', detail: 'the vault CA service is not implemented yet' });
  }

  async revokeCertificate(_req: RevokeCertificateRequest): Promise<RevokeCertificateResponse> {
    throw new RaError('serverInternal', { reason: 'cas-config', detail: 'the vault CA service is not implemented yet' });
  }

  async rootsPem(): Promise<string> {
    throw new RaError('serverInternal', { reason: 'cas-config', detail: 'the vault CA service is not implemented yet' });
  }
}
