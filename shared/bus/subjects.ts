// The one module that names NATS subjects. Nothing else in ra-mesh builds a subject string.
// DESIGN.md: up = ramesh.up.<parentNodeId> (a node consumes its own, children publish to their parent's);
// down = ramesh.down.<edgeNodeId> (results to the originating edge).

export const SUBJECT_ROOT = 'ramesh';

/** Where children of `nodeId` publish envelopes, and where `nodeId` consumes them. */
export function upSubject(nodeId: string): string {
  return `${SUBJECT_ROOT}.up.${nodeId}`;
}

/** Where results for requests that started at `edgeId` are delivered. */
export function downSubject(edgeId: string): string {
  return `${SUBJECT_ROOT}.down.${edgeId}`;
}

/** Header carrying the envelope id on every bus message (also the JetStream dedupe key, Nats-Msg-Id). */
export const ENVELOPE_ID_HEADER = 'Ra-Mesh-Envelope-Id';

/** Prefix of request/reply inboxes (the nats client's default); nodes may subscribe below it. */
export const INBOX_PREFIX = '_INBOX';
