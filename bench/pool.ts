/**
 * Free-tier pool reservations against a PostgreSQL baseline, on the same server and
 * the same fresh database in one run:
 *
 *   A (reservations)  N grant jobs at once by P payers of mixed tiers, through one
 *                     pg pool of C connections, each as the workflow runs it: opened
 *                     (openGrant: decides, and a `free` job reserves at once) and, if
 *                     `partial`, paid (payForGrant: re-grants and reserves then). Only
 *                     what placed a pool hold counts as a reservation: a `gate` job,
 *                     or a partial one with nothing left at payment, reserves nothing
 *                     and is not counted (its time is, in the elapsed time). Every
 *                     reservation locks its payer's row (the budget lock), then one
 *                     of the pool's K stripe accounts that no one else holds (SKIP
 *                     LOCKED); only a reservation the pool binds, or one no single
 *                     stripe can hold, takes all K.
 *   B (pgbench)       pgbench updating one row of a one-row table, C clients for S
 *                     seconds: the same hot-row queue with nothing else around it.
 *
 * The ratio reservations/pgbench is what a reservation costs over the bare row
 * update it cannot avoid; the absolute rates depend on the machine, the ratio much
 * less. The seed and the payers' budgets are sized so that some jobs are refused by
 * their budget and some by the pool (partial or gate), and the checks prove that
 * neither limit was crossed: no payer's day over its budget (over-grants, must be 0),
 * the pool never below zero, the auditor's verdict.
 *
 *   npm run bench:pool -- [--reservations 1000] [--payers 50] [--concurrency 10]
 *     [--pool-units 15000] [--stripes 8] [--estimate-min 1] [--estimate-max 40] [--seed 1]
 *     [--seconds 10] [--database-url URL] [--json]
 *
 * Progress goes to stderr, results to stdout (so `--json` output can be piped).
 * Exits non-zero if a check fails. The database sluice_bench_* is dropped at the
 * end, also on failure or Ctrl-C.
 */
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { formatAudit, runAudit, type AuditReport } from '../src/audit';
import { migrateLedger } from '../src/ledger/setup';
import { createPool, withTransaction, type Pool } from '../src/db/pool';
import { SluiceError } from '../src/domain/errors';
import { DEFAULT_TIER_BUDGETS, utcDay, type GrantMode, type JobRequest, type Tier } from '../src/domain/grants';
import { prng } from '../src/domain/simulation';
import { createAccount, worldAccountId } from '../src/ledger/accounts';
import { GRANT_SQL, openGrant, payForGrant, setTier } from '../src/ledger/grants';
import { createParty } from '../src/ledger/parties';
import { poolState, RESERVE_WAITING } from '../src/ledger/pool';
import { EVENT_INSERT_SQL } from '../src/ledger/events';
import { deposit, postTransfer } from '../src/ledger/transfers';
import { checkpoint, onServer, serverVersion, withBenchDatabase } from './support/database';
import { benchCommand, integerAtLeast, parseBenchOptions, shownOptions, type BenchOptions } from './support/options';
import { pgbenchVersion, runPgbenchScript } from './support/pgbench';
import { printJson, printTable, type Row } from './support/report';
import { abortOnInterrupt, log, runBench } from './support/runner';

// Sized so that most jobs place a hold (what is measured) and both limits still bind.
// 'new' (0) and 'established' (50) would make most jobs gates that reserve nothing;
// 'trusted' and 'elite' alternate. With the defaults (50 payers, 1000 jobs of 1..40
// units: ~20 jobs and ~410 units a payer) 'trusted' (200) runs out of budget about
// half way (a partial, then gates), 'elite' (1000) does not, and what the budgets
// allow (~15,250) just exceeds the 15,000-unit seed, so the pool runs dry near the end.
const PAYER_TIERS: Tier[] = ['trusted', 'elite'];
const BUDGETS = DEFAULT_TIER_BUDGETS;
const MODES: GrantMode[] = ['free', 'partial', 'gate'];

