// PKI helpers of ra-mesh. `x509` is @peculiar/x509 with its Reflect polyfill loaded (see ./x509.ts).
export * from './builtin-ca.js';
export * from './certificate.js';
export * from './csr.js';
export * from './der.js';
export * from './ip.js';
export * from './pem.js';
export * as x509 from './x509.js';
