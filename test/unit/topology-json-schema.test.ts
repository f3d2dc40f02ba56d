import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { parse } from 'yaml';
import { SCHEMA_FILE, topologyJsonSchema } from '../../services/cli/commands/schema.js';

test('ok/committed JSON Schema is generated from the zod schema (run `npm run schema` after changing it)', () => {
  assert.equal(readFileSync(SCHEMA_FILE, 'utf8'), topologyJsonSchema());
});

test('ok/JSON Schema accepts the example topology and rejects a bad one', () => {
  const ajv = new Ajv2020({ strict: false, allErrors: true });
  const validate = ajv.compile(JSON.parse(readFileSync(SCHEMA_FILE, 'utf8')));
  const example = parse(readFileSync(new URL('../../deploy/topology.example.yaml', import.meta.url), 'utf8'));
  assert.ok(validate(example), JSON.stringify(validate.errors));
  const bad = structuredClone(example) as { nodes: Array<{ role: string }> };
  bad.nodes[0].role = 'proxy';
  assert.equal(validate(bad), false);
});
