import type { CasConfigOf } from '../../../shared/config/index.js';
import { RaError } from '../../../shared/errors/index.js';
import type { CasContext } from './create-cas.js';
import type { CertificateAuthorityService, CreateCertificateRequest, CreateCertificateResponse, RevokeCertificateRequest, RevokeCertificateResponse } from './cas.js';

/** step-ca as the gateway's CA service. (Skeleton: being implemented.) */
export class StepCas implements CertificateAuthorityService {
  readonly type = 'stepca';
  readonly idempotent = false;

  private constructor(readonly config: CasConfigOf<'stepca'>) {}

  static async create(config: CasConfigOf<'stepca'>, _ctx: CasContext): Promise<StepCas> {
    return new StepCas(config);
  }

  async createCertificate(_req: CreateCertificateRequest): Promise<CreateCertificateResponse> {
    throw new RaError('serverInternal', { reason: 'cas-config', detail: 'the stepca CA service is not implemented yet' });
  }

  async revokeCertificate(_req: RevokeCertificateRequest): Promise<RevokeCertificateResponse> {
    throw new RaError('serverInternal', { reason: 'cas-config', detail: 'the stepca CA service is not implemented yet' });
  }

  async rootsPem(): Promise<string> {
    throw new RaError('serverInternal', { reason: 'cas-config', detail: 'the stepca CA service is not implemented yet' });
  }
}
