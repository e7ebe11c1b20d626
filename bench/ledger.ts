/**
 * Ledger throughput against pgbench, like for like, on the same server and the same
 * fresh database in one run:
 *   - hot: pgbench TPC-B-like at scale 1 (every transaction updates the one branch
 *     row) beside ledger transfers that all credit one hot account;
 *   - spread: pgbench at scale = clients (a branch row per client, rows spread)
 *     beside ledger transfers between disjoint account pairs, one pair per client.
 * Each ratio ledger/pgbench compares the same clients and seconds; the absolute rates
 * depend on the machine (and on its neighbours), the ratios much less.
 *
 *   npm run bench:ledger -- [--clients 8] [--seconds 10] [--database-url URL] [--json]
 *
 * Progress goes to stderr, results to stdout as `name: value` lines (`--json`: one
 * JSON object only). Exits non-zero if the books do not balance after the run (the
 * auditor's checks, and the bench's own count of transfers).
 */
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { runAudit, WORKFLOWS_CHECK } from '../src/audit';
import { migrateLedger } from '../src/ledger/setup';
import { createPool, type Pool } from '../src/db/pool';
import { SluiceError } from '../src/domain/errors';
import { createAccount } from '../src/ledger/accounts';
import { deposit, transfer } from '../src/ledger/transfers';
import { checkpoint, serverVersion, withBenchDatabase } from './support/database';
import { mapConcurrently } from './support/measure';
import { benchCommand, integerAtLeast, parseBenchOptions, type BenchOptions } from './support/options';
import { pgbenchVersion, runPgbench } from './support/pgbench';
import { printJson, printLines, type Row } from './support/report';
import { abortOnInterrupt, log, runBench } from './support/runner';

// Generous enough that no account runs dry during a run (transfers move 1..100
// units), small enough that the world's negative sum stays a safe integer.
const FUNDING_UNITS = 1_000_000_000;
const TRANSFER_UNITS_MAX = 100;
// accounts that pay the hot one: enough that the payers themselves rarely collide
const HOT_PAYERS = 100;

interface Options extends BenchOptions {
  clients: number;
  seconds: number;
}

const parseOptions = () =>
  parseBenchOptions<Options>(
    benchCommand('bench:ledger', 'ledger transfers/s against pgbench tpcb-like tps: one hot row (scale 1) and spread rows (scale = clients), same server, same fresh database')
      .option('--clients <n>', 'concurrent clients (pgbench -c, ledger pool size and loops)', integerAtLeast(1), 8)
      .option('--seconds <n>', 'duration of each measured phase', integerAtLeast(1), 10),
  );

interface LedgerRun {
  committed: number;
  refused: Record<string, number>;
  elapsedSeconds: number;
  tps: number;
}

/** Parties and funded accounts for both ledger runs (not measured: plain SQL for the parties). */
async function setUpLedger(url: string, pool: Pool, clients: number): Promise<{ hot: string; payers: string[]; pairs: [string, string][] }> {
  log('migrations, parties, accounts and deposits');
  await migrateLedger(url);
  const payers = Array.from({ length: HOT_PAYERS }, (_, i) => `payer-${String(i).padStart(4, '0')}`);
  const pairs = Array.from({ length: clients }, (_, i): [string, string] => [`pair-${i}-a`, `pair-${i}-b`]);
  const ids = ['hot', ...payers, ...pairs.flat()];
  await pool.query(`insert into parties (id, name) select id, id from unnest($1::text[]) as id`, [ids]);
  // concurrent: the world side is striped, so deposits do not queue on one row
  await mapConcurrently(ids, clients, async (id) => {
    await createAccount(pool, { id, ownerId: id, kind: 'user' });
    await deposit(pool, { key: `fund-${id}`, accountId: id, amount: FUNDING_UNITS });
  });
  // pgbench -i vacuums and analyzes its tables; give the ledger's the same start
  await pool.query('vacuum analyze');
  return { hot: 'hot', payers, pairs };
}

/** `clients` loops of idempotent transfers for `seconds`; `pick(client)` names the two accounts. */
async function driveLedger(pool: Pool, name: string, o: Options, pick: (client: number) => [string, string], signal: AbortSignal): Promise<LedgerRun> {
  log(`ledger ${name}: transfers -c ${o.clients} -T ${o.seconds}`);
  const runId = randomBytes(4).toString('hex');
  const refused: Record<string, number> = {};
  let committed = 0;
  let failure: unknown;
  const started = performance.now();
  const deadline = started + o.seconds * 1000;
  const loop = async (client: number) => {
    for (let seq = 0; performance.now() < deadline && !signal.aborted && failure === undefined; seq++) {
      const [debitAccountId, creditAccountId] = pick(client);
      try {
        // a unique key: every transfer does the real work, no replays
        await transfer(pool, { key: `bench-${runId}-${client}-${seq}`, kind: 'transfer', debitAccountId, creditAccountId, amount: 1 + Math.floor(Math.random() * TRANSFER_UNITS_MAX) });
        committed++;
      } catch (error) {
        // a refusal is an answer the ledger may give; anything else ends the run
        if (error instanceof SluiceError) refused[error.code] = (refused[error.code] ?? 0) + 1;
        else failure = error;
      }
    }
  };
  // every loop finishes its transfer in flight; the rate uses the real elapsed time, as pgbench does for -T
  await Promise.all(Array.from({ length: o.clients }, (_, i) => loop(i)));
  const elapsedSeconds = (performance.now() - started) / 1000;
  if (failure !== undefined) throw failure;
  if (signal.aborted) throw new Error('interrupted');
  return { committed, refused, elapsedSeconds, tps: committed / elapsedSeconds };
}

