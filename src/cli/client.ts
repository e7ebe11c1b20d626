import type { Command } from 'commander';
import type { Config } from '../config';
import { httpCaller } from '../simulate';

/**
 * What every API command of the CLI shares: the API (--api, or SLUICE_API_HOST/PORT),
 * the key (--key, or SLUICE_API_KEY; the admin's for admin routes) and the output:
 * a human summary by default, the API's JSON answer with --json. An error answer
 * prints the API's error and sets exit code 1.
 */
export interface Common {
  api?: string;
  key?: string;
  json?: boolean;
}

export type Call = (opts: Common, method: 'GET' | 'POST', path: string, body?: unknown, idempotencyKey?: string) => Promise<{ status: number; body: any }>;

export const withCommon = (cmd: Command) => cmd.option('--api <url>', 'API base URL').option('--key <key>', 'API key (default SLUICE_API_KEY)');
export const withOutput = (cmd: Command) => withCommon(cmd).option('--json', "print the API's JSON answer (for scripts)");

export const int = (v: string) => {
  const n = Number(v);
  if (!Number.isSafeInteger(n)) throw new Error(`not an integer: ${v}`);
  return n;
};

export const apiBase = (opts: Common, c: Config) => opts.api ?? `http://${c.SLUICE_API_HOST === '0.0.0.0' ? '127.0.0.1' : c.SLUICE_API_HOST}:${c.SLUICE_API_PORT}`;

/** The API call, without printing. */
export function caller(config: () => Config): Call {
  return async (opts, method, path, body, idempotencyKey) => {
    const key = opts.key ?? process.env.SLUICE_API_KEY;
    if (!key) throw new Error('no API key: pass --key or set SLUICE_API_KEY');
    return httpCaller(apiBase(opts, config()))(method, path, body, key, idempotencyKey);
  };
}

/** Calls the API and prints the answer: `human(body)` lines, or the JSON with --json; an error answer exits 1. */
export async function show(call: Call, opts: Common, human: (body: any) => string, method: 'GET' | 'POST', path: string, body?: unknown, idempotencyKey?: string): Promise<any> {
  return print(await call(opts, method, path, body, idempotencyKey), opts, human);
}

/** An error answer in one line: `error <status> <code>: <message>`. */
export const errorLine = (res: { status: number; body: any }) => `error ${res.status} ${res.body?.error?.code ?? ''}: ${res.body?.error?.message ?? JSON.stringify(res.body)}`;

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

/** `key: value` lines, for one object. */
export const fields = (pairs: [string, unknown][]) =>
  pairs.filter(([, v]) => v !== undefined && v !== null).map(([k, v]) => `${k}: ${Array.isArray(v) ? v.join(', ') || '-' : String(v)}`).join('\n');
