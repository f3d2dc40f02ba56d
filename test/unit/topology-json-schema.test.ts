import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import { parse } from 'yaml';
import { SCHEMA_FILE, topologyJsonSchema } from '../../services/cli/commands/schema.js';

test('ok/committed JSON Schema is generated from the zod schema (run `npm run schema` after changing it)', () => {
  assert.equal(readFileSync(SCHEMA_FILE, 'utf8'), topologyJsonSchema());
});

test('ok/JSON Schema accepts the example topology and rejects a bad one', () => {
  const ajv = new Ajv2020({ strict: false, allErrors: true });
  addFormats.default(ajv); // CommonJS: the plugin is also its own `default`
  const validate = ajv.compile(JSON.parse(readFileSync(SCHEMA_FILE, 'utf8')));
  const example = parse(readFileSync(new URL('../../deploy/topology.example.yaml', import.meta.url), 'utf8'));
  assert.ok(validate(example), JSON.stringify(validate.errors));
  const bad = structuredClone(example) as { nodes: Array<{ role: string }> };
  bad.nodes[0].role = 'proxy';
  assert.equal(validate(bad), false);
  // Formats are checked too (editors using the schema flag a URL that is not one).
  const badUrl = structuredClone(example) as { nodes: Array<{ role: string; acme?: { externalUrl?: string } }> };
  const edge = badUrl.nodes.find((n) => n.role === 'edge')!;
  edge.acme = { ...(edge.acme ?? {}), externalUrl: 'not a url' };
  assert.equal(validate(badUrl), false);
  assert.ok(validate.errors!.some((e) => e.keyword === 'format' && /externalUrl/.test(e.instancePath)), JSON.stringify(validate.errors));
});
