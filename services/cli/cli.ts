import { TopologyError } from '../../shared/config/index.js';
import { RaError } from '../../shared/errors/index.js';

const USAGE = `ra-mesh — a chained ACME Registration Authority mesh over NATS

usage:
  ra-mesh validate <topology.yaml>           check a topology file and print the chain tree
  ra-mesh up <topology.yaml> [--no-nats] [--only id,id]
                                             start nats-server(s) and the nodes of the topology
  ra-mesh eab add|list|revoke <topology.yaml> --edge <id> [--key-id <id>] [--label <text>] [--policy-file <f>]
                                             manage an edge's external account binding keys (and account policies)
  ra-mesh scep otp add|list|revoke <topology.yaml> --edge <id> [--count <n>] [--label <text>] [--ttl <d>]
                                             one-time SCEP challenge passwords of an edge (each enrolls one device)
  ra-mesh nats-config <topology.yaml> [--out <dir>]
                                             write the nats-server configs (node users, subject permissions,
                                             leaf-link logins, TLS) and create missing NATS credentials
  ra-mesh keys init|list|rotate|promote|retire <topology.yaml> [--node <id>]
                                             node signing keys: create, list, rotate with overlap
  ra-mesh audit verify <topology.yaml> [--gateway <id>]
                                             check the gateway's hash-chained audit log
  ra-mesh top <topology.yaml> [--url <gateway url>] [--interval <ms>] [--once] [--json]
                                             every node of a running mesh, live: link state, queue depth,
                                             p50/p99 hop latency (q or Ctrl-C quits)
  ra-mesh compose <topology.yaml> [--out docker-compose.yml] [--check] [--secrets]
                                             docker-compose deployment generated from the topology: a network per
                                             segment (isolated ones internal), volumes, health checks, secrets
  ra-mesh policy explain --topology <topology.yaml> --edge <id> [--eab-key <id>] <name>... | <csr.pem>
                                             what each policy layer (account -> edge -> relays -> gateway)
                                             decides for these names or this CSR, rule by rule
  ra-mesh schema [--write]                   print (or write shared/config/topology.schema.json) the JSON Schema
`;

export async function runCli(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    switch (cmd) {
      case 'validate':
        return await (await import('./commands/validate.js')).validateCommand(rest);
      case 'up':
        return await (await import('./commands/up.js')).upCommand(rest);
      case 'eab':
        return await (await import('./commands/eab.js')).eabCommand(rest);
      case 'scep':
        return await (await import('./commands/scep.js')).scepCommand(rest);
      case 'nats-config':
        return await (await import('./commands/nats-config.js')).natsConfigCommand(rest);
      case 'keys':
        return await (await import('./commands/keys.js')).keysCommand(rest);
      case 'audit':
        return await (await import('./commands/audit.js')).auditCommand(rest);
      case 'top':
        return await (await import('./commands/top.js')).topCommand(rest);
      case 'compose':
        return await (await import('./commands/compose.js')).composeCommand(rest);
      case 'policy':
        return await (await import('./commands/policy.js')).policyCommand(rest);
      case 'schema':
        return await (await import('./commands/schema.js')).schemaCommand(rest);
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        process.stdout.write(USAGE);
        return cmd === undefined ? 2 : 0;
      default:
        process.stderr.write(`ra-mesh: unknown command "${cmd}"\n\n${USAGE}`);
        return 2;
    }
  } catch (e) {
    if (e instanceof TopologyError) {
      process.stderr.write(`ra-mesh: ${e.message}\n`);
      return 1;
    }
    if (e instanceof RaError) {
      process.stderr.write(`ra-mesh: ${e.detail}\n`);
      return 1;
    }
    process.stderr.write(`ra-mesh: ${(e as Error).stack ?? String(e)}\n`);
    return 1;
  }
}
