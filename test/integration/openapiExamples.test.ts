import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { OPERATION_EXAMPLES, type OperationExample } from '../../src/api/openapiExamples';
import { startTestStack, type TestStack } from '../support/stack';
import { buildFixture, closeLeftovers, openApiPath, ROUTE_CATALOG, type Fixture } from '../support/routeCatalog';

/**
 * The OpenAPI document's examples are real: each is a request the catalogue's natural
 * caller sends on the fixture and the answer the API gave it. This file records them
 * (UPDATE_EXAMPLES=1 writes src/api/examples.json) and otherwise checks that every
 * /v1 operation has one, that each still has the shape of the API's answer today
 * (every field, recursively, of the same JSON type), and that the document carries it.
 */
let stack: TestStack;
let fx: Fixture;
const UPDATE = process.env.UPDATE_EXAMPLES === '1';

beforeAll(async () => {
  stack = await startTestStack({ writeRate: { max: 1_000_000, windowMs: 1_000 } });
  fx = await buildFixture(stack);
});
afterAll(async () => {
  if (stack) await closeLeftovers(stack);
  await stack?.stop();
});

/** A JSON value's shape: its fields and their types, recursively (an array by its first item). */
function shape(value: unknown): unknown {
  if (Array.isArray(value)) return value.length === 0 ? [] : [shape(value[0])];
  if (value !== null && typeof value === 'object') return Object.fromEntries(Object.entries(value).sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => [k, shape(v)]));
  return value === null ? 'null' : typeof value;
}

/** Each /v1 route's natural request on the fixture and the API's answer (ids carry the fixture's run suffix; keys are the test database's own). */
async function record(): Promise<Record<string, OperationExample>> {
  const out: Record<string, OperationExample> = {};
  for (const entry of ROUTE_CATALOG.filter((e) => e.route.includes(' /v1/'))) {
    const res = await fx.send(entry.route, entry.valid);
    if (res.status >= 400) throw new Error(`${entry.route}: the natural request answered ${res.status} ${JSON.stringify(res.body)}`);
    out[entry.route] = { url: res.sent.url, status: res.status, ...(res.sent.body !== undefined && { request: res.sent.body }), response: res.body };
    if (entry.workflow) await closeLeftovers(stack, fx.keep);
  }
  return out;
}

test('every /v1 operation has a real example of the shape the API answers today, and the OpenAPI document shows it', async () => {
  const fresh = await record();
  if (UPDATE) {
    const sorted = Object.fromEntries(Object.entries(fresh).sort(([a], [b]) => a.localeCompare(b)));
    writeFileSync(join(__dirname, '../../src/api/examples.json'), `${JSON.stringify(sorted, null, 2)}\n`);
    console.log(`wrote ${Object.keys(sorted).length} examples to src/api/examples.json`);
    return;
  }
  expect(Object.keys(OPERATION_EXAMPLES).sort()).toEqual(Object.keys(fresh).sort());
  const stale = Object.keys(fresh).filter((route) => {
    const [was, now] = [OPERATION_EXAMPLES[route]!, fresh[route]!];
    return was.status !== now.status || JSON.stringify(shape(was.request)) !== JSON.stringify(shape(now.request)) || JSON.stringify(shape(was.response)) !== JSON.stringify(shape(now.response));
  });
  if (stale.length) throw new Error(`examples no longer shaped like the API's answers (npm run examples:openapi rewrites them): ${stale.join(', ')}`);

  const spec = (await stack.app.inject({ method: 'GET', url: '/openapi.json' })).json();
  for (const [route, example] of Object.entries(OPERATION_EXAMPLES)) {
    const method = route.split(' ')[0]!;
    const op = spec.paths[openApiPath(route).split(' ')[1]!]?.[method.toLowerCase()];
    expect({ route, response: op?.responses?.[example.status]?.content?.['application/json']?.schema?.example }).toEqual({ route, response: example.response });
    if (example.request !== undefined) expect({ route, request: op.requestBody.content['application/json'].schema.example }).toEqual({ route, request: example.request });
    // and each status the operation documents has a sentence, not "Default Response"
    for (const [status, response] of Object.entries<any>(op.responses)) expect({ route, status, description: response.description }).not.toEqual({ route, status, description: 'Default Response' });
  }
});
