import { createLogger, type Logger } from '../../shared/logging/logger.js';

export type { Logger };

export function createGatewayLogger(nodeId: string): Logger {
  return createLogger('gateway', { node: nodeId });
}
