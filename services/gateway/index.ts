export { GatewayService, type GatewayServiceOptions } from './gateway-service.js';
export type { CertificateAuthorityService } from './cas/cas.js';
