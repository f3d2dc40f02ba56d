// The gateway's live status page (GET /status): one self-contained HTML document, no CDN, no external
// file (it works in a segment without internet). Its script polls /status.json and redraws: the
// topology as an SVG graph (data centers as columns, segments as boxes, nodes, links coloured by
// health and labelled with the p50/p99 queue wait and the queue depth), then tables of every node,
// every link and the recent refusals. The layout comes computed in the JSON (layout.ts).

const CSS = `
:root { --ok:#2e9d4f; --warn:#d99a00; --down:#d33a2c; --unknown:#8c8c8c; --fg:#1d232a; --muted:#5d6b78; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: #f5f7f9; }
header { display: flex; gap: 24px; align-items: baseline; padding: 12px 20px; background: #1d232a; color: #fff; flex-wrap: wrap; }
header h1 { font-size: 18px; margin: 0; }
header .meta { color: #c9d1d9; }
#conn.bad { color: #ff8f84; font-weight: bold; }
main { padding: 16px 20px; }
section { background: #fff; border: 1px solid #dde3e8; border-radius: 6px; margin-bottom: 16px; padding: 12px; }
h2 { font-size: 15px; margin: 0 0 8px; }
#graph { overflow: auto; max-height: 80vh; }
svg text { font-family: inherit; }
.dc rect { fill: #eef2f6; stroke: #c6d0da; }
.dc text { fill: var(--muted); font-size: 13px; font-weight: 600; }
.segment rect { fill: none; stroke: #9fb0c0; stroke-dasharray: 5 4; }
.segment text { fill: var(--muted); font-size: 11px; }
.node rect { fill: #fff; stroke-width: 2.5; }
.node .id { font-weight: 600; font-size: 13px; }
.node .sub { font-size: 10.5px; fill: var(--muted); }
.link line { stroke-width: 3; }
.link text { font-size: 11px; paint-order: stroke; stroke: #fff; stroke-width: 4px; }
.h-ok { --c: var(--ok); } .h-warn { --c: var(--warn); } .h-down { --c: var(--down); } .h-unknown { --c: var(--unknown); }
.node rect { stroke: var(--c); } .link line { stroke: var(--c); } .link .label { fill: var(--fg); }
.badge { display: inline-block; min-width: 62px; text-align: center; padding: 1px 6px; border-radius: 10px; color: #fff; background: var(--c); font-size: 12px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #edf0f3; vertical-align: top; }
th { color: var(--muted); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.totals span { margin-right: 18px; }
.empty { color: var(--muted); }
`;

