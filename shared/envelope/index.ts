export * from './node-keys.js';
export * from './replay-guard.js';
export * from './envelope.js';
export * from './result.js';
export * from './schemas.js';
export { rejection, type EnvelopeRejection } from './jws.js';
export * from './key-rotation.js';
export * from './mesh-keys.js';
export * from './crl.js';
