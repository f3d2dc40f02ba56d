import type { CasConfigOf } from '../../../shared/config/index.js';
import { RaError } from '../../../shared/errors/index.js';
import type { CasContext } from './create-cas.js';
import type { CertificateAuthorityService, CreateCertificateRequest, CreateCertificateResponse, RevokeCertificateRequest, RevokeCertificateResponse } from './cas.js';

/** Google CAS as the gateway's CA service. (Skeleton: being implemented.) */
export class CloudCas implements CertificateAuthorityService {
  readonly type = 'cloudcas';
  readonly idempotent = false;

  private constructor(readonly config: CasConfigOf<'cloudcas'>) {}

  static async create(config: CasConfigOf<'cloudcas'>, _ctx: CasContext): Promise<CloudCas> {
    return new CloudCas(config);
  }

  async createCertificate(_req: CreateCertificateRequest): Promise<CreateCertificateResponse> {
    throw new RaError('serverInternal', { reason: 'cas-config', detail: 'the cloudcas CA service is not implemented yet' });
  }

  async revokeCertificate(_req: RevokeCertificateRequest): Promise<RevokeCertificateResponse> {
    throw new RaError('serverInternal', { reason: 'cas-config', detail: 'the cloudcas CA service is not implemented yet' });
  }

  async rootsPem(): Promise<string> {
    throw new RaError('serverInternal', { reason: 'cas-config', detail: 'the cloudcas CA service is not implemented yet' });
  }
}
