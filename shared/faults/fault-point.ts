// Fault injection for crash tests, after Boulder's and FoundationDB's habit of naming the points where
// a process may die. A point fires only when the operator (a test) names it in RA_MESH_FAULTS, e.g.
// RA_MESH_FAULTS=gateway.after-cas=kill — the process then dies at once with SIGKILL, exactly as
// kill -9 would leave it (no cleanup, no flush). Unset in production: a point costs one lookup.

const ACTIONS = new Set(['kill']);

function parse(spec: string | undefined): Map<string, string> {
  const m = new Map<string, string>();
  for (const part of (spec ?? '').split(',').map((s) => s.trim()).filter(Boolean)) {
    const [name, action = 'kill'] = part.split('=');
    if (name && ACTIONS.has(action)) m.set(name, action);
  }
  return m;
}

const armed = parse(process.env.RA_MESH_FAULTS);

/** Dies here (SIGKILL) when RA_MESH_FAULTS names this point. */
export function faultPoint(name: string): void {
  if (armed.size === 0 || !armed.has(name)) return;
  process.stderr.write(`ra-mesh: fault point ${name} fired: SIGKILL\n`);
  process.kill(process.pid, 'SIGKILL');
}
