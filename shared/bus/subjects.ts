// The one module that names NATS subjects. Nothing else in ra-mesh builds a subject string.
// DESIGN.md: up = ramesh.up.<parentNodeId>.<childNodeId> (children publish to their parent's, each
// into its own outbound stream, read by the parent: queue.ts); down = ramesh.down.<edgeNodeId>
// (results to the originating edge).

export const SUBJECT_ROOT = 'ramesh';

/**
 * Where `child` publishes envelopes for its parent: captured by the child's outbound stream, which the
 * parent reads (queue.ts). The child token keeps each child's stream to its own.
 */
export function upSubject(parent: string, child: string): string {
  return `${SUBJECT_ROOT}.up.${parent}.${child}`;
}

/** The outbound stream of a node (in its own server's JetStream domain). */
export function outStream(nodeId: string): string {
  return `RAMESH_OUT_${nodeId}`;
}

/** The durable consumer a parent reads its children's outbound streams with. */
export function consumerName(nodeId: string): string {
  return nodeId;
}

/**
 * JetStream API subjects a node needs: those of its own outbound stream (on its own server), and for
 * each child the consumer API of that child's outbound stream (through $JS.<domain>.API when the
 * child is on another server) and its acks.
 */
export function jetStreamApiSubjects(nodeId: string, opts: { out: boolean; children: Array<{ id: string; apiPrefix: string }> }): string[] {
  const subjects: string[] = ['$JS.API.INFO'];
  // MSG.GET / MSG.DELETE: a retransmit looks for the copy it stored before (EnvelopeQueue.resend).
  if (opts.out) subjects.push(...['INFO', 'CREATE', 'UPDATE', 'MSG.GET', 'MSG.DELETE'].map((op) => `$JS.API.STREAM.${op}.${outStream(nodeId)}`));
  const c = consumerName(nodeId);
  for (const child of opts.children) {
    const s = outStream(child.id);
    const api = child.apiPrefix;
    if (!subjects.includes(`${api}.INFO`)) subjects.push(`${api}.INFO`);
    subjects.push(
      `${api}.CONSUMER.INFO.${s}.${c}`,
      `${api}.CONSUMER.CREATE.${s}`,
      `${api}.CONSUMER.CREATE.${s}.${c}`,
      `${api}.CONSUMER.DURABLE.CREATE.${s}.${c}`,
      `${api}.CONSUMER.MSG.NEXT.${s}.${c}`,
      `$JS.ACK.${s}.${c}.>`,
    );
  }
  return subjects;
}

/** Where results for requests that started at `edgeId` are delivered. */
export function downSubject(edgeId: string): string {
  return `${SUBJECT_ROOT}.down.${edgeId}`;
}

/** Header carrying the envelope id on every bus message (Nats-Msg-Id names the copy: queue.ts). */
export const ENVELOPE_ID_HEADER = 'Ra-Mesh-Envelope-Id';

/**
 * Header of a relay's bundle in its outbound stream: every request it forwards as `id=msgId`, comma
 * separated, msgId being the Nats-Msg-Id of the copy that carried the request to the relay (queue.ts).
 */
export const ENVELOPE_IDS_HEADER = 'Ra-Mesh-Envelope-Ids';

/**
 * Header of a copy that replaced an older copy of the same envelope in a stream: when (ms epoch) the
 * envelope first entered that stream, so the parent's queue-wait metric counts the whole wait.
 */
export const QUEUED_SINCE_HEADER = 'Ra-Mesh-Queued-Since';

/** Prefix of request/reply inboxes (the nats client's default); nodes may subscribe below it. */
export const INBOX_PREFIX = '_INBOX';
