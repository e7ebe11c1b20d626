/**
 * Ledger throughput against a PostgreSQL baseline, on the same server and the same
 * fresh database in one run: pgbench's built-in TPC-B-like script first, then the
 * ledger's idempotent transfer path with the same number of clients and seconds.
 * The ratio ledger/pgbench is the number to watch: the absolute rates depend on the
 * machine (and on its neighbours), the ratio much less.
 *
 *   npm run bench:ledger -- [--clients 8] [--seconds 10] [--accounts 100] [--database-url URL] [--json]
 *
 * Progress goes to stderr, results to stdout (so `--json` output can be piped).
 * Exits non-zero if the books do not balance after the run.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { promisify } from 'node:util';
import { Command } from 'commander';
import { migrate } from '../src/db/migrate';
import { createPool, withDatabase, type Pool } from '../src/db/pool';
import { SluiceError } from '../src/domain/errors';
import { createAccount } from '../src/ledger/accounts';
import { deposit, transfer } from '../src/ledger/transfers';
import { benchDatabaseName, checkpoint, createBenchDatabase, dropBenchDatabase, integerAtLeast, log, onServer, pgbenchTps, runBench, withServerAndJson } from './support';

const execFileAsync = promisify(execFile);

// Generous enough that no account runs dry during a run (transfers move 1..100
// units), small enough that the world account's negative sum stays a safe integer.
const FUNDING_UNITS = 1_000_000_000;
const TRANSFER_UNITS_MAX = 100;

interface Options {
  clients: number;
  seconds: number;
  accounts: number;
  databaseUrl: string;
  json: boolean;
}

function parseOptions(): Options {
  return withServerAndJson(
    new Command()
    .name('bench:ledger')
    .description('ledger transfers/s against pgbench tpcb-like tps, same server, same fresh database')
    .option('--clients <n>', 'concurrent clients (pgbench -c, ledger pool size and loops)', integerAtLeast(1), 8)
    .option('--seconds <n>', 'duration of each measured phase', integerAtLeast(1), 10)
    // 100 accounts by default. Not the same contention as pgbench scale 1, which cannot
    // be matched exactly: there every transaction updates the single branch row (and one
    // of 10 tellers), so all commits queue on one row for a short tail of each
    // transaction; here a transfer holds 2 of N rows locked for its whole transaction.
    // With 100 accounts and 8 clients, ~1 in 4 transfers waits for a lock, which keeps
    // lock waits in the picture without making one row the whole story.
    // `--accounts 2` is the everything-on-one-row worst case.
    .option('--accounts <n>', 'accounts the transfers move money between', integerAtLeast(2), 100),
  )
    .parse()
    .opts<Options>();
}

// ------------------------------------------------------------------ pgbench

async function pgbench(url: string, o: Options, signal: AbortSignal): Promise<number> {
  // pgbench takes the URL as its dbname argument (libpq expands connection URIs).
  const exec = (args: string[]) => execFileAsync('pgbench', [...args, url], { signal, maxBuffer: 16 << 20 });
  log('pgbench -i -s 1');
  await exec(['-i', '-s', '1', '-q']);
  await checkpoint(url);
  const threads = Math.min(o.clients, 2);
  log(`pgbench -b tpcb-like -c ${o.clients} -j ${threads} -T ${o.seconds} -n`);
  const { stdout } = await exec(['-b', 'tpcb-like', '-c', String(o.clients), '-j', String(threads), '-T', String(o.seconds), '-n']);
  return pgbenchTps(stdout);
}

// ------------------------------------------------------------------ ledger

interface LedgerResult {
  committed: number;
  refused: Record<string, number>;
  elapsedSeconds: number;
  tps: number;
}

async function setUpLedger(url: string, pool: Pool, accounts: number): Promise<string[]> {
  log(`migrations, ${accounts} parties and accounts, deposits`);
  await migrate(url);
  // One party per account, as users would be. Parties are not on the measured path,
  // so plain SQL: one statement, and no API keys to mint.
  const ids = Array.from({ length: accounts }, (_, i) => `bench-${String(i).padStart(6, '0')}`);
  await pool.query(`insert into parties (id, name) select id, id from unnest($1::text[]) as id`, [ids]);
  // Sequential on purpose: every deposit locks the one world account, so concurrency
  // would only queue, and setup is not what is measured.
  for (const id of ids) {
    await createAccount(pool, { id, ownerId: id, kind: 'user' });
    await deposit(pool, { key: `fund-${id}`, accountId: id, amount: FUNDING_UNITS });
  }
  // pgbench -i vacuums and analyzes its tables; give the ledger's the same start.
  await pool.query('vacuum analyze');
  await checkpoint(url);
  return ids;
}

async function driveLedger(pool: Pool, ids: string[], o: Options, signal: AbortSignal): Promise<LedgerResult> {
  // Open all C connections before the clock starts: pgbench's tps excludes connection time too.
  const warm = await Promise.all(Array.from({ length: o.clients }, () => pool.connect()));
  warm.forEach((c) => c.release());

  log(`ledger transfers -c ${o.clients} -T ${o.seconds} over ${ids.length} accounts`);
  const runId = randomBytes(4).toString('hex');
  const refused: Record<string, number> = {};
  let committed = 0;
  let failure: unknown;
  const started = performance.now();
  const deadline = started + o.seconds * 1000;
  const pick = (n: number) => Math.floor(Math.random() * n);

  const loop = async (client: number) => {
    for (let seq = 0; performance.now() < deadline && !signal.aborted && failure === undefined; seq++) {
      // two different random accounts: the second is offset from the first by 1..N-1
      const debit = pick(ids.length);
      const credit = (debit + 1 + pick(ids.length - 1)) % ids.length;
      try {
        await transfer(pool, {
          key: `bench-${runId}-${client}-${seq}`, // unique: every transfer does the real work, no replays
          kind: 'transfer',
          debitAccountId: ids[debit]!,
          creditAccountId: ids[credit]!,
          amount: 1 + pick(TRANSFER_UNITS_MAX),
        });
        committed++;
      } catch (error) {
        // a refusal is an answer the ledger is allowed to give; anything else ends the run
        if (error instanceof SluiceError) refused[error.code] = (refused[error.code] ?? 0) + 1;
        else failure = error;
      }
    }
  };
  // Every loop finishes its in-flight transfer before the run ends (none is cut off),
  // and the rate uses the real elapsed time, as pgbench does for -T.
  await Promise.all(Array.from({ length: o.clients }, (_, i) => loop(i)));
  const elapsedSeconds = (performance.now() - started) / 1000;
  if (failure !== undefined) throw failure;
  if (signal.aborted) throw new Error('interrupted');
  return { committed, refused, elapsedSeconds, tps: committed / elapsedSeconds };
}

interface Conservation {
  balanceSum: string;
  transfersInDb: number;
  ok: boolean;
}

/**
 * The books must balance: the world account is minus everything deposited, so all
 * balances sum to zero. The transfer count cross-checks the bench's own counting
 * (a transfer counted but not committed, or the reverse, would show here).
 */
