// Runs the bench's ACME load client once and prints its result as one JSON line (used by
// test/bench/acme-edge.ts, also inside the network namespace of the Caddy run).
// usage: node --import tsx test/bench/acme-load-cli.ts '<json LoadOptions with caFile instead of ca>'
import { readFile } from 'node:fs/promises';
import { runLoad, type LoadOptions } from './lib/acme-load.js';

const arg = JSON.parse(process.argv[2] ?? '{}') as Omit<LoadOptions, 'ca'> & { caFile: string };
const { caFile, ...rest } = arg;
const result = await runLoad({ ...rest, ca: await readFile(caFile, 'utf8') });
process.stdout.write(JSON.stringify(result) + '\n');
