import EXAMPLES from './examples.json';

/**
 * A real example for every operation of the OpenAPI document: the request a client
 * sent and the answer the API gave, recorded from the running API by
 * test/integration/openapiExamples.test.ts (UPDATE_EXAMPLES=1 rewrites examples.json;
 * without it the test fails when an answer's shape no longer matches its example).
 */
export interface OperationExample {
  url: string;
  status: number;
  request?: unknown;
  response: unknown;
}

export const OPERATION_EXAMPLES = EXAMPLES as Record<string, OperationExample>;

interface Described {
  meta?: (m: Record<string, unknown>) => unknown;
}

/** `schema` with `example` in its metadata (zod's `.meta`, which the OpenAPI document carries), or as it was. */
const exampled = (schema: unknown, example: unknown) => (example !== undefined && typeof (schema as Described)?.meta === 'function' ? (schema as Described).meta!({ example }) : schema);

/** A route's schema with its recorded example on the request body and on the response of the recorded status. */
export function withExample<S extends { body?: unknown; response?: unknown }>(route: string, schema: S): S {
  const example = OPERATION_EXAMPLES[route];
  if (!example) return schema;
  const response = (schema.response ?? {}) as Record<string, unknown>;
  return {
    ...schema,
    ...(schema.body !== undefined && { body: exampled(schema.body, example.request) }),
    response: { ...response, [example.status]: exampled(response[example.status], example.response) },
  };
}