interface Options extends BenchOptions {
  reservations: number;
  payers: number;
  concurrency: number;
  poolUnits: number;
  stripes: number;
  estimateMin: number;
  estimateMax: number;
  seed: number;
  seconds: number;
}

const parseOptions = () =>
  parseBenchOptions<Options>(
    benchCommand('bench:pool', 'free-tier pool reservations/s against pgbench single-row updates/s, same server, same fresh database')
      .option('--reservations <n>', 'grant jobs run at once (the pool holds they place are the reservations)', integerAtLeast(1), 1000)
      .option('--payers <n>', 'payers the jobs are spread over (tiers trusted, elite in turn)', integerAtLeast(1), 50)
      // createPool's default max: the pool an API process reserves through
      .option('--concurrency <n>', 'pg pool size for the reservations, and pgbench -c', integerAtLeast(1), 10)
      .option('--pool-units <n>', 'units the free-tier pool is seeded with', integerAtLeast(0), 15000)
      .option('--stripes <n>', 'stripe accounts the pool is held as (SLUICE_POOL_STRIPES; 1 is the single hot row)', integerAtLeast(1), 8)
      .option('--estimate-min <n>', 'smallest estimated cost of a job', integerAtLeast(1), 1)
      .option('--estimate-max <n>', 'largest estimated cost of a job', integerAtLeast(1), 40)
      .option('--seed <n>', 'PRNG seed for payers and estimates (the same seed, the same jobs)', integerAtLeast(0), 1)
      .option('--seconds <n>', 'duration of the pgbench phase', integerAtLeast(1), 10),
    (o, command) => {
      if (o.estimateMin > o.estimateMax) command.error('error: --estimate-min must not exceed --estimate-max');
    },
  );

// ------------------------------------------------------------------ reservations

interface Payer {
  id: string;
  accountId: string;
  tier: Tier;
}

async function setUp(url: string, pool: Pool, o: Options): Promise<Payer[]> {
  log(`migrations (pool seeded with ${o.poolUnits} units over ${o.stripes} stripes), ${o.payers} payers`);
  await migrateLedger(url, { poolSeedUnits: o.poolUnits, poolStripes: o.stripes });
  const payers = Array.from({ length: o.payers }, (_, i): Payer => {
    const id = `bench-${String(i).padStart(6, '0')}`;
    return { id, accountId: `${id}.w`, tier: PAYER_TIERS[i % PAYER_TIERS.length]! };
  });
  // Sequential: setup is not what is measured, and it is a few hundred statements.
  for (const p of payers) {
    await createParty(pool, { id: p.id, name: p.id });
    // funded for every partial payment it could make: a payment never fails for want of funds
    await createAccount(pool, { id: p.accountId, ownerId: p.id, kind: 'user' });
    await deposit(pool, { key: `bench-fund-${p.id}`, accountId: p.accountId, amount: o.reservations * o.estimateMax });
    await setTier(pool, p.id, p.tier);
  }
  await pool.query('vacuum analyze');
  await checkpoint(url);
  return payers;
}

/** The jobs of a run, from the seed alone: the same seed opens the same jobs. */
function planJobs(payers: Payer[], o: Options): JobRequest[] {
  const random = prng(o.seed);
  const int = (min: number, max: number) => min + Math.floor(random() * (max - min + 1));
  const runId = randomBytes(4).toString('hex');
  return Array.from({ length: o.reservations }, (_, i) => {
    const payer = payers[int(0, payers.length - 1)]!;
    const jobId = `bench-${runId}-${i}`; // unique: every reservation does the real work, no replays
    return {
      jobId,
      payer: payer.id,
      payerAccountId: payer.accountId,
      estimatedCost: int(o.estimateMin, o.estimateMax),
      requestHash: jobId,
      work: { description: 'bench:pool' },
      paymentTimeoutMs: 60_000,
    };
  });
}

