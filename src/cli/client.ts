import { InvalidArgumentError, type Command } from 'commander';
import type { Config } from '../config';
import { normalizeApi, readProfile } from './profile';

/** One HTTP call to the API: method, path, body, bearer key, idempotency key. */
export type Caller = (
  method: 'GET' | 'POST',
  path: string,
  body?: unknown,
  key?: string,
  idempotencyKey?: string,
) => Promise<{ status: number; body: any }>;

export function httpCaller(baseUrl: string): Caller {
  return async (method, path, body, key, idempotencyKey) => {
    const res = await fetch(`${baseUrl}${path}`, {
      method,
      headers: {
        ...(key ? { authorization: `Bearer ${key}` } : {}),
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        ...(idempotencyKey ? { 'idempotency-key': idempotencyKey } : {}),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    }).catch((error: unknown) => {
      // fetch says only "fetch failed": name the URL it tried, why, and what to do
      const cause = (error as { cause?: { code?: string; message?: string } }).cause;
      throw new Error(
        `cannot reach the Sluice API at ${baseUrl} (${cause?.code ?? cause?.message ?? (error as Error).message}): ` +
          'start it with `npm start`, or point to it with --api URL, SLUICE_API_URL (or SLUICE_API_HOST and SLUICE_API_PORT), ' +
          'or `sluice login --api URL --key KEY`',
      );
    });
    return { status: res.status, body: await res.json().catch(() => undefined) };
  };
}

/**
 * What every API command of the CLI shares: the API and the key (each from its flag,
 * then the environment, then the login `sluice login` saved; see apiBase and apiKey),
 * and the output: a human summary by default, the API's JSON answer with --json.
 * An error answer prints the API's error and sets exit code 1.
 */
export interface Common {
  api?: string;
  key?: string;
  json?: boolean;
}

export type Call = (opts: Common, method: 'GET' | 'POST', path: string, body?: unknown, idempotencyKey?: string) => Promise<{ status: number; body: any }>;

export const withCommon = (cmd: Command) =>
  cmd.option('--api <url>', 'API base URL (default SLUICE_API_URL, then the saved login, then the local API)').option('--key <key>', 'API key (default SLUICE_API_KEY, then the saved login)');
export const withOutput = (cmd: Command) => withCommon(cmd).option('--json', "print the API's JSON answer (for scripts)");

export const int = (v: string) => {
  const n = Number(v);
  if (!Number.isSafeInteger(n)) throw new Error(`not an integer: ${v}`);
  return n;
};

/**
 * An amount of money: a positive whole number of minor units (the API's only unit; 500
 * is 5.00 in a two-decimal currency). Checked here so a typo such as `12.50` or `1e3`
 * is refused with this message before anything is sent.
 */
export const units = (v: string) => {
  const n = /^[1-9][0-9]*$/.test(v) ? Number(v) : NaN;
  if (!Number.isSafeInteger(n)) throw new InvalidArgumentError(`amounts are positive whole numbers of minor units (500 for 5.00), not "${v}"`);
  return n;
};

/** The API the dev launcher runs, from SLUICE_API_HOST/PORT (their defaults: 127.0.0.1:3000). */
const localApi = (c: Config) => `http://${c.SLUICE_API_HOST === '0.0.0.0' ? '127.0.0.1' : c.SLUICE_API_HOST}:${c.SLUICE_API_PORT}`;

/** The API: --api, then SLUICE_API_URL (or SLUICE_API_HOST/PORT when set), then the saved login's, then the local one. */
export function apiBase(opts: Common, c: Config): string {
  const env = process.env.SLUICE_API_URL || (process.env.SLUICE_API_HOST || process.env.SLUICE_API_PORT ? localApi(c) : undefined);
  return normalizeApi(opts.api ?? env ?? readProfile()?.api ?? localApi(c));
}

/**
 * The key: --key, then SLUICE_API_KEY, then the saved login's, which goes only to the
 * API it was saved for: a key typed for one server is never sent to another.
 */
export function apiKey(opts: Common, api: string): string {
  const key = opts.key || process.env.SLUICE_API_KEY;
  if (key) return key;
  const profile = readProfile();
  if (profile?.api === api) return profile.key;
  const saved = profile ? ` (the saved login is for ${profile.api})` : '';
  throw new Error(`no API key for ${api}${saved}: pass --key, set SLUICE_API_KEY, or log in with \`sluice login --api ${api} --key KEY\``);
}

/** The API call, without printing. */
export function caller(config: () => Config): Call {
  return async (opts, method, path, body, idempotencyKey) => {
    const api = apiBase(opts, config());
    return httpCaller(api)(method, path, body, apiKey(opts, api), idempotencyKey);
  };
}

/** Calls the API and prints the answer: `human(body)` lines, or the JSON with --json; an error answer exits 1. */
export async function show(call: Call, opts: Common, human: (body: any) => string, method: 'GET' | 'POST', path: string, body?: unknown, idempotencyKey?: string): Promise<any> {
  return print(await call(opts, method, path, body, idempotencyKey), opts, human);
}

/**
 * An error answer for people: `error <status> <code>: <message>` (with the field it is
 * about, when the message does not name it already), then on the next line the request
 * id (as in the API's X-Request-Id header and its logs: what to quote when asking for
 * help) and the link to the code's entry in the error reference.
 */
export function errorLine(res: { status: number; body: any }): string {
  const e = res.body?.error;
  if (!e) return `error ${res.status}: ${JSON.stringify(res.body) ?? 'no answer body'}`;
  const param = e.param && !String(e.message).includes(e.param) ? ` (${e.param})` : '';
  const more = [e.request_id && `request ${e.request_id}`, e.doc_url && `see ${e.doc_url}`].filter(Boolean).join(', ');
  return `error ${res.status} ${e.code ?? ''}: ${e.message ?? ''}${param}${more ? `\n  ${more}` : ''}`;
}

/** Prints an answer as `show` does; `failure` words an error answer (default: `errorLine`). */
export function print(res: { status: number; body: any }, opts: Common, human: (body: any) => string, failure: (res: { status: number; body: any }) => string = errorLine): any {
  if (opts.json) console.log(JSON.stringify(res.body, null, 2));
  else if (res.status >= 400) console.error(failure(res));
  else console.log(human(res.body));
  if (res.status >= 400) process.exitCode = 1;
  return res.status < 400 ? res.body : undefined;
}

/** Aligned columns, a header first: the human form of a list. */
export function table(header: string[], rows: (string | number)[][]): string {
  const cells = [header, ...rows.map((r) => r.map(String))];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  return cells.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n');
}

/** `?a=1&b=2` of the values given, or '' when none is: a list's query string. */
export const query = (params: Record<string, string | number | undefined>) => {
  const q = new URLSearchParams(Object.entries(params).flatMap(([k, v]): [string, string][] => (v === undefined ? [] : [[k, String(v)]])));
  return q.size ? `?${q}` : '';
};

/** A page of a list for people: its table (none when empty), how many rows (`count`: "2 streams"), and how to ask for the next page. */
export const page = (header: string[], rows: (string | number)[][], count: string, next?: string) =>
  `${rows.length ? `${table(header, rows)}\n` : ''}${count}${next ? `; more with --after ${next}` : ''}`;

/** `key: value` lines, for one object. */
export const fields = (pairs: [string, unknown][]) =>
  pairs.filter(([, v]) => v !== undefined && v !== null).map(([k, v]) => `${k}: ${Array.isArray(v) ? v.join(', ') || '-' : String(v)}`).join('\n');
