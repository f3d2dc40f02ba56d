export { EdgeService, type EdgeServiceOptions } from './edge-service.js';
