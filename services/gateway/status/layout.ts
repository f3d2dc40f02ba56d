// Where the status page draws every node: one column per data center (the gateway's first, then in
// the order the chain reaches them), one row per distance from the gateway. Within a row of a data
// center, nodes of one segment sit side by side under one segment box, so boxes never overlap, however
// many nodes there are (the picture grows and the page scrolls).

import type { Topology } from '../../../shared/config/index.js';

export const NODE_W = 150;
export const NODE_H = 54;
const SLOT_W = 180;
const ROW_H = 140;
const PAD = 20;
const COL_GAP = 24;
const TOP = 44;

export interface Box {
  x: number;
  y: number;
  w: number;
  h: number;
}

export interface Layout {
  width: number;
  height: number;
  /** Centre of each node. */
  nodes: Record<string, { x: number; y: number }>;
  dcs: Array<Box & { dc: string }>;
  segments: Array<Box & { dc: string; segment: string }>;
}

export function layoutTopology(topology: Topology): Layout {
  const gw = topology.gateway();
  // Depth-first from the gateway: children close to their parents, data centers in the order reached.
  const order: string[] = [];
  const depth = new Map<string, number>();
  const walk = (id: string, d: number) => {
    order.push(id);
    depth.set(id, d);
    for (const c of topology.children(id)) walk(c.id, d + 1);
  };
  walk(gw.id, 0);
  const rank = new Map(order.map((id, i) => [id, i]));
  const dcs: string[] = [];
  for (const id of order) {
    const dc = topology.node(id).dc;
    if (!dcs.includes(dc)) dcs.push(dc);
  }
  const maxDepth = Math.max(0, ...depth.values());
  const rowsHeight = (maxDepth + 1) * ROW_H;
  const out: Layout = { width: 0, height: TOP + rowsHeight + PAD, nodes: {}, dcs: [], segments: [] };
  let x = PAD;
  for (const dc of dcs) {
    const rows = new Map<number, string[]>();
    for (const id of order) {
      if (topology.node(id).dc !== dc) continue;
      const d = depth.get(id)!;
      rows.set(d, [...(rows.get(d) ?? []), id]);
    }
    // Within a row: nodes without a segment first, then each segment together (in the order first reached).
    const groupRank = (id: string, row: string[]) => {
      const seg = topology.node(id).segment;
      if (!seg) return -1;
      return Math.min(...row.filter((o) => topology.node(o).segment === seg).map((o) => rank.get(o)!));
    };
    for (const [d, row] of rows) rows.set(d, [...row].sort((a, b) => groupRank(a, row) - groupRank(b, row) || rank.get(a)! - rank.get(b)!));
    const widest = Math.max(1, ...[...rows.values()].map((r) => r.length));
    const colW = widest * SLOT_W + 2 * PAD;
    out.dcs.push({ dc, x, y: TOP - 30, w: colW, h: rowsHeight + 30 });
    for (const [d, row] of rows) {
      const left = x + PAD + ((widest - row.length) * SLOT_W) / 2;
      const cy = TOP + d * ROW_H + ROW_H / 2;
      row.forEach((id, i) => (out.nodes[id] = { x: left + i * SLOT_W + SLOT_W / 2, y: cy }));
      // One box per run of nodes of one segment in this row.
      for (let i = 0; i < row.length; ) {
        const seg = topology.node(row[i]!).segment;
        let j = i;
        while (j + 1 < row.length && topology.node(row[j + 1]!).segment === seg) j++;
        if (seg) {
          const x0 = out.nodes[row[i]!]!.x - NODE_W / 2 - 10;
          const x1 = out.nodes[row[j]!]!.x + NODE_W / 2 + 10;
          out.segments.push({ dc, segment: seg, x: x0, y: cy - NODE_H / 2 - 22, w: x1 - x0, h: NODE_H + 32 });
        }
        i = j + 1;
      }
    }
    x += colW + COL_GAP;
  }
  out.width = x - COL_GAP + PAD;
  return out;
}
