/**
 * The databases a bench runs on: a fresh `sluice_bench_<hex>` of its own per run on the
 * server it was given, dropped at the end whatever happened, and one-off statements on
 * that server (version, checkpoint, create and drop).
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { withDatabase } from '../../src/db/pool';
import { log } from './runner';

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

/** The server's version, as a report prints it (`15.20 (Debian …)`). */
export async function serverVersion(url: string): Promise<string> {
  const [row] = await onServer<{ server_version: string }>(url, 'show server_version');
  return row!.server_version;
}

/**
 * Measured phases start right after a checkpoint, so none pays for flushing the
 * other's (or the setup's) dirty pages: on a small box that alone moves a ratio.
 */
export async function checkpoint(url: string): Promise<void> {
  await onServer(url, 'checkpoint');
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

/**
 * Creates the database `name` on the server, runs `use` on it (its URL) and drops it
 * again, also when `use` fails or the run is interrupted: what `use` opens on it (pools,
 * workers) it closes itself before it returns.
 */
export async function withBenchDatabase<T>(serverUrl: string, use: (url: string, name: string) => Promise<T>, name = benchDatabaseName()): Promise<T> {
  await createBenchDatabase(serverUrl, name);
  try {
    return await use(withDatabase(serverUrl, name), name);
  } finally {
    await dropBenchDatabase(serverUrl, name);
  }
}