interface ReservationResult {
  attempted: number;
  decided: number;
  decisions: Record<GrantMode, number>;
  /** Partial jobs paid (each re-granted and, if anything was left, reserved). */
  paid: number;
  /** Jobs that reserved on the pool (one or, spilled, several holds): free jobs at decide time, partial jobs at payment. What perSecond counts. */
  reservations: number;
  /** Units reserved on the pool, as the answers said. */
  reservedUnits: number;
  /** Reservations that ended in an error (by code) instead of a decision: none is expected. */
  errors: Record<string, number>;
  elapsedSeconds: number;
  perSecond: number;
}

async function reserveAll(pool: Pool, jobs: JobRequest[], o: Options, signal: AbortSignal): Promise<ReservationResult> {
  // Open all C connections before the clock starts: pgbench's tps excludes connection time too.
  const warm = await Promise.all(Array.from({ length: o.concurrency }, () => pool.connect()));
  warm.forEach((c) => c.release());

  const day = utcDay(Date.now()); // one day for the whole run, even across midnight
  log(`${jobs.length} reservations at once through ${o.concurrency} connections`);
  const started = performance.now();
  // All at once: the pg pool queues what exceeds its connections, as it would for
  // concurrent API requests. allSettled, so one failure does not leave the others
  // running behind the report (and the database drop).
  const runJob = async (request: JobRequest) => {
    const decided = await openGrant(pool, { request, day, budgets: BUDGETS });
    return { decided, final: decided.decision === 'partial' ? await payForGrant(pool, { jobId: request.jobId, day, budgets: BUDGETS }) : decided };
  };
  const settled = await Promise.allSettled(jobs.map(runJob));
  const elapsedSeconds = (performance.now() - started) / 1000;
  // Queued transactions cannot be taken back from the pg pool, so Ctrl-C lands here.
  if (signal.aborted) throw new Error('interrupted');

  const decisions: Record<GrantMode, number> = { free: 0, partial: 0, gate: 0 };
  const errors: Record<string, number> = {};
  let reservedUnits = 0;
  let paid = 0;
  let reservations = 0;
  for (const s of settled) {
    if (s.status === 'fulfilled') {
      decisions[s.value.decided.decision]++;
      if (s.value.final.paid > 0) paid++;
      if (s.value.final.reserved > 0) reservations++;
      reservedUnits += s.value.final.reserved;
    } else {
      // a refusal by the database's own guards (budget trigger: 23514, pool CHECK) would
      // mean the locks let two reservations read the same figures: counted, and failed below
      const e = s.reason as { code?: string };
      const code = s.reason instanceof SluiceError ? s.reason.code : (e.code ?? 'error');
      errors[code] = (errors[code] ?? 0) + 1;
      if (Object.keys(errors).length === 1 && errors[code] === 1) log(`first error: ${(s.reason as Error).message}`);
    }
  }
  const decided = decisions.free + decisions.partial + decisions.gate;
  return { attempted: jobs.length, decided, decisions, paid, reservations, reservedUnits, errors, elapsedSeconds, perSecond: reservations / elapsedSeconds };
}

// ------------------------------------------------------------------ checks

interface Checks {
  /** (payer, day) pairs whose reservations exceed the budget in force: must be 0. */
  overGrants: number;
  overGrantRows: { payer: string; day: string; used: number; budget: number }[];
  pool: { seed: number; balance: number; held: number; available: number; reservedTotal: number; ok: boolean };
  /** The grants table agrees with the answers the bench counted (per mode, and units reserved). */
  counts: { inDb: Record<GrantMode, number>; reservedInDb: number; ok: boolean };
  audit: AuditReport;
  ok: boolean;
}