// Plain ES2017 for any browser; every value from the JSON goes through esc() before it is markup.
const SCRIPT = `
(function () {
  'use strict';
  var REFRESH = 1000;
  function esc(v) {
    return String(v === null || v === undefined ? '' : v).replace(/[&<>"']/g, function (c) {
      return { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c];
    });
  }
  function num(v) { return v === null || v === undefined ? '-' : esc(v); }
  function sum(o) { var t = 0; for (var k in o) t += o[k]; return t; }
  function time(ms) { return new Date(ms).toLocaleTimeString(); }

  function graph(s) {
    var L = s.layout, W = 150, H = 54, out = [];
    out.push('<svg xmlns="http://www.w3.org/2000/svg" id="mesh-graph" width="' + L.width + '" height="' + L.height + '" viewBox="0 0 ' + L.width + ' ' + L.height + '">');
    L.dcs.forEach(function (d) {
      out.push('<g class="dc" data-dc="' + esc(d.dc) + '"><rect x="' + d.x + '" y="' + d.y + '" width="' + d.w + '" height="' + d.h + '" rx="8"/>' +
        '<text x="' + (d.x + 10) + '" y="' + (d.y + 20) + '">' + esc(d.dc) + '</text></g>');
    });
    L.segments.forEach(function (g) {
      out.push('<g class="segment" data-segment="' + esc(g.segment) + '"><rect x="' + g.x + '" y="' + g.y + '" width="' + g.w + '" height="' + g.h + '" rx="6"/>' +
        '<text x="' + (g.x + 6) + '" y="' + (g.y + 13) + '">segment ' + esc(g.segment) + '</text></g>');
    });
    s.links.forEach(function (l) {
      var a = L.nodes[l.child], b = L.nodes[l.parent];
      if (!a || !b) return;
      var x1 = a.x, y1 = a.y - H / 2, x2 = b.x, y2 = b.y + H / 2;
      var mx = x1 + (x2 - x1) * 0.45, my = y1 + (y2 - y1) * 0.45;
      out.push('<g class="link h-' + esc(l.health) + '" data-link="' + esc(l.child + '->' + l.parent) + '" data-health="' + esc(l.health) + '">' +
        '<title>' + esc(l.child + ' -> ' + l.parent + ': ' + l.health + (l.reason ? ' (' + l.reason + ')' : '')) + '</title>' +
        '<line x1="' + x1 + '" y1="' + y1 + '" x2="' + x2 + '" y2="' + y2 + '"/>' +
        '<text class="label" x="' + mx + '" y="' + my + '" text-anchor="middle">' + esc(l.label) + '</text>' +
        '<text class="queue" x="' + mx + '" y="' + (my + 14) + '" text-anchor="middle">queued ' + num(l.queued) + '</text></g>');
    });
    s.nodes.forEach(function (n) {
      var p = L.nodes[n.id];
      if (!p) return;
      out.push('<g class="node h-' + esc(n.health) + '" data-node="' + esc(n.id) + '" data-health="' + esc(n.health) + '">' +
        '<title>' + esc(n.id + ' (' + n.role + '): ' + n.health + (n.reason ? ' - ' + n.reason : '')) + '</title>' +
        '<rect x="' + (p.x - W / 2) + '" y="' + (p.y - H / 2) + '" width="' + W + '" height="' + H + '" rx="6"/>' +
        '<text class="id" x="' + p.x + '" y="' + (p.y - 8) + '" text-anchor="middle">' + esc(n.id) + '</text>' +
        '<text class="sub role" x="' + p.x + '" y="' + (p.y + 7) + '" text-anchor="middle">' + esc(n.role) + (n.inFlight !== null ? ' · in flight ' + esc(n.inFlight) : '') + '</text>' +
        '<text class="sub stat" x="' + p.x + '" y="' + (p.y + 20) + '" text-anchor="middle">' + esc(n.label) + '</text></g>');
    });
    out.push('</svg>');
    return out.join('');
  }

  function nodesTable(s) {
    var rows = s.nodes.map(function (n) {
      var c = n.counts;
      return '<tr data-node-row="' + esc(n.id) + '"><td>' + esc(n.id) + '</td><td>' + esc(n.role) + '</td><td>' + esc(n.dc) + (n.segment ? ' / ' + esc(n.segment) : '') +
        '</td><td><span class="badge h-' + esc(n.health) + '">' + esc(n.health) + '</span> ' + esc(n.reason || '') + '</td><td>' + esc(n.nats) +
        '</td><td class="num">' + num(n.inFlight) + '</td><td class="num">' + num(n.queued) + '</td><td class="num proc">' + esc(n.label) +
        '</td><td class="num">' + (c ? esc(sum(c.processed)) : '-') + '</td><td class="num">' + (c ? esc(sum(c.refused)) : '-') + '</td><td class="num">' + (c ? esc(sum(c.rejected)) : '-') + '</td></tr>';
    });
    return '<table><thead><tr><th>node</th><th>role</th><th>dc / segment</th><th>health</th><th>NATS</th><th>in flight</th><th>queued</th>' +
      '<th>latency (edge: finalize to result; others: processing)</th><th>handled</th><th>refused</th><th>rejected</th></tr></thead><tbody>' + rows.join('') + '</tbody></table>';
  }

  function linksTable(s) {
    if (s.links.length === 0) return '<p class="empty">no links</p>';
    var rows = s.links.map(function (l) {
      return '<tr data-link-row="' + esc(l.child + '->' + l.parent) + '"><td>' + esc(l.child) + ' &rarr; ' + esc(l.parent) + '</td><td><span class="badge h-' + esc(l.health) + '">' + esc(l.health) +
        '</span> ' + esc(l.reason || '') + '</td><td>' + esc(l.state) + '</td><td class="num">' + num(l.queued) + '</td><td class="num wait">' + esc(l.label) + '</td><td class="num">' + (l.wait ? esc(l.wait.count) : '-') + '</td></tr>';
    });
    return '<table><thead><tr><th>link</th><th>health</th><th>parent reads</th><th>queued</th><th>queue wait p50 / p99</th><th>samples</th></tr></thead><tbody>' + rows.join('') + '</tbody></table>';
  }

  function refusalsTable(s) {
    if (s.refusals.length === 0) return '<p class="empty">no refusals</p>';
    var rows = s.refusals.map(function (r) {
      return '<tr class="refusal"><td>' + esc(time(r.at)) + '</td><td>' + esc(r.node) + '</td><td>' + esc(r.kind) + '</td><td>' + esc(r.layer) + '</td><td>' + esc(r.reason) +
        '</td><td><code>' + esc(r.envelopeId || '-') + '</code></td><td>' + esc(r.detail || '') + '</td></tr>';
    });
    return '<table><thead><tr><th>time</th><th>node</th><th>kind</th><th>layer</th><th>reason</th><th>envelope id</th><th>detail</th></tr></thead><tbody>' + rows.join('') + '</tbody></table>';
  }

  function render(s) {
    document.getElementById('mesh').textContent = s.mesh;
    document.getElementById('updated').textContent = 'updated ' + time(s.at);
    document.getElementById('totals').innerHTML = '<span>issued <b id="total-issued">' + esc(s.totals.issued) + '</b></span><span>refused <b id="total-refused">' + esc(s.totals.refused) +
      '</b></span><span>rejected <b id="total-rejected">' + esc(s.totals.rejected) + '</b></span><span>nodes <b>' + esc(s.nodes.length) + '</b></span>';
    document.getElementById('graph').innerHTML = graph(s);
    document.getElementById('nodes').innerHTML = nodesTable(s);
    document.getElementById('links').innerHTML = linksTable(s);
    document.getElementById('refusals').innerHTML = refusalsTable(s);
    document.body.setAttribute('data-updated', String(s.at));
  }

  function tick() {
    fetch('status.json', { cache: 'no-store' }).then(function (r) {
      if (!r.ok) throw new Error('HTTP ' + r.status);
      return r.json();
    }).then(function (s) {
      REFRESH = s.refreshMs || REFRESH;
      render(s);
      var c = document.getElementById('conn');
      c.textContent = 'live';
      c.className = '';
    }).catch(function (e) {
      var c = document.getElementById('conn');
      c.textContent = 'gateway not answering (' + e.message + '); retrying';
      c.className = 'bad';
    }).then(function () { setTimeout(tick, REFRESH); });
  }
  tick();
})();
`;

/** The status page (text/html). */
export function statusPageHtml(opts: { title?: string } = {}): string {
  const title = opts.title ?? 'ra-mesh status';
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title.replace(/[&<>"]/g, '')}</title>
<style>${CSS}</style>
</head>
<body>
<header><h1>ra-mesh <span id="mesh"></span></h1><span class="meta" id="updated">loading…</span><span class="meta" id="conn"></span><span class="meta totals" id="totals"></span></header>
<main>
<section><h2>Topology</h2><div id="graph"></div></section>
<section><h2>Nodes</h2><div id="nodes"></div></section>
<section><h2>Links (child &rarr; parent)</h2><div id="links"></div></section>
<section><h2>Recent refusals</h2><div id="refusals"></div></section>
</main>
<script>${SCRIPT}</script>
</body>
</html>
`;
}
