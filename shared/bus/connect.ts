import { connect, type ConnectionOptions, type NatsConnection } from 'nats';
import { createLogger, type Logger } from '../logging/logger.js';

export interface ConnectBusOptions {
  /** Connection name, shown by the server (e.g. the node id). */
  name: string;
  /** Default: createLogger('bus', { connection: name }). */
  log?: Logger;
  /** Authenticator and TLS of the node (see nodeConnectOptions in auth.ts). */
  connection?: Partial<ConnectionOptions>;
}

const STILL_WAITING_LOG_MS = 5_000;

/**
 * Connect to a NATS server and stay connected: reconnects forever (every 500 ms, plus the client's jitter)
 * and, when the server is not up yet, keeps trying until it is (waitOnFirstConnect), so this only resolves
 * once connected; a warning is logged every 5 s while it waits. Status changes are logged:
 * disconnect / lame-duck / async errors at warn, reconnect at info, the final close at info (warn on error).
 */
export async function connectBus(url: string, opts: ConnectBusOptions): Promise<NatsConnection> {
  const log = opts.log ?? createLogger('bus', { connection: opts.name });
  const started = Date.now();
  const waiting = setInterval(() => {
    log.warn({ url, name: opts.name, waitedMs: Date.now() - started }, 'still waiting for the NATS server');
  }, STILL_WAITING_LOG_MS);
  waiting.unref();
  let nc: NatsConnection;
  try {
    nc = await connect({
      ...opts.connection,
      servers: url,
      name: opts.name,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 500,
      waitOnFirstConnect: true,
      // nats.js otherwise captures a stack trace (new Error()) for every request and its timeout, a
      // JetStream publish included: a few percent of a relay's CPU in test/bench profiles. Errors keep
      // their message and code; only the caller's frames are missing from their stack.
      noAsyncTraces: true,
    });
  } finally {
    clearInterval(waiting);
  }
  log.info({ url, name: opts.name, server: nc.getServer() }, 'connected to NATS');

  void (async () => {
    for await (const s of nc.status()) {
      const data = typeof s.data === 'string' || typeof s.data === 'number' ? s.data : undefined;
      switch (s.type) {
        case 'disconnect':
          log.warn({ url, name: opts.name, server: data }, 'NATS disconnected; reconnecting');
          break;
        case 'reconnect':
          log.info({ url, name: opts.name, server: data }, 'NATS reconnected');
          break;
        case 'ldm':
          log.warn({ url, name: opts.name, server: data }, 'NATS server entering lame duck mode');
          break;
        case 'error':
          log.warn({ url, name: opts.name, err: s.data }, 'NATS async error');
          break;
        case 'update':
          log.debug({ url, name: opts.name, servers: s.data }, 'NATS cluster update');
          break;
        case 'reconnecting':
          log.debug({ url, name: opts.name }, 'NATS reconnecting');
          break;
        default:
          log.trace({ url, name: opts.name, type: s.type, data: s.data }, 'NATS status');
      }
    }
  })().catch(() => {
    /* the iterator ends when the connection closes */
  });
  void nc.closed().then((err) => {
    if (err) log.warn({ url, name: opts.name, err }, 'NATS connection closed with an error');
    else log.info({ url, name: opts.name }, 'NATS connection closed');
  });
  return nc;
}