async function check(pool: Pool, payers: Payer[], result: ReservationResult): Promise<Checks> {
  log('checks: budgets, pool, counts, audit');
  // The budget in force is the tier's budget as this bench set it, and never more
  // than what the grant rows recorded: an over-grant cannot hide behind a wrong
  // `budget` column. used = sum(reserved - returned), as the trigger counts it.
  const tierBudget = Object.fromEntries(payers.map((p) => [p.id, BUDGETS[p.tier]]));
  const { rows: overGrantRows } = await pool.query<{ payer: string; day: string; used: number; budget: number }>(
    `select payer, to_char(day, 'YYYY-MM-DD') as day, sum(reserved - returned)::bigint as used,
            least(min(budget), ($1::jsonb ->> payer)::bigint)::bigint as budget
       from grants where day is not null
      group by payer, day
     having sum(reserved - returned) > least(min(budget), ($1::jsonb ->> payer)::bigint)
      order by payer, day`,
    [JSON.stringify(tierBudget)],
  );

  // Nothing settles in this run, so the pool's held only grew: available now is the
  // lowest it ever was, and "never below zero" is "not below zero now". The seed is
  // read back from the deposits into the pool, not taken from the options.
  const state = await poolState(pool, utcDay(Date.now()));
  const { rows: totals } = await pool.query<{ seed: number; reserved: number }>(
    `select (select coalesce(sum(t.amount), 0)::bigint from transfers t join accounts a on a.id = t.credit_account_id
              where a.kind = 'pool' and t.kind = 'deposit') as seed,
            (select coalesce(sum(reserved), 0)::bigint from grants) as reserved`,
  );
  const { seed, reserved: reservedTotal } = totals[0]!;
  const poolOk = state.available >= 0 && reservedTotal <= seed && state.held === reservedTotal;

  const { rows: modes } = await pool.query<{ decision: GrantMode; n: number }>('select decision, count(*)::int as n from grants group by decision');
  const inDb: Record<GrantMode, number> = { free: 0, partial: 0, gate: 0 };
  for (const m of modes) inDb[m.decision] = m.n;
  const countsOk = MODES.every((m) => inDb[m] === result.decisions[m]) && reservedTotal === result.reservedUnits;

  const audit = await runAudit(pool);
  return {
    overGrants: overGrantRows.length,
    overGrantRows,
    pool: { seed, balance: state.balance, held: state.held, available: state.available, reservedTotal, ok: poolOk },
    counts: { inDb, reservedInDb: reservedTotal, ok: countsOk },
    audit,
    ok: overGrantRows.length === 0 && poolOk && countsOk && audit.ok && Object.keys(result.errors).length === 0,
  };
}

// ------------------------------------------------------------------ pgbench

const PGBENCH_TABLE = 'bench_counter';

/** Single-row update tps. */
async function pgbenchSingleRow(url: string, o: Options, signal: AbortSignal): Promise<number> {
  await onServer(url, `create table ${PGBENCH_TABLE} (id int primary key, n bigint not null)`);
  await onServer(url, `insert into ${PGBENCH_TABLE} values (1, 0)`);
  await onServer(url, `vacuum analyze ${PGBENCH_TABLE}`);
  return runPgbenchScript(url, `update ${PGBENCH_TABLE} set n = n + 1 where id = 1;`, { clients: o.concurrency, seconds: o.seconds, label: 'single-row update' }, signal);
}

/**
 * A free job's reservation, its own statements (GRANT_SQL, RESERVE_WAITING,
 * EVENT_INSERT_SQL: the texts openGrant runs) replayed by pgbench's C client, C clients
 * for S seconds, over the same payers, with the pool topped up so every one reserves:
 * what the reservation's SQL costs this server without this process. The stripe is
 * taken in its waiting form (openGrant tries SKIP LOCKED first and waits only when
 * that finds none; pgbench cannot branch on an empty result), so every replay places
 * its hold, queueing where two clients pick the same stripe. Each `$n` becomes
 * a pgbench variable, bound as a parameter (-M prepared). Run after the checks, on
 * grants and holds of its own ('pgb-' job ids).
 */
