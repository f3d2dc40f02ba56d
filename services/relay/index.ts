export { RelayService, type RelayServiceOptions } from './relay-service.js';
