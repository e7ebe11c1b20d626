/**
 * Schema refusals in plain sentences (issue 20): each names the field and the rule,
 * and what was sent, e.g. `amount must be a whole number of minor units, got 12.5`,
 * instead of zod's `expected int, received number`. The API's schemas are zod's;
 * fastify-type-provider-zod hands each issue over as {keyword: issue code,
 * instancePath, params: the issue's other fields}; the value sent is read back from
 * the request part that was refused.
 */

export interface SchemaIssue {
  keyword: string;
  instancePath: string;
  message: string;
  params: Record<string, unknown>;
}

export type RequestPart = 'body' | 'querystring' | 'params' | 'headers';

export interface PlainIssue {
  /** The field, as the caller writes it: `amount`, `members.2`, `idempotency-key`; '' for the whole part. */
  param: string;
  /** Where it was: `/amount`, as JSON Pointer (kept for clients that read it). */
  path: string;
  message: string;
}

/** Fields that hold money: their integers are minor units, and the sentence says so. */
const MONEY = /amount|total|rate|collateral|funding|balance|budget|deposit|price|cost/i;

const WHERE: Record<RequestPart, string> = { body: 'field', querystring: 'query parameter', params: 'path parameter', headers: 'header' };

/** A value as the caller would recognise it in the sentence: a scalar as JSON, cut short; a structure by its kind (it may be nested too deep to print). */
function shown(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (Array.isArray(value)) return 'an array';
  if (value !== null && typeof value === 'object') return 'an object';
  const json = JSON.stringify(value) ?? String(value);
  return json.length > 60 ? `${json.slice(0, 57)}...` : json;
}

/** What a JSON type is called in a sentence. */
const KINDS: Record<string, string> = {
  int: 'a whole number',
  number: 'a number',
  string: 'a string',
  boolean: 'true or false',
  object: 'a JSON object',
  array: 'a JSON array',
};

function sizeRule(issue: SchemaIssue, bound: 'at least' | 'at most'): string {
  const p = issue.params;
  const limit = Number(bound === 'at least' ? p.minimum : p.maximum);
  switch (p.origin) {
    case 'string':
      return `${bound} ${limit} character${limit === 1 ? '' : 's'} long`;
    case 'array':
    case 'set':
      return `${bound} ${limit} item${limit === 1 ? '' : 's'}`;
    default:
      if (p.inclusive === false) return bound === 'at least' ? `greater than ${limit}` : `less than ${limit}`;
      return `${bound} ${limit}`;
  }
}

/** The value at a JSON Pointer inside `root` (undefined where nothing is). */
function valueAt(root: unknown, pointer: string): unknown {
  let at: any = root;
  for (const step of pointer.split('/').slice(1)) {
    if (at === null || typeof at !== 'object') return undefined;
    at = at[step];
  }
  return at;
}

/** One issue as a sentence that names the field, the rule and what was sent. */
export function plainIssue(issue: SchemaIssue, part: RequestPart, input: unknown): PlainIssue {
  const path = issue.instancePath === '/' ? '' : issue.instancePath;
  const param = path.split('/').slice(1).join('.');
  const value = valueAt(input, path);
  // a body field is named bare (`amount must be…`); the other parts say where (`query parameter limit`)
  const what = param ? (part === 'body' ? param : `${WHERE[part]} ${param}`) : part === 'body' ? 'the request body' : `the ${WHERE[part]}s`;
  const got = `, got ${shown(value)}`;
  const p = issue.params;
  switch (issue.keyword) {
    case 'invalid_type': {
      // a body of JSON null is no body (app.ts takes it as none)
      if (value === undefined || (value === null && !param && part === 'body')) {
        if (!param && part === 'body') return { param, path, message: 'the request needs a JSON object body' };
        if (part === 'headers') return { param, path, message: `the ${param} header is required` };
        return { param, path, message: `${what} is required` };
      }
      const kind = KINDS[String(p.expected)] ?? String(p.expected);
      const units = (p.expected === 'int' || p.expected === 'number') && MONEY.test(param) ? ' of minor units' : '';
      return { param, path, message: `${what} must be ${p.expected === 'number' && units ? 'a whole number' : kind}${units}${got}` };
    }
    case 'too_small':
      return { param, path, message: `${what} must be ${sizeRule(issue, 'at least')}${got}` };
    case 'too_big':
      return { param, path, message: `${what} must be ${sizeRule(issue, 'at most')}${got}` };
    case 'invalid_value':
      return { param, path, message: `${what} must be one of ${(p.values as unknown[]).map((v) => String(v)).join(', ')}${got}` };
    case 'unrecognized_keys': {
      const keys = p.keys as string[];
      const named = keys.map((k) => (param ? `${param}.${k}` : k));
      return { param: named[0] ?? param, path, message: `unknown ${WHERE[part]}${keys.length === 1 ? '' : 's'} ${named.join(', ')}: ${param ? `${what}` : `the ${part === 'body' ? 'body' : WHERE[part] + 's'}`} takes no such field` };
    }
    case 'invalid_format':
      // our patterns say what they accept as a noun phrase ('a positive decimal integer'); zod's own start with "Invalid"
      return { param, path, message: /^Invalid/.test(issue.message) ? `${what} is not valid${got}` : `${what} must be ${issue.message}${got}` };
    case 'custom':
      // a rule across fields words its own sentence ('give either estimatedCost or units, not both')
      return { param, path, message: `${what}: ${issue.message}` };
    case 'not_multiple_of':
      return { param, path, message: `${what} must be a multiple of ${String(p.divisor)}${got}` };
    case 'invalid_union':
      return { param, path, message: `${what} does not match any accepted form${got}` };
    default:
      return { param, path, message: `${what}: ${issue.message}${got}` };
  }
}