async function pgbenchOwnStatements(url: string, pool: Pool, payers: Payer[], o: Options, signal: AbortSignal): Promise<number> {
  const { rows: stripes } = await pool.query<{ id: string }>(`select id from accounts where kind = 'pool' order by id`);
  const world = await worldAccountId(pool, 'UNIT');
  for (const s of stripes) {
    await withTransaction(pool, (c) => postTransfer(c, { key: `pgb-topup-${s.id}`, kind: 'deposit', debitAccountId: world, creditAccountId: s.id, amount: 1e12, memo: 'bench:pool probe' }));
  }
  const { rows: sample } = await pool.query<{ payload: unknown }>(`select payload from events where type = 'job.decided' order by id limit 1`);
  const bind = (sql: string, vars: string[]) => sql.replace(/\$(\d+)/g, (_, n: string) => `:${vars[Number(n) - 1]}`);
  const script = [
    `\\set p random(0, ${payers.length - 1})`,
    `\\set amount random(${o.estimateMin}, ${o.estimateMax})`,
    // the job's id and payer, as the API hands them to openGrant
    `select 'bench-' || lpad(:p::text, 6, '0') as payer, 'bench-' || lpad(:p::text, 6, '0') || '.w' as account, 'pgb-' || gen_random_uuid() as job, current_date::text as day \\gset`,
    'begin;',
    bind(GRANT_SQL.lockBudget, ['payer']) + ';',
    bind(GRANT_SQL.readBudget, ['payer', 'day', 'job']) + ';',
    bind(RESERVE_WAITING, ['job', 'amount', 'job']) + ';',
    bind(GRANT_SQL.insert, ['job', 'payer', 'account', 'job', 'work', 'amount', 'free', 'tier', 'amount', 'reserved', 'day', 'budget', 'amount', 'jobs']) + ';',
    bind(EVENT_INSERT_SQL, ['decided', 'job', 'payload', 'parties']) + ';',
    'commit;',
  ].map((l) => l.replace(/\s*\n\s*/g, ' ')).join('\n');
  const defines = {
    work: JSON.stringify({ description: 'bench:pool' }),
    free: 'free',
    tier: 'elite',
    reserved: 'reserved',
    budget: String(Number.MAX_SAFE_INTEGER), // budgets are the app's to decide: the trigger's sum still runs
    jobs: 'sluice.jobs',
    decided: 'job.decided',
    payload: JSON.stringify(sample[0]?.payload ?? {}),
    parties: '{bench}',
  };
  const tps = await runPgbenchScript(url, script, { clients: o.concurrency, seconds: o.seconds, defines, label: "a free job's reservation statements" }, signal);
  const { rows } = await pool.query<{ n: number; holds: number }>(
    `select count(*)::int as n, (select count(*)::int from grant_holds where job_id like 'pgb-%') as holds from grants where job_id like 'pgb-%'`,
  );
  // every replayed reservation placed its hold: the probe did the work it stands for
  if (rows[0]!.n === 0 || rows[0]!.holds !== rows[0]!.n) throw new Error(`pgbench reservations: ${rows[0]!.n} grants, ${rows[0]!.holds} holds`);
  return tps;
}

// ------------------------------------------------------------------ report

// `reservations` is the result; its count is `reservations.attempted`
type Report = Omit<Options, keyof BenchOptions | 'reservations'> & {
  pgbenchVersion: string | null;
  postgresVersion: string;
  budgets: Record<Tier, number>;
  reservations: ReservationResult;
  /** pgbench's single-row updates/s, and its replay of a free job's reservation statements/s. */
  pgbench: { tps: number; ownStatementsTps: number } | null;
  /** reservations/s over pgbench single-row updates/s; null without pgbench. */
  ratio: number | null;
  /** reservations/s over pgbench replaying the reservation's own statements: what this process adds. */
  ownStatementsRatio: number | null;
  checks: Checks;
};

