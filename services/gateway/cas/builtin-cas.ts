import { join } from 'node:path';
import { BuiltinCa } from '../../../shared/pki/index.js';
import type { Logger } from '../../../shared/logging/logger.js';
import type { CertificateAuthorityService, CreateCertificateRequest, CreateCertificateResponse } from './cas.js';

/** The embedded default CA: root + intermediate created on first start and kept in the gateway's store. */
export class BuiltinCas implements CertificateAuthorityService {
  readonly type = 'builtin';

  private constructor(readonly ca: BuiltinCa) {}

  static async create(storeDir: string, meshName: string, log?: Logger): Promise<BuiltinCas> {
    return new BuiltinCas(await BuiltinCa.loadOrCreate(join(storeDir, 'ca'), { name: meshName, ...(log ? { log } : {}) }));
  }

  async createCertificate(req: CreateCertificateRequest): Promise<CreateCertificateResponse> {
    const signed = await this.ca.sign({
      csrDer: req.csrDer,
      dnsNames: req.dnsNames,
      ipAddresses: req.ipAddresses,
      lifetimeMs: req.lifetimeMs,
      ...(req.notBefore ? { notBefore: req.notBefore } : {}),
    });
    return { chainPem: signed.chainPem, serial: signed.serial, notAfter: signed.notAfter };
  }

  async rootsPem(): Promise<string> {
    return this.ca.rootPem();
  }
}
