export * from './duration.js';
export * from './topology-schema.js';
export * from './topology.js';
export * from './host-port.js';