function printResults(r: Report): void {
  const c = r.checks;
  const errors = Object.entries(r.reservations.errors);
  const res = r.reservations;
  const rows: Row[] = [
    ['pgbench', r.pgbenchVersion ?? 'not found'],
    ['postgresql', r.postgresVersion],
    ['jobs', `${res.attempted} by ${r.payers} payers, estimates ${r.estimateMin}..${r.estimateMax}, seed ${r.seed}; partial ones paid`],
    ['concurrency', String(r.concurrency)],
    ['pool seed', String(c.pool.seed)],
    ['tier budgets', PAYER_TIERS.map((t) => `${t} ${r.budgets[t]}`).join(', ')],
    ['reservations/s', `${res.perSecond.toFixed(1)} (${res.reservations} jobs reserved in ${res.elapsedSeconds.toFixed(2)} s)`],
    ['pgbench updates/s', r.pgbench ? `${r.pgbench.tps.toFixed(1)} (single row, ${r.seconds} s)` : 'n/a (pgbench not found)'],
    ['ratio', r.ratio === null ? 'n/a' : r.ratio.toFixed(2)],
    ['pgbench own SQL/s', r.pgbench ? `${r.pgbench.ownStatementsTps.toFixed(1)} (a free job's reservation statements from pgbench, ${r.seconds} s)` : 'n/a'],
    ['decisions', `${MODES.map((m) => `${m} ${res.decisions[m]}`).join(', ')}; ${res.paid} partial paid`],
    ['reserved', `${res.reservedUnits} units`],
    ['errors', errors.length ? errors.map(([code, n]) => `${code}: ${n}`).join(', ') : '0'],
    ['over-grants', `${c.overGrants} (payer-days over budget)`],
    [
      'pool',
      `${c.pool.ok ? 'ok' : 'FAILED'} (available ${c.pool.available} = balance ${c.pool.balance} - held ${c.pool.held}; ` +
        `reserved ${c.pool.reservedTotal} of seed ${c.pool.seed})`,
    ],
    ['counts', `${c.counts.ok ? 'ok' : 'FAILED'} (in db: ${MODES.map((m) => `${m} ${c.counts.inDb[m]}`).join(', ')}; reserved ${c.counts.reservedInDb})`],
    ['audit', `${c.audit.ok ? 'PASS' : 'FAIL'} (${c.audit.checks.filter((x) => x.ok).length}/${c.audit.checks.length} checks)`],
  ];
  printTable(rows);
  for (const g of c.overGrantRows.slice(0, 20)) console.log(`  over budget: ${g.payer} on ${g.day} used ${g.used} of ${g.budget}`);
  if (!c.audit.ok) console.log(formatAudit(c.audit));
  console.log(`ratio reservations/pgbench: ${r.ratio === null ? 'n/a' : r.ratio.toFixed(2)}`);
  console.log(`ratio reservations/pgbench-own-statements: ${r.ownStatementsRatio === null ? 'n/a' : r.ownStatementsRatio.toFixed(2)}`);
  console.log(`over-grants: ${c.overGrants}`);
}

// ------------------------------------------------------------------ main

async function main(): Promise<void> {
  const o = parseOptions();
  // Ctrl-C or a kill stops pgbench, and still drops the database.
  const abort = abortOnInterrupt();
  const [version, server] = await Promise.all([pgbenchVersion(), serverVersion(o.databaseUrl)]);

  await withBenchDatabase(o.databaseUrl, async (url) => {
    const pool = createPool(url, o.concurrency);
    try {
      const payers = await setUp(url, pool, o);
      const reservations = await reserveAll(pool, planJobs(payers, o), o, abort.signal);
      const checks = await check(pool, payers, reservations);
      // without pgbench the reservations and the checks still stand: no baseline, not a failure
      if (version === null) log('pgbench not found: no baseline, ratio n/a');
      const tps = version === null ? null : await pgbenchSingleRow(url, o, abort.signal);
      const ownTps = version === null ? null : await pgbenchOwnStatements(url, pool, payers, o, abort.signal);

      const { reservations: _count, ...shown } = shownOptions(o);
      const report: Report = {
        ...shown,
        pgbenchVersion: version,
        postgresVersion: server,
        budgets: BUDGETS,
        reservations,
        pgbench: tps === null || ownTps === null ? null : { tps, ownStatementsTps: ownTps },
        ratio: tps === null ? null : reservations.perSecond / tps,
        ownStatementsRatio: ownTps === null ? null : reservations.perSecond / ownTps,
        checks,
      };
      if (o.json) printJson(report);
      else printResults(report);
      if (!checks.ok) process.exitCode = 1;
    } finally {
      await pool.end();
    }
  });
}

runBench(main);
