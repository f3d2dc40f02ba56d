import { createLogger, type Logger } from '../../shared/logging/logger.js';

export type { Logger };

export function createRelayLogger(nodeId: string): Logger {
  return createLogger('relay', { node: nodeId });
}
