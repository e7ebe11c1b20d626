/**
 * The physical limit each bench compares itself with: pgbench on the same server, its
 * built-in TPC-B-like script or a script of the bench's own statements, after a
 * checkpoint, and the rate it reports.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { checkpoint } from './database';
import { log } from './runner';

const execFileAsync = promisify(execFile);

/** pgbench on `url` (pgbench takes the URL as its dbname argument: libpq expands connection URIs). */
const pgbench = (args: string[], url: string, signal?: AbortSignal) => execFileAsync('pgbench', [...args, url], { signal, maxBuffer: 16 << 20 });

/** The rate pgbench reports. PostgreSQL 14+: "tps = N (without initial connection time)"; older: "(excluding connections establishing)". */
export function pgbenchTps(stdout: string): number {
  const match = /^tps = ([\d.]+) \((?:without initial connection time|excluding connections establishing)\)$/m.exec(stdout);
  if (!match) throw new Error(`no tps line in pgbench output:\n${stdout}`);
  return Number(match[1]);
}

/** pgbench's version line, or null when it is not installed (a bench's baseline is then n/a, not a failure). */
export async function pgbenchVersion(): Promise<string | null> {
  try {
    return (await execFileAsync('pgbench', ['--version'])).stdout.trim();
  } catch (error) {
    if ((error as { code?: string }).code === 'ENOENT') return null;
    throw error;
  }
}

export interface PgbenchRun {
  clients: number;
  threads: number;
  seconds: number;
  scale: number;
  tps: number;
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
  await checkpoint(url);
  const dir = await mkdtemp(join(tmpdir(), 'sluice-bench-'));
  try {
    const file = join(dir, 'script.sql');
    await writeFile(file, script.endsWith('\n') ? script : `${script}\n`);
    const args = ['-n', '-M', 'prepared', '-c', String(o.clients), '-j', '1', '-T', String(o.seconds)];
    log(`pgbench ${args.join(' ')} -f <${o.label}>`);
    const defines = Object.entries(o.defines ?? {}).flatMap(([k, v]) => ['-D', `${k}=${v}`]);
    const { stdout } = await pgbench([...args, '-f', file, ...defines], url, signal);
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
  log(`pgbench -i -s ${o.scale}`);
  await pgbench(['-i', '-s', String(o.scale), '-q'], url, signal);
  await checkpoint(url);
  log(`pgbench -b tpcb-like -c ${o.clients} -j ${o.threads} -T ${o.seconds} -n`);
  const { stdout } = await pgbench(['-b', 'tpcb-like', '-c', String(o.clients), '-j', String(o.threads), '-T', String(o.seconds), '-n'], url, signal);
  return { ...o, tps: pgbenchTps(stdout) };
}
