/**
 * What every benchmark under bench/ shares: progress lines, integer options, one-off
 * statements on the database server, checkpoints before a measured phase and
 * reading pgbench's rate.
 */
import { randomBytes } from 'node:crypto';
import { type Command, InvalidArgumentError } from 'commander';
import pg from 'pg';
import { barUnderLog } from '../src/cli/progress';

/**
 * Progress goes to stderr; results alone go to stdout (so `--json` can be piped). On a
 * terminal a bar over the measured phases stays under the log lines; piped, the log
 * lines alone.
 */
const run = barUnderLog(process.stderr, 'bench');
export const log = run.log;

/** Moves the phase bar (terminals only): `done` of `total` phases, what runs now. */
export const phaseProgress = (done: number, total: number, text: string) => run.update(`bench: ${text}`, done, total);

/** Ends the phase bar's line before the results are printed. */
export const phasesDone = run.finish;

/** A commander parser for an integer option with a lower bound. */
export function integerAtLeast(min: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isSafeInteger(n) || n < min) throw new InvalidArgumentError(`expected an integer >= ${min}`);
    return n;
  };
}

/** The server a benchmark runs on: --database-url, else TEST_DATABASE_URL, DATABASE_URL, the local server. */
export const DEFAULT_BENCH_SERVER = process.env.TEST_DATABASE_URL ?? process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

/** The options every database benchmark takes: where to run, and JSON output. */
export function withServerAndJson(command: Command): Command {
  return command
    .option('--database-url <url>', 'the server to benchmark on (a database sluice_bench_* is created there and dropped after)', DEFAULT_BENCH_SERVER)
    .option('--json', 'print one JSON object instead of the table', false);
}

/** One statement on its own connection (create/drop database, version, checkpoint). */
export async function onServer<T extends pg.QueryResultRow>(url: string, sql: string): Promise<T[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<T>(sql)).rows;
  } finally {
    await client.end();
  }
}

/** A fresh database of its own per run, `sluice_bench_<hex>`, dropped at the end. */
export const benchDatabaseName = () => `sluice_bench_${randomBytes(6).toString('hex')}`;

export async function createBenchDatabase(serverUrl: string, name: string): Promise<void> {
  log(`creating database ${name}`);
  await onServer(serverUrl, `create database ${pg.escapeIdentifier(name)}`);
}

export async function dropBenchDatabase(serverUrl: string, name: string): Promise<void> {
  // with (force): a pgbench or an activity interrupted mid-run may leave a backend behind for a moment
  await onServer(serverUrl, `drop database if exists ${pg.escapeIdentifier(name)} with (force)`);
  log(`dropped database ${name}`);
}

/** Runs a bench's main; a failure is printed and sets a non-zero exit code. */
export function runBench(main: () => Promise<void>): void {
  main().catch((error: unknown) => {
    console.error('bench failed:', error instanceof Error ? error.message : error);
    process.exitCode = 1;
  });
}

/**
 * Measured phases start right after a checkpoint, so none pays for flushing the
 * other's (or the setup's) dirty pages: on a small box that alone moves a ratio.
 */
export async function checkpoint(url: string): Promise<void> {
  await onServer(url, 'checkpoint');
}

/** The rate pgbench reports. PostgreSQL 14+: "tps = N (without initial connection time)"; older: "(excluding connections establishing)". */
export function pgbenchTps(stdout: string): number {
  const match = /^tps = ([\d.]+) \((?:without initial connection time|excluding connections establishing)\)$/m.exec(stdout);
  if (!match) throw new Error(`no tps line in pgbench output:\n${stdout}`);
  return Number(match[1]);
}

/** Nearest-rank percentile of unsorted values; NaN for none. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

export interface Quantiles {
  p50: number;
  p99: number;
  max: number;
  count: number;
}

export const quantiles = (values: number[]): Quantiles => ({
  p50: percentile(values, 50),
  p99: percentile(values, 99),
  max: values.length ? Math.max(...values) : Number.NaN,
  count: values.length,
});

/** Runs `fn` over `items` with at most `limit` calls in flight; the results in the items' order. */
export async function mapConcurrently<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const lane = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, lane));
  return results;
}

export interface PgbenchRun {
  clients: number;
  threads: number;
  seconds: number;
  scale: number;
  tps: number;
}

/** pgbench's version line, or null when it is not installed (a bench's baseline is then n/a, not a failure). */
export async function pgbenchVersion(): Promise<string | null> {
  const { execFile } = await import('node:child_process');
  const { promisify } = await import('node:util');
  try {
    return (await promisify(execFile)('pgbench', ['--version'])).stdout.trim();
  } catch (error) {
    if ((error as { code?: string }).code === 'ENOENT') return null;
    throw error;
  }
}

/**
 * A custom pgbench script on `url`, after a checkpoint: `-n -M prepared -c clients
 * -j 1 -T seconds -f script`, each of `defines` passed as `-D name=value`. -j 1: one
 * thread drives all clients, as a bench's one event loop drives its own; -M prepared:
 * a `:name` in a statement is bound as a parameter. Returns its tps.
 */
export async function runPgbenchScript(
  url: string,
  script: string,
  o: { clients: number; seconds: number; defines?: Record<string, string>; label: string },
  signal?: AbortSignal,
): Promise<number> {
  const { execFile } = await import('node:child_process');
  const { promisify } = await import('node:util');
  const { mkdtemp, rm, writeFile } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  await checkpoint(url);
  const dir = await mkdtemp(join(tmpdir(), 'sluice-bench-'));
  try {
    const file = join(dir, 'script.sql');
    await writeFile(file, script.endsWith('\n') ? script : `${script}\n`);
    const args = ['-n', '-M', 'prepared', '-c', String(o.clients), '-j', '1', '-T', String(o.seconds)];
    log(`pgbench ${args.join(' ')} -f <${o.label}>`);
    const defines = Object.entries(o.defines ?? {}).flatMap(([k, v]) => ['-D', `${k}=${v}`]);
    // pgbench takes the URL as its dbname argument (libpq expands connection URIs)
    const { stdout } = await promisify(execFile)('pgbench', [...args, '-f', file, ...defines, url], { signal, maxBuffer: 16 << 20 });
    return pgbenchTps(stdout);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * pgbench's built-in TPC-B-like script on `url` (a scratch database: `pgbench -i`
 * creates its tables there), after a checkpoint: `-c clients -j threads -T seconds -n`.
 */
export async function runPgbench(url: string, o: { clients: number; threads: number; seconds: number; scale: number }, signal?: AbortSignal): Promise<PgbenchRun> {
  const { execFile } = await import('node:child_process');
  const { promisify } = await import('node:util');
  // pgbench takes the URL as its dbname argument (libpq expands connection URIs)
  const exec = (args: string[]) => promisify(execFile)('pgbench', [...args, url], { signal, maxBuffer: 16 << 20 });
  log(`pgbench -i -s ${o.scale}`);
  await exec(['-i', '-s', String(o.scale), '-q']);
  await checkpoint(url);
  log(`pgbench -b tpcb-like -c ${o.clients} -j ${o.threads} -T ${o.seconds} -n`);
  const { stdout } = await exec(['-b', 'tpcb-like', '-c', String(o.clients), '-j', String(o.threads), '-T', String(o.seconds), '-n']);
  return { ...o, tps: pgbenchTps(stdout) };
}
