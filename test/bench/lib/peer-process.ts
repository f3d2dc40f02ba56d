// The far end of the bench's baselines (chain-mesh.ts), run as a process of its own as a node is, so a
// baseline pays the same wake-up of a second process that a hop between two nodes does.
//   respond <subject>:      answers every request on <subject> with its data (raw request/reply);
//   pull <stream> <durable>: holds one pull request on a durable consumer of <stream>, as a parent node
//                            does on its child's outbound stream, acks each message delivered and publishes
//                            its receipt time (performance.timeOrigin + now(), ms; one clock on one
//                            machine) to the subject the message names in its Bench-Reply header.
// Usage: node --import tsx peer-process.ts <nats url> respond <subject> | pull <stream> <durable>

import { connect, consumerOpts } from 'nats';

const [url, mode, a, b] = process.argv.slice(2);
if (!url || !a || (mode !== 'respond' && mode !== 'pull') || (mode === 'pull' && !b)) {
  process.stderr.write('usage: peer-process <nats url> respond <subject> | pull <stream> <durable>\n');
  process.exit(2);
}
const nc = await connect({ servers: url, name: `bench-peer-${mode}` });
if (mode === 'respond') {
  nc.subscribe(a, { callback: (_err, m) => m.respond(m.data) });
} else {
  const enc = new TextEncoder();
  const sub = await nc.jetstream().pullSubscribe(
    '',
    consumerOpts()
      .bind(a, b!)
      .manualAck()
      .callback((_err, m) => {
        // A message, or the end of an expired request (408): either way one request is used up.
        if (m) {
          const at = performance.timeOrigin + performance.now();
          m.ack();
          const reply = m.headers?.get('Bench-Reply');
          if (reply) nc.publish(reply, enc.encode(String(at)));
        }
        sub.pull({ batch: 1, expires: 5_000 });
      }),
  );
  sub.pull({ batch: 1, expires: 5_000 });
}
await nc.flush();
process.stdout.write('ready\n');
process.on('SIGTERM', () => void nc.close().then(() => process.exit(0)));
