import { pino, type Logger, type LoggerOptions } from 'pino';

export type { Logger } from 'pino';

/**
 * Creates the logger for one service. Every line carries the service name and node id; request
 * handlers add `envelopeId` with `child()` so one request can be followed across nodes.
 * Level from RA_MESH_LOG_LEVEL (default info); RA_MESH_LOG_LEVEL=silent in tests keeps output quiet.
 */
export function createLogger(service: string, bindings: Record<string, unknown> = {}, opts: LoggerOptions = {}): Logger {
  return pino({
    level: process.env.RA_MESH_LOG_LEVEL ?? 'info',
    base: { service, ...bindings },
    timestamp: pino.stdTimeFunctions.isoTime,
    ...opts,
  });
}
