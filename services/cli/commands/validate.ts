import { parseArgs } from 'node:util';
import { loadTopology } from '../../../shared/config/index.js';

export async function validateCommand(args: string[]): Promise<number> {
  const { positionals } = parseArgs({ args, allowPositionals: true, options: {} });
  if (positionals.length !== 1) {
    process.stderr.write('usage: ra-mesh validate <topology.yaml>\n');
    return 2;
  }
  const t = loadTopology(positionals[0]!);
  process.stdout.write(`${t.source}: ok\n${t.formatTree()}\n`);
  return 0;
}