async function checkConservation(pool: Pool, committed: number): Promise<Conservation> {
  const { rows } = await pool.query<{ sum: string; transfers: number }>(
    `select (select sum(balance)::text from accounts) as sum,
            (select count(*) from transfers where kind = 'transfer') as transfers`,
  );
  const { sum, transfers } = rows[0]!;
  return { balanceSum: sum, transfersInDb: transfers, ok: sum === '0' && transfers === committed };
}

// ------------------------------------------------------------------ report

function printTable(r: Report): void {
  const refused = Object.entries(r.ledger.refused);
  const refusedText = refused.length ? refused.map(([code, n]) => `${code}: ${n}`).join(', ') : '0';
  const rows: [string, string][] = [
    ['pgbench', r.pgbenchVersion],
    ['postgresql', r.postgresVersion],
    ['clients', String(r.clients)],
    ['pgbench threads', String(r.pgbenchThreads)],
    ['seconds', String(r.seconds)],
    ['accounts', String(r.accounts)],
    ['pgbench tps', r.pgbench.tps.toFixed(1)],
    ['ledger transfers/s', `${r.ledger.tps.toFixed(1)} (${r.ledger.committed} in ${r.ledger.elapsedSeconds.toFixed(2)} s)`],
    ['ledger refused', refusedText],
    ['ratio ledger/pgbench', r.ratio.toFixed(2)],
    [
      'conservation',
      `${r.conservation.ok ? 'ok' : 'FAILED'} (sum of balances ${r.conservation.balanceSum}, ` +
        `${r.conservation.transfersInDb} transfers in db, ${r.ledger.committed} counted)`,
    ],
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  for (const [k, v] of rows) console.log(`${k.padEnd(width)}  ${v}`);
  console.log(`ratio ledger/pgbench: ${r.ratio.toFixed(2)}`);
}

type Report = Omit<Options, 'databaseUrl' | 'json'> & {
  pgbenchVersion: string;
  postgresVersion: string;
  pgbenchThreads: number;
  pgbench: { tps: number };
  ledger: LedgerResult;
  ratio: number;
  conservation: Conservation;
};

// ------------------------------------------------------------------ main

async function main(): Promise<void> {
  const o = parseOptions();
  const serverUrl = o.databaseUrl;
  const name = benchDatabaseName();
  const url = withDatabase(serverUrl, name);

  // Ctrl-C or a kill stops pgbench and the loops, and still drops the database.
  const abort = new AbortController();
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => abort.abort());

  const [{ stdout: pgbenchVersion }, [server]] = await Promise.all([
    execFileAsync('pgbench', ['--version']),
    onServer<{ server_version: string }>(serverUrl, 'show server_version'),
  ]);

  await createBenchDatabase(serverUrl, name);
  let pool: Pool | undefined;
  try {
    const pgbenchTps = await pgbench(url, o, abort.signal);

    pool = createPool(url, o.clients);
    const ids = await setUpLedger(url, pool, o.accounts);
    const ledger = await driveLedger(pool, ids, o, abort.signal);
    const conservation = await checkConservation(pool, ledger.committed);

    const report: Report = {
      pgbenchVersion: pgbenchVersion.trim(),
      postgresVersion: server!.server_version,
      clients: o.clients,
      pgbenchThreads: Math.min(o.clients, 2),
      seconds: o.seconds,
      accounts: o.accounts,
      pgbench: { tps: pgbenchTps },
      ledger,
      ratio: ledger.tps / pgbenchTps,
      conservation,
    };
    if (o.json) console.log(JSON.stringify(report, null, 2));
    else printTable(report);
    if (!conservation.ok) process.exitCode = 1;
  } finally {
    await pool?.end();
    await dropBenchDatabase(serverUrl, name);
  }
}

runBench(main);
