import { createLogger, type Logger } from '../../shared/logging/logger.js';

export type { Logger };

export function createEdgeLogger(nodeId: string): Logger {
  return createLogger('edge', { node: nodeId });
}