interface Books {
  ok: boolean;
  transfersInDb: number;
  transfersCounted: number;
  failedChecks: string[];
}

/** The auditor's checks (all but the one that needs Temporal) and the count of transfers against the bench's own. */
async function checkBooks(pool: Pool, counted: number): Promise<Books> {
  const report = await runAudit(pool);
  const failedChecks = report.checks.filter((c) => !c.ok && c.name !== WORKFLOWS_CHECK).map((c) => c.name);
  const { rows } = await pool.query<{ n: number }>(`select count(*)::int as n from transfers where kind = 'transfer'`);
  return { ok: failedChecks.length === 0 && rows[0]!.n === counted, transfersInDb: rows[0]!.n, transfersCounted: counted, failedChecks };
}

async function main(): Promise<void> {
  const o = parseOptions();
  const abort = abortOnInterrupt();
  const [version, server] = await Promise.all([pgbenchVersion(), serverVersion(o.databaseUrl)]);
  if (version === null) throw new Error('pgbench not found: bench:ledger measures against it (Debian: postgresql-client)');
  await withBenchDatabase(o.databaseUrl, async (url) => {
    const threads = Math.min(o.clients, 2);
    const pgbenchHot = await runPgbench(url, { clients: o.clients, threads, seconds: o.seconds, scale: 1 }, abort.signal);
    const pgbenchSpread = await runPgbench(url, { clients: o.clients, threads, seconds: o.seconds, scale: o.clients }, abort.signal);

    const pool = createPool(url, o.clients);
    try {
      const { hot, payers, pairs } = await setUpLedger(url, pool, o.clients);
      // open all connections before the clock starts: pgbench's tps excludes connection time too
      (await Promise.all(Array.from({ length: o.clients }, () => pool.connect()))).forEach((c) => c.release());
      await checkpoint(url);
      const ledgerHot = await driveLedger(pool, 'hot', o, () => [payers[Math.floor(Math.random() * payers.length)]!, hot], abort.signal);
      await checkpoint(url);
      // each client moves money back and forth within its own pair: no two clients share a row
      const flip = new Array<boolean>(o.clients).fill(false);
      const ledgerSpread = await driveLedger(pool, 'spread', o, (c) => {
        flip[c] = !flip[c];
        const [a, b] = pairs[c]!;
        return flip[c] ? [a, b] : [b, a];
      }, abort.signal);
      const books = await checkBooks(pool, ledgerHot.committed + ledgerSpread.committed);

      const report = {
        pgbench: version,
        postgresql: server,
        clients: o.clients,
        pgbenchThreads: threads,
        seconds: o.seconds,
        hot: { pgbenchScale1Tps: pgbenchHot.tps, ledger: ledgerHot, ratio: ledgerHot.tps / pgbenchHot.tps },
        spread: { pgbenchScaleTps: pgbenchSpread.tps, pgbenchScale: o.clients, ledger: ledgerSpread, ratio: ledgerSpread.tps / pgbenchSpread.tps },
        books,
      };
      if (o.json) printJson(report);
      else {
        const refusedText = (r: Record<string, number>) => Object.entries(r).map(([k, n]) => `${k} ${n}`).join(', ') || '0';
        const rows: Row[] = [
          ['pgbench', report.pgbench],
          ['postgresql', report.postgresql],
          ['clients', String(o.clients)],
          ['pgbench threads', String(threads)],
          ['seconds', String(o.seconds)],
          ['hot pgbench tps (scale 1)', pgbenchHot.tps.toFixed(1)],
          ['hot ledger transfers/s (one account credited by all)', `${ledgerHot.tps.toFixed(1)} (${ledgerHot.committed} in ${ledgerHot.elapsedSeconds.toFixed(2)} s, refused ${refusedText(ledgerHot.refused)})`],
          ['hot ratio ledger/pgbench', report.hot.ratio.toFixed(2)],
          [`spread pgbench tps (scale ${o.clients})`, pgbenchSpread.tps.toFixed(1)],
          ['spread ledger transfers/s (a pair of accounts per client)', `${ledgerSpread.tps.toFixed(1)} (${ledgerSpread.committed} in ${ledgerSpread.elapsedSeconds.toFixed(2)} s, refused ${refusedText(ledgerSpread.refused)})`],
          ['spread ratio ledger/pgbench', report.spread.ratio.toFixed(2)],
          ['books', `${books.ok ? 'ok' : 'FAILED'} (auditor ${books.failedChecks.length ? `failed: ${books.failedChecks.join(', ')}` : 'green'}, ${books.transfersInDb} transfers in db, ${books.transfersCounted} counted)`],
        ];
        printLines(rows);
      }
      if (!books.ok) process.exitCode = 1;
    } finally {
      await pool.end();
    }
  });
}

runBench(main);
