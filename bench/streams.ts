/**
 * The billing clock under load, against PostgreSQL's and Temporal's own baselines, in
 * one run on one PostgreSQL server, one Temporal dev server (our own, in memory, with
 * startDevServer's dynamic config) and one worker: src/worker.ts createWorker, i.e.
 * the real workflows, activities and billing clock shards on one pool. A second
 * worker next to it runs the bare baseline (bench/bareTickWorkflow.ts, no-op
 * activities) on a task queue of its own.
 *
 * Phases, in run order (the figures print capacity first):
 *
 *   latency   bare   --bare-starts bare workflows started by update-with-start until
 *                    their no-op tick 1 answered (the same call shape as an open),
 *                    --open-concurrency calls in flight: bare starts/s.
 *             opens  --latency-streams escrow streams at --latency-interval-ms, opened
 *                    the way POST /v1/streams does (startStreamWorkflow: update-with-start,
 *                    tick 1 billed in the opening transaction), same concurrency. The
 *                    ratio opens/bare starts compares the first --bare-starts opens (up to
 *                    the last one's answer) with the bare starts.
 *             lag    once all are open, the ticks due in a --latency-seconds window:
 *                    lag = stream_ticks.billed_at − due_at (database clock), p50/p99 as a
 *                    fraction of the interval; a tick not billed when read counts as late
 *                    as the read.
 *             cancel --cancels streams cancelled the way the API does (signal, then the
 *                    workflow's result), --cancel-rate per second, while the others bill
 *                    on: cancel → receipt p50/p99 as a fraction of the interval. The other
 *                    streams are then closed without measuring (workflow terminated, the
 *                    ledger's closeStream), which is quicker than thousands of cancels.
 *   pgbench   TPC-B-like tps on a scratch database of the same server while the clock is
 *             idle (every stream closed): -c = the clock's shard count (a shard bills in
 *             one transaction at a time: one connection), -j min(2, c), -s = c.
 *   capacity  --capacity-streams escrow streams at --capacity-interval-ms, more ticks
 *             than the machine can bill. Opened straight through the ledger by default
 *             (src/ledger/streams.ts openStream, then each clock shard is woken as a
 *             stream workflow would): opening thousands of workflows takes minutes and
 *             would compete with the measurement; `--capacity-open api` opens them
 *             through startStreamWorkflow instead. After a warm-up and a checkpoint, the
 *             ticks whose billing transaction began in a --capacity-seconds window:
 *             billed ticks/s, and the ratio billed ticks/pgbench tps.
 *   verify    after the workers stop, in one snapshot: no (stream, tick) billed twice,
 *             no tick billed before it was due (a close bills up to its own instant), none
 *             due after its stream's close, every stream's paid/ticks_billed/last_tick
 *             agreeing with its ticks, every escrow hold agreeing with its stream, the
 *             balances summing to zero, every cancel receipt agreeing with the database.
 *             `verified: no` exits non-zero.
 *
 * Where the time goes (the other lines): from the workflows' histories, each segment of
 * an open, a bare start and a cancel (server queueing, the worker, the activity) and
 * what the clock's workflows did (billDue time, timers' lateness, workflow tasks);
 * from the worker's pool, the time in each SQL statement, in waiting for a connection
 * and inside transactions outside SQL (the planning in JavaScript), and the deadlocks
 * PostgreSQL reported; CPU of this process, the Temporal server, the bench database's
 * backends and the rest of the machine (on a shared box, the neighbours: the figures
 * move with them). Payer and payee ids are random, as real ones are.
 *
 *   npm run bench:streams -- [--quick] [--only capacity|latency]
 *     [--capacity-streams 5000] [--capacity-interval-ms 100] [--capacity-seconds 20]
 *     [--capacity-warmup-seconds 10] [--capacity-open ledger|api]
 *     [--latency-streams 2000] [--latency-interval-ms 1000] [--latency-seconds 30]
 *     [--cancels 100] [--cancel-rate 20] [--open-concurrency 50] [--bare-starts 500]
 *     [--plain-starts 0] [--streams-per-pair 10] [--shards 2] [--rows-max 2000]
 *     [--pool-size 10] [--pgbench-clients N] [--pgbench-seconds 20] [--pgbench-scale N]
 *     [--timer-shift-ms MS] [--dynamic-config KEY=VALUE ...] [--database-url URL] [--json]
 *
 * Each figure prints on its own line as `name: value`; with --json, stdout holds one
 * JSON object and nothing else (progress goes to stderr). The databases sluice_bench_*
 * are dropped and the dev server stopped at the end, also on failure or Ctrl-C.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { Client, Connection, WithStartWorkflowOperation, WorkflowUpdateRPCTimeoutOrCancelledError } from '@temporalio/client';
import { tsToMs } from '@temporalio/common/lib/time';
import { bundleWorkflowCode, NativeConnection, Worker } from '@temporalio/worker';
import { InvalidArgumentError, Option } from 'commander';
import pg from 'pg';
import { migrateLedger } from '../src/ledger/setup';
import { createPool, withDatabase, type Pool } from '../src/db/pool';
import { BILLING_ROWS_MAX_DEFAULT, BILLING_SHARDS_DEFAULT, billingClockWorkflowId } from '../src/domain/billing';
import { streamWorkflowId, type StreamReceipt, type StreamRequest } from '../src/domain/streams';
import { createAccount } from '../src/ledger/accounts';
import { closeStream, openStream } from '../src/ledger/streams';
import { deposit } from '../src/ledger/transfers';
import { startDevServer, PRECISE_TIMERS, type DevServer } from '../src/temporal/devServer';
import { startStreamWorkflow } from '../src/temporal/streams';
import { resolveTool, TEMPORAL_CLI } from '../src/temporal/tools';
import { createWorker } from '../src/worker';
import { freePort } from '../src/dev/ports';
import { billingDueSignal, cancelStreamSignal } from '../workflows/definitions';
import { bareOpenedUpdate, bareTickWorkflow, bareWorkflowId, type BareActivities } from './bareTickWorkflow';
import { benchDatabaseName, createBenchDatabase, dropBenchDatabase, onServer } from './support/database';
import { mapConcurrently, type Quantiles, quantiles } from './support/measure';
import { benchCommand, integerAtLeast, parseBenchOptions, type BenchOptions } from './support/options';
import { runPgbench, type PgbenchRun } from './support/pgbench';
import { log, phaseProgress, phasesDone, runBench } from './support/runner';
import { endOfRun, interruptibleRun, killWithThisProcess, stopTemporal } from './support/stack';

// A tick bills 1 unit; the escrow (maxTotal) is far above what a run bills, so no
// stream completes on its own. Each payer is funded for all its escrows.
const RATE_PER_TICK = 1;
const MAX_TOTAL = 1_000_000;
const NAMESPACE = 'default';
/** The bare workflows' tick interval: after tick 1 they only wait (a day). */
const BARE_INTERVAL_MS = 86_400_000;

// ------------------------------------------------------------------ options

interface Options extends BenchOptions {
  quick: boolean;
  only?: 'capacity' | 'latency';
  capacityStreams: number;
  capacityIntervalMs: number;
  capacitySeconds: number;
  capacityWarmupSeconds: number;
  capacityOpen: 'ledger' | 'api';
  latencyStreams: number;
  latencyIntervalMs: number;
  latencySeconds: number;
  cancels: number;
  cancelRate: number;
  openConcurrency: number;
  bareStarts: number;
  plainStarts: number;
  streamsPerPair: number;
  shards: number;
  rowsMax: number;
  poolSize: number;
  pgbenchClients?: number;
  pgbenchSeconds: number;
  pgbenchScale?: number;
  timerShiftMs?: number;
  dynamicConfig: Record<string, unknown>;
}

/** --quick: a smoke run of about a minute (each option given explicitly still wins). */
const QUICK: Partial<Options> = {
  capacityStreams: 1000,
  capacitySeconds: 8,
  capacityWarmupSeconds: 4,
  latencyStreams: 200,
  bareStarts: 200,
  latencySeconds: 8,
  cancels: 30,
  pgbenchSeconds: 8,
};

function parseOptions(): Options {
  return parseBenchOptions<Options>(
    benchCommand('bench:streams', 'billing clock: billed ticks/s against pgbench tps, tick lag and cancel latency, stream opens against bare workflow starts')
      .option('--quick', 'a small smoke run (~1 minute)', false)
      .addOption(new Option('--only <phase>', 'run one phase only').choices(['capacity', 'latency']))
      .option('--capacity-streams <n>', 'streams offered to the capacity phase', integerAtLeast(1), 5000)
      .option('--capacity-interval-ms <n>', "capacity streams' tick interval (the API's lower bound is 100)", integerAtLeast(100), 100)
      .option('--capacity-seconds <n>', 'capacity measurement window', integerAtLeast(1), 20)
      .option('--capacity-warmup-seconds <n>', 'billing before the capacity window opens', integerAtLeast(0), 10)
      .addOption(new Option('--capacity-open <how>', 'ledger: openStream straight on the database, then wake the clocks; api: startStreamWorkflow (the real path)').choices(['ledger', 'api']).default('ledger'))
      .option('--latency-streams <n>', 'streams of the latency phase (and bare workflows)', integerAtLeast(1), 2000)
      .option('--latency-interval-ms <n>', "latency streams' tick interval", integerAtLeast(100), 1000)
      .option('--latency-seconds <n>', 'tick lag measurement window', integerAtLeast(1), 30)
      .option('--cancels <n>', 'streams cancelled with their cancel → receipt time measured', integerAtLeast(1), 100)
      .option('--cancel-rate <n>', 'measured cancels started per second', integerAtLeast(1), 20)
      .option('--open-concurrency <n>', 'update-with-start calls in flight (stream opens and bare starts alike)', integerAtLeast(1), 50)
      // the ratio compares the bare starts with as many of the first stream opens
      .option('--bare-starts <n>', 'bare workflows started (at most --latency-streams)', integerAtLeast(1), 500)
      .option('--plain-starts <n>', 'plain workflow.start calls of a bare workflow, for context (0: none)', integerAtLeast(0), 0)
      // Every billing transaction locks the accounts of its streams: streams sharing payers
      // and payees make shards wait on each other. By default each group of 10 streams has
      // a payer and a payee of its own; stream i belongs to group i % groups.
      .option('--streams-per-pair <n>', 'streams sharing one payer and one payee', integerAtLeast(1), 10)
      .option('--shards <n>', "billing clock shards (SLUICE_BILLING_SHARDS)", integerAtLeast(1), BILLING_SHARDS_DEFAULT)
      .option('--rows-max <n>', 'ticks one billing transaction writes at most (SLUICE_BILLING_ROWS_MAX)', integerAtLeast(1), BILLING_ROWS_MAX_DEFAULT)
      // createPool's default max, as `sluice worker` runs
      .option('--pool-size <n>', "the worker's PostgreSQL pool size", integerAtLeast(1), 10)
      .option('--pgbench-clients <n>', 'pgbench -c (default: the shard count)', integerAtLeast(1))
      .option('--pgbench-seconds <n>', 'pgbench -T', integerAtLeast(1), 20)
      .option('--pgbench-scale <n>', 'pgbench -i -s (default: the client count)', integerAtLeast(1))
      .option('--timer-shift-ms <n>', "the dev server's history.timerProcessorMaxTimeShift (default: startDevServer's, 10 ms)", integerAtLeast(1))
      // e.g. --dynamic-config history.timerProcessorMaxPollRPS=1000 (the value is JSON if it parses, else a string)
      .option('--dynamic-config <key=value>', 'a dynamic config value for the dev server (repeatable)', (v: string, acc: Record<string, unknown>) => {
        const eq = v.indexOf('=');
        if (eq <= 0) throw new InvalidArgumentError('expected KEY=VALUE');
        const raw = v.slice(eq + 1);
        let value: unknown = raw;
        try {
          value = JSON.parse(raw);
        } catch {
          // a plain string, e.g. 10ms
        }
        return { ...acc, [v.slice(0, eq)]: value };
      }, {}),
    (o, command) => {
      if (!o.quick) return;
      for (const [key, value] of Object.entries(QUICK)) {
        if (command.getOptionValueSource(key) === 'default') (o as unknown as Record<string, unknown>)[key] = value;
      }
    },
  );
}

// ------------------------------------------------------------------ instrumentation

/** The bare workflows' no-op activities: every tick 1 that ran, by workflow id. */
const bareTicked = new Set<string>();
const bareActivities: BareActivities = {
  async noopTick(id) {
    bareTicked.add(id);
    return Date.now();
  },
  async noopClose() {
    return Date.now();
  },
};

/**
 * Time spent in each SQL statement of the worker's pool (client side: sent to
 * answered), by statement name (or first word), while `sqlRecording` is on.
 */
const sqlTime = new Map<string, { count: number; ms: number }>();
let sqlRecording = false;
/** Statements of the worker's pool that PostgreSQL ended with deadlock_detected (withTransaction retries them). */
let deadlocks = 0;

function instrumentPool(pool: Pool): void {
  // waiting for a free connection of the pool, as its own line ('pool wait')
  const connect = pool.connect.bind(pool) as (...args: unknown[]) => unknown;
  (pool as unknown as { connect: (...args: unknown[]) => unknown }).connect = (...args: unknown[]) => {
    if (!sqlRecording) return connect(...args);
    const t = performance.now();
    const done = () => {
      const w = sqlTime.get('pool wait') ?? { count: 0, ms: 0 };
      w.count++;
      w.ms += performance.now() - t;
      sqlTime.set('pool wait', w);
    };
    const cb = args[0];
    if (typeof cb === 'function') {
      return connect((...cbArgs: unknown[]) => {
        done();
        return (cb as (...a: unknown[]) => unknown)(...cbArgs);
      });
    }
    const result = connect() as Promise<unknown>;
    result.then(done, done);
    return result;
  };
  pool.on('connect', (client) => {
    const query = client.query.bind(client) as (...args: unknown[]) => unknown;
    // the transaction this connection is in (begin → commit): its span, and the time in statements
    let txn: { start: number; sqlMs: number } | undefined;
    const add = (name: string, ms: number) => {
      const s = sqlTime.get(name) ?? { count: 0, ms: 0 };
      s.count++;
      s.ms += ms;
      sqlTime.set(name, s);
    };
    (client as unknown as { query: (...args: unknown[]) => unknown }).query = (...args: unknown[]) => {
      const first = args[0] as string | { name?: string; text?: string };
      const text = typeof first === 'string' ? first : (first?.text ?? '');
      const name = (typeof first === 'object' && first?.name) || text.trim().split(/\s+/)[0]!.toLowerCase();
      const t = performance.now();
      if (name === 'begin') txn = { start: t, sqlMs: 0 };
      const done = (error?: unknown) => {
        const ms = performance.now() - t;
        const code = (error as { code?: string } | undefined)?.code;
        if (code === '40P01') deadlocks++;
        if (!sqlRecording) return;
        add(name, ms);
        if (txn) txn.sqlMs += ms;
        if ((name === 'commit' || name === 'rollback') && txn) {
          const span = performance.now() - txn.start;
          add('(transactions, begin → commit)', span);
          add('(in transactions, outside SQL)', span - txn.sqlMs);
          txn = undefined;
        }
      };
      const last = args[args.length - 1];
      if (typeof last === 'function') {
        // callback style (pool.query): time until the callback
        args[args.length - 1] = (error: unknown, ...rest: unknown[]) => {
          done(error);
          return (last as (...a: unknown[]) => unknown)(error, ...rest);
        };
        return query(...args);
      }
      const result = query(...args) as Promise<unknown>;
      result.then(() => done(), done);
      return result;
    };
  });
}

/** The statements' totals over a window, busiest first, as connection-seconds per second. */
function takeSqlTime(seconds: number): { name: string; count: number; ms: number; busy: number }[] {
  const out = [...sqlTime.entries()].map(([name, s]) => ({ name, count: s.count, ms: s.ms, busy: s.ms / 1000 / seconds }));
  sqlTime.clear();
  return out.sort((a, b) => b.ms - a.ms);
}

/** Samples the pool's wait queue and the database's lock waits while a window is open. */
function startSampler(pool: Pool, monitor: pg.Client, database: string, everyMs = 250) {
  const poolWaiting: number[] = [];
  const lockWaiting: number[] = [];
  const active: number[] = [];
  let stopped = false;
  const done = (async () => {
    while (!stopped) {
      poolWaiting.push(pool.waitingCount);
      const { rows } = await monitor.query<{ lock: number; active: number }>(
        `select count(*) filter (where wait_event_type = 'Lock')::int as lock,
                count(*) filter (where state = 'active')::int as active
           from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()`,
        [database],
      );
      lockWaiting.push(rows[0]!.lock);
      active.push(rows[0]!.active);
      await sleep(everyMs);
    }
  })().catch(() => undefined); // diagnostics only: a failed sample ends the sampling, not the run
  const mean = (v: number[]) => (v.length ? v.reduce((a, b) => a + b, 0) / v.length : Number.NaN);
  return async () => {
    stopped = true;
    await done;
    return {
      poolWaitingMean: mean(poolWaiting),
      lockWaitingMean: mean(lockWaiting),
      lockWaitingMax: Math.max(0, ...lockWaiting),
      activeBackendsMean: mean(active),
    };
  };
}
type Contention = Awaited<ReturnType<ReturnType<typeof startSampler>>>;

// ------------------------------------------------------------------ CPU accounting (Linux /proc, best effort)

const CLOCK_TICKS = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

function processCpuSeconds(pid: number): number | undefined {
  try {
    // the command name (field 2) may hold spaces: count fields after its closing parenthesis
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS; // utime, stime
  } catch {
    return undefined;
  }
}

function machineCpuSeconds(): { busy: number; total: number } | undefined {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
    const total = line.slice(0, 8).reduce((a, b) => a + b, 0);
    const idle = line[3]! + (line[4] ?? 0); // idle + iowait
    return { busy: (total - idle) / CLOCK_TICKS, total: total / CLOCK_TICKS };
  } catch {
    return undefined;
  }
}

interface CpuSnapshot {
  worker: number;
  server?: number;
  backends: Map<number, number>;
  machine?: { busy: number; total: number };
}

async function cpuSnapshot(monitor: pg.Client, database: string, serverPid: number | undefined): Promise<CpuSnapshot> {
  const { rows } = await monitor.query<{ pid: number }>('select pid from pg_stat_activity where datname = $1', [database]);
  const backends = new Map<number, number>();
  for (const { pid } of rows) {
    const sec = processCpuSeconds(pid);
    if (sec !== undefined) backends.set(pid, sec);
  }
  const u = process.cpuUsage();
  return { worker: (u.user + u.system) / 1e6, server: serverPid === undefined ? undefined : processCpuSeconds(serverPid), backends, machine: machineCpuSeconds() };
}

/** Cores used during a window: this process (worker + bench), the dev server, the bench database's backends, the machine, the rest. */
interface CpuUse {
  worker: number;
  temporal: number | null;
  postgres: number | null;
  machine: number | null;
  others: number | null;
  cores: number | null;
}

function cpuUse(a: CpuSnapshot, b: CpuSnapshot, seconds: number): CpuUse {
  let pgSeconds = 0;
  for (const [pid, end] of b.backends) pgSeconds += end - (a.backends.get(pid) ?? 0);
  const worker = (b.worker - a.worker) / seconds;
  const temporal = a.server !== undefined && b.server !== undefined ? (b.server - a.server) / seconds : null;
  const postgres = b.backends.size ? pgSeconds / seconds : null;
  const machine = a.machine && b.machine ? (b.machine.busy - a.machine.busy) / seconds : null;
  const cores = a.machine && b.machine ? Math.round((b.machine.total - a.machine.total) / seconds) : null;
  const others = machine !== null ? machine - worker - (temporal ?? 0) - (postgres ?? 0) : null;
  return { worker, temporal, postgres, machine, others, cores };
}

// ------------------------------------------------------------------ the stack

interface Stack {
  client: Client;
  taskQueue: string;
  bareQueue: string;
  pool: Pool;
  monitor: pg.Client;
  database: string;
  serverPid?: number;
  o: Options;
  signal: AbortSignal;
  runId: string;
}

interface Pair {
  payer: string;
  payee: string;
}

/** `groups` payers and payees, an account each (the party's id), each payer funded for its escrows. */
async function setUpPairs(pool: Pool, prefix: string, streams: number, perPair: number): Promise<Pair[]> {
  const groups = Math.ceil(streams / perPair);
  // random ids, as real ones are: a payer's id sorts before its payee's about half the time
  const id = () => `${prefix}-${randomBytes(6).toString('hex')}`;
  const pairs = Array.from({ length: groups }, () => ({ payer: id(), payee: id() }));
  // parties are not on the measured path: plain SQL, no API keys to mint
  await pool.query('insert into parties (id, name) select id, id from unnest($1::text[]) as id', [pairs.flatMap((p) => [p.payer, p.payee])]);
  await mapConcurrently(pairs, 8, async ({ payer, payee }) => {
    await createAccount(pool, { id: payer, ownerId: payer, kind: 'user' });
    await createAccount(pool, { id: payee, ownerId: payee, kind: 'user' });
  });
  // one after another: every deposit locks the world account
  for (const { payer } of pairs) await deposit(pool, { key: `fund-${payer}`, accountId: payer, amount: (perPair + 1) * MAX_TOTAL });
  return pairs;
}

const streamRequest = (pair: Pair, ref: string, intervalMs: number): StreamRequest => ({
  ref,
  payer: pair.payer,
  payee: pair.payee,
  payerAccountId: pair.payer,
  payeeAccountId: pair.payee,
  ratePerTick: RATE_PER_TICK,
  maxTotal: MAX_TOTAL,
  tickIntervalMs: intervalMs,
  mode: 'escrow',
});

/** The database's clock (opened_at, due_at and billed_at are on it), in ms. */
async function dbNowMs(monitor: pg.Client): Promise<number> {
  const { rows } = await monitor.query<{ ms: number }>('select (extract(epoch from clock_timestamp()) * 1000)::float8 as ms');
  return rows[0]!.ms;
}

async function timed<T>(fn: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const t = performance.now();
  const value = await fn();
  return { value, ms: performance.now() - t };
}

/** A measured window: clocks (database) at both ends, CPU, contention and SQL time. */
async function measuredWindow(s: Stack, seconds: number) {
  const cpuFrom = await cpuSnapshot(s.monitor, s.database, s.serverPid);
  const stopSampler = startSampler(s.pool, s.monitor, s.database);
  const from = await dbNowMs(s.monitor);
  sqlTime.clear();
  sqlRecording = true;
  let contention: Contention;
  try {
    await sleep(seconds * 1000, undefined, { signal: s.signal });
  } finally {
    sqlRecording = false;
    contention = await stopSampler();
  }
  const to = await dbNowMs(s.monitor);
  const windowSeconds = (to - from) / 1000;
  const cpu = cpuUse(cpuFrom, await cpuSnapshot(s.monitor, s.database, s.serverPid), windowSeconds);
  return { from, to, windowSeconds, cpu, contention, sql: takeSqlTime(windowSeconds) };
}

// ------------------------------------------------------------------ histories: where the time goes

/** One history event: its kind (the attributes' name, e.g. `activityTaskScheduled`), time and attributes. */
interface Ev {
  id: string;
  kind: string;
  at: number;
  a: Record<string, unknown>;
}

async function eventsOf(client: Client, workflowId: string, runId?: string): Promise<Ev[]> {
  const history = await client.workflow.getHandle(workflowId, runId).fetchHistory();
  const out: Ev[] = [];
  for (const e of (history.events ?? []) as unknown as Record<string, unknown>[]) {
    // the one attributes field that is set names the event type
    const key = Object.keys(e).find((k) => k.endsWith('EventAttributes') && e[k] != null);
    if (!key) continue;
    out.push({ id: String(e.eventId), kind: key.slice(0, -'EventAttributes'.length), at: tsToMs(e.eventTime as Parameters<typeof tsToMs>[0]), a: e[key] as Record<string, unknown> });
  }
  return out;
}

const activityName = (e: Ev) => (e.a.activityType as { name?: string } | undefined)?.name;

/** What the billing clock's workflows did in a window, from their histories (every run overlapping it). */
interface ClockStats {
  /** billDue activities running at some point of the window, all shards; and those that timed out. */
  activities: number;
  timedOut: number;
  /** billDue execution time (SQL + planning), of those that started and ended in the window. */
  execMs: Quantiles;
  /** Time billDue ran inside the window / (window × shards): how much of the time a shard was billing. */
  execShare: number;
  scheduleToStartMs: Quantiles;
  /** One billDue's completion to the next one's scheduling, no timer between (a workflow task). */
  backToBackGapMs: Quantiles;
  /** A timer's firing past its due time (timerProcessorMaxTimeShift and the server's queues). */
  timerLateMs: Quantiles;
  /** A timer's firing (or a wake-up signal cancelling it) to the next billDue's start: a workflow task, then the dispatch. */
  wakeToActivityMs: Quantiles;
  /** billingDue signals received (stream opens), workflow tasks completed; runs (continue-as-new) seen. */
  signals: number;
  workflowTasks: number;
  runs: number;
}

async function clockStats(s: Stack, fromMs: number, toMs: number): Promise<ClockStats> {
  const exec: number[] = [];
  const schedToStart: number[] = [];
  const gaps: number[] = [];
  const timerLate: number[] = [];
  const wakeToActivity: number[] = [];
  let activities = 0;
  let timedOut = 0;
  let busyMs = 0;
  let signals = 0;
  let workflowTasks = 0;
  let runs = 0;
  const inWindow = (at: number) => at >= fromMs && at < toMs;
  for (let shard = 0; shard < s.o.shards; shard++) {
    const id = billingClockWorkflowId(s.taskQueue, shard, s.o.shards);
    for await (const run of s.client.workflow.list({ query: `WorkflowId = '${id}'` })) {
      if (run.startTime.getTime() > toMs || (run.closeTime && run.closeTime.getTime() < fromMs)) continue;
      runs++;
      const scheduled = new Map<string, number>();
      const started = new Map<string, number>();
      const timers = new Map<string, { at: number; timeoutMs: number }>();
      let lastCompletion: number | undefined; // a billDue's end, no timer since
      let lastWake: number | undefined;
      const endedIds = new Set<string>();
      const ended = (schedId: string, at: number) => {
        endedIds.add(schedId);
        const startAt = started.get(schedId);
        if (startAt === undefined || startAt > toMs || at < fromMs) return;
        activities++;
        busyMs += Math.min(at, toMs) - Math.max(startAt, fromMs);
        if (startAt >= fromMs && at < toMs) exec.push(at - startAt);
      };
      for (const e of await eventsOf(s.client, id, run.runId)) {
        switch (e.kind) {
          case 'activityTaskScheduled':
            if (activityName(e) !== 'billDue') break;
            scheduled.set(e.id, e.at);
            if (lastCompletion !== undefined && inWindow(e.at)) gaps.push(e.at - lastCompletion);
            lastCompletion = undefined;
            break;
          case 'activityTaskStarted': {
            const sid = String(e.a.scheduledEventId);
            const schedAt = scheduled.get(sid);
            if (schedAt === undefined) break;
            started.set(sid, e.at);
            if (inWindow(e.at)) {
              schedToStart.push(e.at - schedAt);
              if (lastWake !== undefined) wakeToActivity.push(e.at - lastWake);
            }
            lastWake = undefined;
            break;
          }
          case 'activityTaskCompleted':
          case 'activityTaskFailed':
          case 'activityTaskTimedOut': {
            const sid = String(e.a.scheduledEventId);
            if (!started.has(sid)) break;
            ended(sid, e.at);
            if (e.kind === 'activityTaskTimedOut' && inWindow(e.at)) timedOut++;
            lastCompletion = e.at;
            break;
          }
          case 'timerStarted':
            timers.set(e.id, { at: e.at, timeoutMs: tsToMs(e.a.startToFireTimeout as Parameters<typeof tsToMs>[0]) });
            lastCompletion = undefined;
            break;
          case 'timerFired': {
            const t = timers.get(String(e.a.startedEventId));
            if (t && inWindow(e.at)) timerLate.push(e.at - (t.at + t.timeoutMs));
            lastWake = e.at;
            break;
          }
          case 'timerCanceled':
            lastWake = e.at; // woken early by a signal
            break;
          case 'workflowExecutionSignaled':
            if (inWindow(e.at)) signals++;
            break;
          case 'workflowTaskCompleted':
            if (inWindow(e.at)) workflowTasks++;
            break;
        }
      }
      // still running at the end of the history (a billDue in flight)
      // a billDue still running when the history was read (after the window) ran through its end
      for (const [sid, startAt] of started) if (!endedIds.has(sid) && startAt < toMs) ended(sid, toMs);
    }
  }
  return {
    activities,
    timedOut,
    execMs: quantiles(exec),
    execShare: busyMs / ((toMs - fromMs) * s.o.shards),
    scheduleToStartMs: quantiles(schedToStart),
    backToBackGapMs: quantiles(gaps),
    timerLateMs: quantiles(timerLate),
    wakeToActivityMs: quantiles(wakeToActivity),
    signals,
    workflowTasks,
    runs,
  };
}

/** A call timed on this process's clock (epoch ms), for one workflow. */
interface Call {
  workflowId: string;
  sentAt: number;
  doneAt: number;
}

/** Each segment of a path, p50/p99 in ms, over the sampled calls. */
type Breakdown = Record<string, Quantiles>;

/**
 * The times of `kinds` in order in a history, each the first of its kind after the
 * previous one (from index `from`); undefined if the history does not have them all.
 */
function chain(ev: Ev[], from: number, kinds: string[]): number[] | undefined {
  const out: number[] = [];
  let i = from;
  for (const kind of kinds) {
    while (i < ev.length && ev[i]!.kind !== kind) i++;
    if (i >= ev.length) return undefined;
    out.push(ev[i]!.at);
    i++;
  }
  return out;
}

/** p50/p99 of each segment over the sampled calls, in insertion order. */
async function breakdown(client: Client, calls: Call[], segmentsOf: (ev: Ev[], c: Call) => Record<string, number> | undefined): Promise<Breakdown> {
  const seg = new Map<string, number[]>();
  await mapConcurrently(calls, 8, async (c) => {
    const s = segmentsOf(await eventsOf(client, c.workflowId), c);
    if (s) for (const [k, v] of Object.entries(s)) seg.set(k, [...(seg.get(k) ?? []), v]);
  });
  return Object.fromEntries([...seg.entries()].map(([k, v]) => [k, quantiles(v)]));
}

const WFT = ['workflowTaskScheduled', 'workflowTaskStarted', 'workflowTaskCompleted'];
const ACT = ['activityTaskScheduled', 'activityTaskStarted', 'activityTaskCompleted'];

/**
 * Where an update-with-start until the first activity's answer spends its time (an
 * open, or a bare start), from the workflow's history: the start reaching the server,
 * the first workflow task waiting for the worker and in it, the activity's dispatch
 * and execution, the second workflow task (which completes the update), the answer back.
 */
function openBreakdown(client: Client, calls: Call[], activity: string): Promise<Breakdown> {
  return breakdown(client, calls, (ev, c) => {
    const t = chain(ev, 0, ['workflowExecutionStarted', ...WFT, ...ACT, ...WFT, 'workflowExecutionUpdateCompleted']);
    if (!t) return undefined;
    const [started, , w1s, w1c, as, ast, ac, , w2s, w2c, updated] = t as [number, number, number, number, number, number, number, number, number, number, number];
    // the workflow's own tasks before anything else happened to it (a cancel, a termination)
    const end = ev.findIndex((e) => e.kind === 'workflowExecutionSignaled' || e.kind === 'workflowExecutionTerminated');
    const tasks = (end < 0 ? ev : ev.slice(0, end)).filter((e) => e.kind === 'workflowTaskCompleted').length;
    return {
      'workflow tasks (count)': tasks,
      'start → workflow started': started - c.sentAt,
      'task 1 queued': w1s - started,
      'task 1 in worker': w1c - w1s,
      'activity dispatch': ast - as,
      [`${activity} execution`]: ac - ast,
      'task 2 queued': w2s - ac,
      'task 2 in worker': w2c - w2s,
      'update completed → answer': c.doneAt - updated,
    };
  });
}

/** Where a cancel spends its time: the signal, the workflow task, closeStream's dispatch and execution, the workflow task that ends the run, the result back. */
function cancelBreakdown(client: Client, calls: Call[]): Promise<Breakdown> {
  return breakdown(client, calls, (ev, c) => {
    const at = ev.findIndex((e) => e.kind === 'workflowExecutionSignaled' && e.a.signalName === 'cancelStream');
    if (at < 0) return undefined;
    const t = chain(ev, at, ['workflowExecutionSignaled', ...WFT, ...ACT, ...WFT, 'workflowExecutionCompleted']);
    if (!t) return undefined;
    const [signaled, , w1s, w1c, as, ast, ac, , w2s, w2c, completed] = t as [number, number, number, number, number, number, number, number, number, number, number];
    return {
      'signal → signaled': signaled - c.sentAt,
      'task 1 queued': w1s - signaled,
      'task 1 in worker': w1c - w1s,
      'closeStream dispatch': ast - as,
      'closeStream execution': ac - ast,
      'task 2 queued': w2s - ac,
      'task 2 in worker': w2c - w2s,
      'run completed → result': c.doneAt - completed,
    };
  });
}

/** Every k-th of the calls, at most n. */
const sample = <T>(items: T[], n: number) => items.filter((_, i) => i % Math.max(1, Math.floor(items.length / n)) === 0).slice(0, n);

// ------------------------------------------------------------------ latency phase

interface StartRate {
  count: number;
  seconds: number;
  perSecond: number;
  latencyMs: Quantiles;
}

const rateOf = (calls: Call[], seconds: number): StartRate => ({
  count: calls.length,
  seconds,
  perSecond: calls.length / seconds,
  latencyMs: quantiles(calls.map((c) => c.doneAt - c.sentAt)),
});

/** Calls made again after an RPC deadline (an overloaded server), by kind. */
const retried: Record<string, number> = {};
const CALL_ATTEMPTS = 5;

/**
 * Runs `fn` and records when it was sent and answered (this process's clock, epoch ms).
 * On an overloaded server an update-with-start or a result can end in an RPC deadline
 * ("context deadline exceeded") although the server went on: the call is made again,
 * as a client of the API would with the same ref (update-with-start USE_EXISTING
 * attaches to the run, a signal is idempotent here, a result is read again); the time
 * counted is the client's, retries included.
 */
async function call<T>(workflowId: string, fn: () => Promise<T>, kind = 'call'): Promise<{ value: T; call: Call }> {
  const sentAt = Date.now();
  for (let attempt = 1; ; attempt++) {
    try {
      const value = await fn();
      return { value, call: { workflowId, sentAt, doneAt: Date.now() } };
    } catch (error) {
      const message = error instanceof Error ? `${error.message} ${(error.cause as Error | undefined)?.message ?? ''}` : String(error);
      const deadline = error instanceof WorkflowUpdateRPCTimeoutOrCancelledError || /deadline exceeded|context canceled/i.test(message);
      if (!deadline || attempt >= CALL_ATTEMPTS) throw error;
      retried[kind] = (retried[kind] ?? 0) + 1;
    }
  }
}

/** Bare workflows by update-with-start until their no-op tick 1 answered: the same call shape as an open. */
async function bareStarts(s: Stack, n: number, tag: string): Promise<{ rate: StartRate; calls: Call[] }> {
  const ids = Array.from({ length: n }, (_, i) => `${s.runId}-${tag}-${i}`);
  const t = performance.now();
  const calls = await mapConcurrently(ids, s.o.openConcurrency, async (id) =>
    (
      await call(
        bareWorkflowId(id),
        () =>
          s.client.workflow.executeUpdateWithStart(bareOpenedUpdate, {
            startWorkflowOperation: new WithStartWorkflowOperation(bareTickWorkflow, {
              workflowId: bareWorkflowId(id),
              taskQueue: s.bareQueue,
              args: [{ id, tickIntervalMs: BARE_INTERVAL_MS }],
              workflowIdConflictPolicy: 'USE_EXISTING',
            }),
          }),
        'bare start',
      )
    ).call,
  );
  return { rate: rateOf(calls, (performance.now() - t) / 1000), calls };
}

/** Plain workflow.start of a bare workflow (returns once the server has the start): context, not the baseline. */
async function plainStarts(s: Stack, n: number): Promise<StartRate & { allTickedSeconds: number }> {
  const ids = Array.from({ length: n }, (_, i) => `${s.runId}-plain-${i}`);
  const t = performance.now();
  const calls = await mapConcurrently(ids, s.o.openConcurrency, async (id) =>
    (await call(bareWorkflowId(id), () => s.client.workflow.start(bareTickWorkflow, { workflowId: bareWorkflowId(id), taskQueue: s.bareQueue, args: [{ id, tickIntervalMs: BARE_INTERVAL_MS }] }), 'plain start')).call,
  );
  const seconds = (performance.now() - t) / 1000;
  // the worker still runs their tick 1: wait for it, so the next phase starts quiet
  const deadline = performance.now() + 120_000;
  while (ids.some((id) => !bareTicked.has(id)) && performance.now() < deadline) await sleep(50);
  return { ...rateOf(calls, seconds), allTickedSeconds: (performance.now() - t) / 1000 };
}

async function openThroughApi(s: Stack, refs: string[], pairs: Pair[], intervalMs: number): Promise<{ rate: StartRate; calls: Call[] }> {
  const t = performance.now();
  const opened = await mapConcurrently(refs, s.o.openConcurrency, (ref, i) =>
    // the way POST /v1/streams opens one (update-with-start, search attributes, the worker's shard count)
    call(streamWorkflowId(ref), async () => (await startStreamWorkflow(s.client, s.taskQueue, streamRequest(pairs[i % pairs.length]!, ref, intervalMs), { billingShards: s.o.shards })).opened, 'open'),
  );
  const seconds = (performance.now() - t) / 1000;
  const bad = opened.filter((r) => r.value.status !== 'STREAMING');
  if (bad.length) throw new Error(`${bad.length} stream(s) did not open: ${JSON.stringify(bad[0]!.value)}`);
  const calls = opened.map((r) => r.call);
  return { rate: rateOf(calls, seconds), calls };
}

async function cancelThroughApi(s: Stack, ref: string, by: string): Promise<{ receipt: StreamReceipt; call: Call }> {
  // src/api/routes/streams.ts cancelOne: signal, then the workflow's result
  const { value, call: c } = await call(
    streamWorkflowId(ref),
    async () => {
      const handle = s.client.workflow.getHandle(streamWorkflowId(ref));
      await handle.signal(cancelStreamSignal, { by, reason: 'bench' }).catch(() => undefined);
      return (await handle.result()) as StreamReceipt;
    },
    'cancel',
  );
  return { receipt: value, call: c };
}

interface LatencyResult {
  streams: number;
  intervalMs: number;
  openConcurrency: number;
  /** Bare starts, and as many of the first stream opens (rate up to the K-th answer). */
  bare: StartRate;
  opensFirst: StartRate;
  ratioOpensBare: number;
  /** All the opens. */
  opens: StartRate;
  plain?: StartRate & { allTickedSeconds: number };
  /** Where an open and a bare start spend their time (a sample of their histories), ms. */
  openPath: Breakdown;
  barePath: Breakdown;
  /** The billing clock's workflow tasks and billingDue signals while the streams opened. */
  openClock: ClockStats;
  /** The worker pool's SQL (and waits for a connection) while the streams opened, connection-seconds per second. */
  openSql: ReturnType<typeof takeSqlTime>;
  /** Deadlocks PostgreSQL reported to the worker's pool (retried by withTransaction) while the streams opened, and in the window. */
  openDeadlocks: number;
  windowDeadlocks: number;
  window: { seconds: number; ticksDue: number; ticksBilled: number; notBilledWhenRead: number };
  /** billed_at − due_at of the ticks due in the window, as a fraction of the interval (and in ms). */
  lag: Quantiles;
  lagMs: Quantiles;
  cancels: { count: number; ratePerSecond: number };
  /** Cancel signal sent to receipt returned, as a fraction of the interval (and in ms). */
  cancel: Quantiles;
  cancelMs: Quantiles;
  cancelPath: Breakdown;
  clock: ClockStats;
  cpu: CpuUse;
  contention: Contention;
  sql: ReturnType<typeof takeSqlTime>;
}

/** Histories sampled for the open and bare-start breakdowns. */
const PATH_SAMPLE = 100;

/** The rate of the first k calls of a run that began at `startedAt`: k over the time to the k-th answer. */
function firstRate(calls: Call[], k: number, startedAt: number): StartRate {
  const first = [...calls].sort((a, b) => a.doneAt - b.doneAt).slice(0, k);
  return rateOf(first, (first[first.length - 1]!.doneAt - startedAt) / 1000);
}

async function latencyPhase(s: Stack, pairs: Pair[], receipts: Map<string, StreamReceipt>, step: (text: string) => void): Promise<LatencyResult> {
  const { o } = s;
  const n = o.latencyStreams;
  const k = Math.min(o.bareStarts, n);
  const intervalMs = o.latencyIntervalMs;

  step(`bare starts: ${k} update-with-start, ${o.openConcurrency} in flight`);
  await s.monitor.query('checkpoint');
  const bare = await bareStarts(s, k, 'bare');
  log(`bare: ${bare.rate.perSecond.toFixed(1)} starts/s (${k} in ${bare.rate.seconds.toFixed(1)} s)`);
  let plain: (StartRate & { allTickedSeconds: number }) | undefined;
  if (o.plainStarts > 0) {
    plain = await plainStarts(s, o.plainStarts);
    log(`plain workflow.start: ${plain.perSecond.toFixed(1)}/s; all ticked after ${plain.allTickedSeconds.toFixed(1)} s`);
  }

  step(`latency: opening ${n} streams at ${intervalMs} ms (startStreamWorkflow, ${o.openConcurrency} in flight)`);
  await s.monitor.query('checkpoint');
  const refs = Array.from({ length: n }, (_, i) => `lat-${s.runId}-${i}`);
  const payerOf = new Map(refs.map((ref, i) => [ref, pairs[i % pairs.length]!.payer]));
  sqlTime.clear();
  sqlRecording = true;
  const deadlocksBefore = deadlocks;
  const openStartedAt = Date.now();
  const opened = await openThroughApi(s, refs, pairs, intervalMs).finally(() => {
    sqlRecording = false;
  });
  const openSql = takeSqlTime(opened.rate.seconds);
  const openDeadlocks = deadlocks - deadlocksBefore;
  const openClock = await clockStats(s, openStartedAt, Date.now());
  const opensFirst = firstRate(opened.calls, k, openStartedAt);
  log(`opens: ${opened.rate.perSecond.toFixed(1)}/s (${n} in ${opened.rate.seconds.toFixed(1)} s; the first ${k}: ${opensFirst.perSecond.toFixed(1)}/s); settling ${2 * intervalMs} ms`);
  await sleep(2 * intervalMs, undefined, { signal: s.signal });

  step(`latency: tick lag over ${o.latencySeconds} s`);
  const windowDeadlocksBefore = deadlocks;
  const w = await measuredWindow(s, o.latencySeconds);
  // the ticks due in the window, read once they should all be billed
  await sleep(Math.max(1000, intervalMs), undefined, { signal: s.signal });
  const windowDeadlocks = deadlocks - windowDeadlocksBefore;
  const { rows: lagRows } = await s.monitor.query<{ lag_ms: number }>(
    `select (extract(epoch from billed_at - due_at) * 1000)::float8 as lag_ms from stream_ticks
      where stream_ref = any($1) and tick > 1 and due_at >= to_timestamp($2 / 1000.0) and due_at < to_timestamp($3 / 1000.0)`,
    [refs, w.from, w.to],
  );
  const { rows: openedRows } = await s.monitor.query<{ opened_ms: string; read_ms: number }>(
    `select epoch_ms(opened_at)::text as opened_ms, (extract(epoch from clock_timestamp()) * 1000)::float8 as read_ms from streams where ref = any($1)`,
    [refs],
  );
  // tick k is due at opened + (k − 1) × interval (epoch_ms, as the clock computes it)
  const ticksDue = openedRows.reduce((a, r) => {
    const at = Number(r.opened_ms);
    return a + Math.max(0, Math.ceil((w.to - at) / intervalMs) - Math.max(1, Math.ceil((w.from - at) / intervalMs)));
  }, 0);
  const lagsMs = lagRows.map((r) => r.lag_ms);
  const missing = Math.max(0, ticksDue - lagsMs.length);
  // a tick not billed when read is at least as late as the read
  const readMs = openedRows[0]?.read_ms ?? w.to;
  for (let i = 0; i < missing; i++) lagsMs.push(readMs - w.to);
  const clock = await clockStats(s, w.from, w.to);
  const lagMs = quantiles(lagsMs);
  log(`tick lag p50 ${lagMs.p50.toFixed(0)} ms, p99 ${lagMs.p99.toFixed(0)} ms (${lagRows.length} ticks, ${missing} not billed when read)`);

  step(`latency: cancelling ${o.cancels} streams, ${o.cancelRate}/s`);
  const measured = sample(refs, o.cancels);
  const t0 = performance.now();
  const cancelled = await Promise.all(
    measured.map(async (ref, i) => {
      await sleep(Math.max(0, t0 + (i * 1000) / o.cancelRate - performance.now()));
      return cancelThroughApi(s, ref, payerOf.get(ref)!);
    }),
  );
  for (const [i, c] of cancelled.entries()) receipts.set(measured[i]!, c.receipt);
  const cancelMs = quantiles(cancelled.map((c) => c.call.doneAt - c.call.sentAt));
  log(`cancel p50 ${cancelMs.p50.toFixed(0)} ms, p99 ${cancelMs.p99.toFixed(0)} ms`);

  log('reading histories: where opens, bare starts and cancels spend their time');
  const [openPath, barePath, cancelPath] = await Promise.all([
    openBreakdown(s.client, sample(opened.calls, PATH_SAMPLE), 'openStream'),
    openBreakdown(s.client, sample(bare.calls, PATH_SAMPLE), 'noopTick'),
    cancelBreakdown(s.client, cancelled.map((c) => c.call)),
  ]);

  // cleanup, not measured: the other workflows terminated, their streams closed straight in the ledger
  const rest = refs.filter((r) => !receipts.has(r));
  log(`closing the other ${rest.length} (terminate, then the ledger's closeStream; not measured)`);
  // a termination lost to an RPC deadline leaves a workflow waiting; its stream is closed all the same
  await mapConcurrently(rest, o.openConcurrency, (ref) => s.client.workflow.getHandle(streamWorkflowId(ref)).terminate('bench: cleanup').catch(() => undefined));
  await mapConcurrently(rest, o.poolSize, (ref) => closeStream(s.pool, { ref, reason: 'cancelled', closedBy: payerOf.get(ref)! }));

  const frac = (q: Quantiles): Quantiles => ({ ...q, p50: q.p50 / intervalMs, p99: q.p99 / intervalMs, max: q.max / intervalMs });
  return {
    streams: n,
    intervalMs,
    openConcurrency: o.openConcurrency,
    bare: bare.rate,
    opensFirst,
    ratioOpensBare: opensFirst.perSecond / bare.rate.perSecond,
    opens: opened.rate,
    plain,
    openPath,
    barePath,
    openClock,
    openSql,
    openDeadlocks,
    windowDeadlocks,
    window: { seconds: w.windowSeconds, ticksDue, ticksBilled: lagRows.length, notBilledWhenRead: missing },
    lag: frac(lagMs),
    lagMs,
    cancels: { count: measured.length, ratePerSecond: o.cancelRate },
    cancel: frac(cancelMs),
    cancelMs,
    cancelPath,
    clock,
    cpu: w.cpu,
    contention: w.contention,
    sql: w.sql,
  };
}

// ------------------------------------------------------------------ capacity phase

interface CapacityResult {
  streams: number;
  intervalMs: number;
  offeredTicksPerSecond: number;
  openedVia: 'ledger' | 'api';
  openSeconds: number;
  warmupSeconds: number;
  windowSeconds: number;
  ticks: number;
  billedTicksPerSecond: number;
  /** Ticks due but not billed when the window closed, and as seconds of the offered load. */
  backlogTicks: number;
  backlogSeconds: number;
  saturated: boolean;
  /** Billing transactions that wrote ticks in the window (tick-batch-write statements), and ticks per transaction. */
  transactions: number;
  ticksPerTransaction: number;
  /** Deadlocks PostgreSQL reported to the worker's pool in the window (retried by withTransaction). */
  deadlocks: number;
  clock: ClockStats;
  cpu: CpuUse;
  contention: Contention;
  sql: ReturnType<typeof takeSqlTime>;
}

async function capacityPhase(s: Stack, pairs: Pair[], step: (text: string) => void): Promise<CapacityResult> {
  const { o } = s;
  const n = o.capacityStreams;
  const refs = Array.from({ length: n }, (_, i) => `cap-${s.runId}-${i}`);
  step(`capacity: opening ${n} streams at ${o.capacityIntervalMs} ms (${o.capacityOpen === 'ledger' ? 'ledger openStream' : 'startStreamWorkflow'})`);
  const t = performance.now();
  if (o.capacityOpen === 'api') {
    await openThroughApi(s, refs, pairs, o.capacityIntervalMs);
  } else {
    const opened = await mapConcurrently(refs, o.poolSize, (ref, i) => openStream(s.pool, streamRequest(pairs[i % pairs.length]!, ref, o.capacityIntervalMs)));
    const bad = opened.filter((r) => r.status !== 'STREAMING');
    if (bad.length) throw new Error(`${bad.length} stream(s) did not open: ${JSON.stringify(bad[0])}`);
    // no stream workflow signals the clocks: wake each shard as one would
    await Promise.all(
      Array.from({ length: o.shards }, (_, shard) => s.client.workflow.getHandle(billingClockWorkflowId(s.taskQueue, shard, o.shards)).signal(billingDueSignal, Date.now())),
    );
  }
  const openSeconds = (performance.now() - t) / 1000;
  const wokeAt = Date.now();
  log(`capacity: ${n} open after ${openSeconds.toFixed(1)} s; warming up ${o.capacityWarmupSeconds} s`);
  await sleep(o.capacityWarmupSeconds * 1000, undefined, { signal: s.signal });
  await s.monitor.query('checkpoint'); // as pgbench: the window does not pay for the setup's dirty pages

  step(`capacity: billed ticks over ${o.capacitySeconds} s`);
  const deadlocksBefore = deadlocks;
  const w = await measuredWindow(s, o.capacitySeconds);
  const windowDeadlocks = deadlocks - deadlocksBefore;
  const backlog = async () => {
    const { rows } = await s.monitor.query<{ ticks: string }>(
      `select coalesce(sum(greatest(0, (epoch_ms(now()) - next_due_ms) / tick_interval_ms + 1)), 0)::text as ticks
         from streams where next_due_ms is not null and ref like $1`,
      [`cap-${s.runId}-%`],
    );
    return Number(rows[0]!.ticks);
  };
  const backlogTicks = await backlog();
  // billing transactions that began in the window commit a moment later
  await sleep(2000, undefined, { signal: s.signal });
  const { rows } = await s.monitor.query<{ n: number }>(
    `select count(*)::int as n from stream_ticks where billed_at >= to_timestamp($1 / 1000.0) and billed_at < to_timestamp($2 / 1000.0) and stream_ref like $3`,
    [w.from, w.to, `cap-${s.runId}-%`],
  );
  const ticks = rows[0]!.n;
  const offered = (n * 1000) / o.capacityIntervalMs;
  // a billDue runs up to 20 transactions and may outlast the window (its history shows it once it ends): from the wake-up on
  const clock = await clockStats(s, wokeAt, Date.now());
  log(`capacity: ${(ticks / w.windowSeconds).toFixed(0)} billed ticks/s of ${offered.toFixed(0)} offered; backlog ${backlogTicks} ticks`);
  return {
    streams: n,
    intervalMs: o.capacityIntervalMs,
    offeredTicksPerSecond: offered,
    openedVia: o.capacityOpen,
    openSeconds,
    warmupSeconds: o.capacityWarmupSeconds,
    windowSeconds: w.windowSeconds,
    ticks,
    billedTicksPerSecond: ticks / w.windowSeconds,
    backlogTicks,
    backlogSeconds: backlogTicks / offered,
    // behind by more than a tick interval of the offered load: the clock could not keep up
    saturated: backlogTicks > n,
    deadlocks: windowDeadlocks,
    transactions: w.sql.find((q) => q.name === 'tick-batch-write')?.count ?? 0,
    ticksPerTransaction: ticks / Math.max(1, w.sql.find((q) => q.name === 'tick-batch-write')?.count ?? 0),
    clock,
    cpu: w.cpu,
    contention: w.contention,
    sql: w.sql,
  };
}

// ------------------------------------------------------------------ verification

interface Verification {
  streams: number;
  openLatencyStreams: number;
  streamTicks: number;
  tickTransfers: number;
  duplicateTicks: number;
  /** Ticks billed before they were due: after both the billing transaction's start and the stream's close. */
  billedBeforeDue: number;
  /** Ticks of a closed stream due after its close. */
  dueAfterClose: number;
  streamMismatches: number;
  holdMismatches: number;
  balanceSum: string;
  receiptMismatches: number;
  ok: boolean;
}

async function verify(monitor: pg.Client, runId: string, receipts: Map<string, StreamReceipt>): Promise<Verification> {
  // one statement: one snapshot, whatever is still committing. A close bills what is due
  // by its own instant (closed_at, clock_timestamp) with the transaction's start as
  // billed_at: a tick is early only if it was due after both.
  const { rows } = await monitor.query<Omit<Verification, 'receiptMismatches' | 'ok'>>(
    `with t as (select k.stream_ref, sum(k.amount) as paid, count(*) as n, max(k.tick) as max_tick,
                       count(*) filter (where k.due_at > greatest(k.billed_at, s.closed_at)) as early,
                       count(*) filter (where k.due_at > s.closed_at) as after_close
                  from stream_ticks k join streams s on s.ref = k.stream_ref group by k.stream_ref)
     select (select count(*) from streams)::int as streams,
            (select count(*) from streams where ref like $1 and status = 'open')::int as "openLatencyStreams",
            (select count(*) from stream_ticks)::bigint as "streamTicks",
            (select count(*) from transfers where kind = 'stream_tick')::bigint as "tickTransfers",
            (select count(*) from (select 1 from transfers where kind = 'stream_tick' group by stream_ref, tick having count(*) > 1) d)::int as "duplicateTicks",
            (select coalesce(sum(early), 0) from t)::bigint as "billedBeforeDue",
            (select coalesce(sum(after_close), 0) from t)::bigint as "dueAfterClose",
            (select count(*) from streams s left join t on t.stream_ref = s.ref
              where s.paid <> coalesce(t.paid, 0) or s.ticks_billed <> coalesce(t.n, 0) or s.last_tick < coalesce(t.max_tick, 0))::int as "streamMismatches",
            (select count(*) from streams s join holds h on h.id = s.hold_id
              where s.mode = 'escrow' and (h.captured <> s.paid or (s.status = 'closed' and h.captured + h.released <> h.amount)))::int as "holdMismatches",
            (select coalesce(sum(balance), 0)::text from accounts) as "balanceSum"`,
    [`lat-${runId}-%`],
  );
  const v = rows[0]!;
  if (v.billedBeforeDue > 0 || v.dueAfterClose > 0) {
    const { rows: early } = await monitor.query(
      `select k.stream_ref, k.tick, k.due_at, k.billed_at, s.opened_at, s.closed_at, s.tick_interval_ms
         from stream_ticks k join streams s on s.ref = k.stream_ref
        where k.due_at > greatest(k.billed_at, s.closed_at) or k.due_at > s.closed_at order by k.billed_at limit 5`,
    );
    log(`ticks billed early, e.g.: ${JSON.stringify(early)}`);
  }
  const { rows: db } = await monitor.query<{ ref: string; paid: number; ticks: number }>(
    'select ref, paid, ticks_billed as ticks from streams where ref = any($1)',
    [[...receipts.keys()]],
  );
  const byRef = new Map(db.map((r) => [r.ref, r]));
  const receiptMismatches = [...receipts.values()].filter((r) => {
    const d = byRef.get(r.ref);
    return r.status !== 'CONFIRMED' || r.reason !== 'cancelled' || !d || d.paid !== r.totalPaid || d.ticks !== r.ticks;
  }).length;
  const ok =
    v.duplicateTicks === 0 &&
    v.tickTransfers === v.streamTicks &&
    v.billedBeforeDue === 0 &&
    v.dueAfterClose === 0 &&
    v.streamMismatches === 0 &&
    v.holdMismatches === 0 &&
    v.openLatencyStreams === 0 &&
    v.balanceSum === '0' &&
    receiptMismatches === 0;
  return { ...v, receiptMismatches, ok };
}

// ------------------------------------------------------------------ report

interface Report {
  temporalCli: string;
  postgresVersion: string;
  /** The dev server's dynamic config: startDevServer's, then the bench's options. */
  devServerConfig: Record<string, unknown>;
  shards: number;
  rowsMax: number;
  poolSize: number;
  streamsPerPair: number;
  /** Cores busy on the machine in the 2 s before the run (neighbours). */
  machineBusyBeforeCores: number | null;
  capacity?: CapacityResult;
  pgbench?: PgbenchRun;
  ratioTicksPgbench?: number;
  latency?: LatencyResult;
  verification: Verification;
  /** Calls made again after an RPC deadline (an overloaded server), by kind. */
  retriedCalls: Record<string, number>;
  targets: Record<string, { value: number; target: string; met: boolean }>;
}

const fx = (n: number | null | undefined, digits: number) => (n === null || n === undefined || !Number.isFinite(n) ? 'n/a' : n.toFixed(digits));
const msq = (q: Quantiles) => `p50 ${fx(q.p50, 0)} ms, p99 ${fx(q.p99, 0)} ms, max ${fx(q.max, 0)} ms (n=${q.count})`;
const cpuText = (c: CpuUse) =>
  `bench+worker ${fx(c.worker, 2)}, temporal ${fx(c.temporal, 2)}, postgres ${fx(c.postgres, 2)}, others ${fx(c.others, 2)}; machine ${fx(c.machine, 2)} of ${c.cores ?? 'n/a'} cores`;
const sqlText = (sql: ReturnType<typeof takeSqlTime>) =>
  sql.slice(0, 8).map((q) => `${q.name} ${fx(q.busy, 2)} (${q.count}x, ${fx(q.ms / Math.max(1, q.count), 1)} ms)`).join(', ') || 'n/a';
const clockText = (c: ClockStats) =>
  `${c.activities} billDue activities (${c.runs} runs, ${c.timedOut} timed out), exec ${msq(c.execMs)}; ` +
  `shards busy in billDue ${fx(c.execShare * 100, 0)}% of the window; schedule-to-start p50 ${fx(c.scheduleToStartMs.p50, 0)} ms p99 ${fx(c.scheduleToStartMs.p99, 0)} ms; ` +
  `back-to-back gap p50 ${fx(c.backToBackGapMs.p50, 0)} ms p99 ${fx(c.backToBackGapMs.p99, 0)} ms (n=${c.backToBackGapMs.count}); ` +
  `timer late p50 ${fx(c.timerLateMs.p50, 0)} ms p99 ${fx(c.timerLateMs.p99, 0)} ms (n=${c.timerLateMs.count}); ` +
  `timer/wake → billDue start p50 ${fx(c.wakeToActivityMs.p50, 0)} ms p99 ${fx(c.wakeToActivityMs.p99, 0)} ms; billingDue signals ${c.signals}`;
const pathText = (b: Breakdown) => Object.entries(b).map(([k, q]) => `${k} ${fx(q.p50, 0)}/${fx(q.p99, 0)}`).join('; ') + ' (ms unless a count, p50/p99)';

function lines(r: Report): [string, string][] {
  const out: [string, string][] = [
    ['temporal cli', r.temporalCli],
    ['postgresql', r.postgresVersion],
    ['dev server dynamic config', JSON.stringify(r.devServerConfig)],
    ['billing clock', `${r.shards} shards, rowsMax ${r.rowsMax}, worker pool ${r.poolSize}, ${r.streamsPerPair} streams per payer/payee pair`],
    ['machine busy before the run', `${fx(r.machineBusyBeforeCores, 2)} cores (neighbours)`],
  ];
  const c = r.capacity;
  if (c) {
    out.push(
      ['capacity streams', `${c.streams} at ${c.intervalMs} ms (offered ${fx(c.offeredTicksPerSecond, 0)} ticks/s)`],
      [
        'capacity opened via',
        c.openedVia === 'ledger'
          ? `ledger (src/ledger/streams.ts openStream, ${fx(c.openSeconds, 1)} s), billing clock workflows only (no stream workflows)`
          : `api (startStreamWorkflow, real stream workflows, ${fx(c.openSeconds, 1)} s)`,
      ],
      ['capacity window', `${fx(c.windowSeconds, 1)} s after ${c.warmupSeconds} s of warm-up and a checkpoint; ${c.ticks} ticks billed`],
      ['billed ticks/s', fx(c.billedTicksPerSecond, 0)],
      ['capacity backlog at window end', `${c.backlogTicks} ticks (${fx(c.backlogSeconds, 1)} s of offered load): ${c.saturated ? 'saturated (the figure is the capacity)' : 'NOT saturated (the figure is a lower bound: offer more)'}`],
      ['capacity transactions', `${c.transactions} billing transactions wrote ticks, ${fx(c.ticksPerTransaction, 0)} ticks each; deadlocks ${c.deadlocks}`],
      [
        'capacity clock (wake-up to read)',
        c.clock.activities > 0
          ? clockText(c.clock)
          : 'no billDue ended since the wake-up: each runs up to 20 transactions (BILLING_ROUNDS_MAX_DEFAULT) back to back, longer than this; see the sql line',
      ],
      ['capacity sql (connection-s/s)', sqlText(c.sql)],
      ['capacity contention', `backends waiting on a lock mean ${fx(c.contention.lockWaitingMean, 2)} max ${c.contention.lockWaitingMax}, active backends mean ${fx(c.contention.activeBackendsMean, 2)}, pool waiters mean ${fx(c.contention.poolWaitingMean, 2)}`],
      ['capacity cpu (cores)', cpuText(c.cpu)],
    );
  }
  if (r.pgbench) {
    out.push(['pgbench', `tpcb-like -c ${r.pgbench.clients} -j ${r.pgbench.threads} -T ${r.pgbench.seconds} -s ${r.pgbench.scale}, scratch database, same server`]);
    out.push(['pgbench clients', String(r.pgbench.clients)]);
    out.push(['pgbench tps', fx(r.pgbench.tps, 0)]);
  }
  if (r.ratioTicksPgbench !== undefined) out.push(['ratio ticks/pgbench', fx(r.ratioTicksPgbench, 2)]);
  const l = r.latency;
  if (l) {
    out.push(
      ['latency streams', `${l.streams} at ${l.intervalMs} ms, opened through startStreamWorkflow, ${l.openConcurrency} calls in flight`],
      ['stream opens/s', `${fx(l.opensFirst.perSecond, 1)} (the first ${l.opensFirst.count}; all ${l.opens.count}: ${fx(l.opens.perSecond, 1)}/s in ${fx(l.opens.seconds, 1)} s)`],
      ['stream open latency', msq(l.opens.latencyMs)],
      ['bare starts/s', `${fx(l.bare.perSecond, 1)} (${l.bare.count}: bench/bareTickWorkflow.ts by update-with-start until its no-op tick 1 answered, ${l.openConcurrency} in flight)`],
      ['bare start latency', msq(l.bare.latencyMs)],
      ...(l.plain ? ([['plain workflow.start/s', `${fx(l.plain.perSecond, 1)} (context: returns before any worker ran; all ${l.plain.count} ticked after ${fx(l.plain.allTickedSeconds, 1)} s)`]] as [string, string][]) : []),
      ['ratio opens/bare starts', fx(l.ratioOpensBare, 2)],
      ['open path', pathText(l.openPath)],
      ['bare start path', pathText(l.barePath)],
      ['clock while opening', `${l.openClock.workflowTasks} workflow tasks, ${l.openClock.signals} billingDue signals (${fx(l.openClock.workflowTasks / l.opens.count, 2)} tasks per open); ${clockText(l.openClock)}`],
      ['open sql (connection-s/s)', sqlText(l.openSql)],
      ['deadlocks while opening', `${l.openDeadlocks} (retried by withTransaction; a billDue failing 5 times is retried by Temporal)`],
      ['tick lag window', `${fx(l.window.seconds, 1)} s, ${l.window.ticksDue} ticks due, ${l.window.ticksBilled} billed, ${l.window.notBilledWhenRead} not billed when read`],
      ['tick lag p50', `${fx(l.lag.p50, 3)} interval`],
      ['tick lag p99', `${fx(l.lag.p99, 3)} interval`],
      ['tick lag (ms)', msq(l.lagMs)],
      ['cancels', `${l.cancels.count} at ${l.cancels.ratePerSecond}/s (signal, then the result), the other streams billing`],
      ['cancel p50', `${fx(l.cancel.p50, 3)} interval`],
      ['cancel p99', `${fx(l.cancel.p99, 3)} interval`],
      ['cancel (ms)', msq(l.cancelMs)],
      ['cancel path', pathText(l.cancelPath)],
      ['latency clock', clockText(l.clock)],
      ['deadlocks in the lag window', String(l.windowDeadlocks)],
      ['latency sql (connection-s/s)', sqlText(l.sql)],
      ['latency cpu (cores)', cpuText(l.cpu)],
    );
  }
  const v = r.verification;
  out.push([
    'books',
    `${v.streams} streams, ${v.streamTicks} ticks; duplicate (stream, tick) ${v.duplicateTicks}; tick transfers ${v.tickTransfers}; billed before due ${v.billedBeforeDue}; due after close ${v.dueAfterClose}; ` +
      `streams disagreeing with their ticks ${v.streamMismatches}; holds disagreeing ${v.holdMismatches}; latency streams left open ${v.openLatencyStreams}; ` +
      `receipts disagreeing ${v.receiptMismatches}; sum of balances ${v.balanceSum}`,
  ]);
  out.push(['calls made again after an RPC deadline', Object.entries(r.retriedCalls).map(([k, n]) => `${k} ${n}`).join(', ') || 'none']);
  out.push(['verified', v.ok ? 'yes' : 'no']);
  for (const [name, t] of Object.entries(r.targets)) out.push([`target ${name}`, `${t.met ? 'met' : 'MISSED'} (${fx(t.value, 3)}, target ${t.target})`]);
  return out;
}

// ------------------------------------------------------------------ main

async function main(): Promise<void> {
  const o = parseOptions();
  const runId = randomBytes(3).toString('hex');
  const name = benchDatabaseName();
  const url = withDatabase(o.databaseUrl, name);
  const scratch = `${name}_pgbench`;
  const runLatency = o.only !== 'capacity';
  const runCapacity = o.only !== 'latency';
  const pgbenchClients = o.pgbenchClients ?? o.shards;

  // Ctrl-C or a kill ends the run and still stops everything and drops the databases
  const run = interruptibleRun();

  // what the machine is doing before we start: on a shared box, the neighbours
  const before = machineCpuSeconds();
  await sleep(2000);
  const after = machineCpuSeconds();
  const busyBefore = before && after ? (after.busy - before.busy) / 2 : null;

  const cli = resolveTool(TEMPORAL_CLI);
  if (!cli.path) throw new Error('the Temporal CLI could not be found or installed (try `npm run tools`)');
  const [server] = await onServer<{ server_version: string }>(o.databaseUrl, 'show server_version');

  let devServer: DevServer | undefined;
  let pool: Pool | undefined;
  let monitor: pg.Client | undefined;
  let worker: Worker | undefined;
  let running: Promise<void> | undefined;
  let workerConnection: { close(): Promise<void> } | undefined;
  let bareWorker: Worker | undefined;
  let bareRunning: Promise<void> | undefined;
  let bareConnection: NativeConnection | undefined;
  let clientConnection: Connection | undefined;
  let bundlePath: string | undefined;
  let created = false;
  let scratchCreated = false;
  try {
    await createBenchDatabase(o.databaseUrl, name);
    created = true;
    log('migrations, payers, payees, deposits');
    await migrateLedger(url);
    pool = createPool(url, o.poolSize);
    instrumentPool(pool);
    const latencyPairs = runLatency ? await setUpPairs(pool, `lat-${runId}`, o.latencyStreams, o.streamsPerPair) : [];
    const capacityPairs = runCapacity ? await setUpPairs(pool, `cap-${runId}`, o.capacityStreams, o.streamsPerPair) : [];
    await pool.query('vacuum analyze');
    // a connection of its own for clocks, sampling and reading: never queued behind the activities
    monitor = new pg.Client({ connectionString: url, application_name: 'sluice-bench-monitor' });
    await monitor.connect();

    const dynamicConfig = { ...(o.timerShiftMs !== undefined && { 'history.timerProcessorMaxTimeShift': `${o.timerShiftMs}ms` }), ...o.dynamicConfig };
    log(`starting an in-memory Temporal dev server (${cli.version})`);
    devServer = await startDevServer({ cliPath: cli.path, port: await freePort(), dynamicConfig });
    killWithThisProcess(devServer);
    if (run.signal.aborted) throw run.signal.reason;

    // one bundle: the real workflows (for createWorker) plus the bare one (its own worker)
    log('bundling the workflows (the real ones and the bare baseline)');
    const quiet = () => undefined;
    const { code } = await bundleWorkflowCode({
      workflowsPath: require.resolve('./workflows'),
      logger: { trace: quiet, debug: quiet, info: quiet, warn: quiet, error: (m: string) => log(m), log: quiet },
    });
    bundlePath = join(tmpdir(), `sluice-bench-streams-${process.pid}-${runId}.js`);
    writeFileSync(bundlePath, code);

    const taskQueue = `bench-streams-${runId}`;
    const bareQueue = `${taskQueue}-bare`;
    log(`worker on ${taskQueue} (createWorker: real activities, ${o.shards} billing clock shards); bare worker on ${bareQueue}`);
    ({ worker, connection: workerConnection } = await createWorker({
      pool,
      address: devServer.address,
      namespace: NAMESPACE,
      taskQueue,
      workflowBundlePath: bundlePath,
      billing: { shards: o.shards, rowsMax: o.rowsMax },
    }));
    running = worker.run();
    bareConnection = await NativeConnection.connect({ address: devServer.address });
    bareWorker = await Worker.create({ connection: bareConnection, namespace: NAMESPACE, taskQueue: bareQueue, activities: bareActivities, workflowBundle: { code } });
    bareRunning = bareWorker.run();
    const ended = Promise.race([endOfRun(running, run.signal), endOfRun(bareRunning, run.signal)]);

    clientConnection = await Connection.connect({ address: devServer.address });
    const stack: Stack = {
      client: new Client({ connection: clientConnection, namespace: NAMESPACE }),
      taskQueue,
      bareQueue,
      pool,
      monitor,
      database: name,
      serverPid: devServer.process.pid,
      o,
      signal: run.signal,
      runId,
    };

    const steps = (runLatency ? 4 : 0) + (runCapacity ? 3 : 0) + 1;
    let done = 0;
    const step = (text: string) => phaseProgress(done++, steps, text);
    const receipts = new Map<string, StreamReceipt>();

    const body = async () => {
      // warm-up: one stream and one bare workflow through every path, the pool's connections open
      log('warm-up: a stream opened and cancelled, a bare workflow started');
      const warmPair = (latencyPairs[0] ?? capacityPairs[0])!;
      const warmRef = `warm-${runId}`;
      await openThroughApi(stack, [warmRef], [warmPair], 1000);
      await bareStarts(stack, 1, 'warm');
      await sleep(1500, undefined, { signal: run.signal });
      receipts.set(warmRef, (await cancelThroughApi(stack, warmRef, warmPair.payer)).receipt);
      const warm = await Promise.all(Array.from({ length: o.poolSize }, () => stack.pool.connect()));
      warm.forEach((c) => c.release());

      const latency = runLatency ? await latencyPhase(stack, latencyPairs, receipts, step) : undefined;
      let pgbench: PgbenchRun | undefined;
      let capacity: CapacityResult | undefined;
      if (runCapacity) {
        step(`pgbench: -c ${pgbenchClients} -T ${o.pgbenchSeconds} on a scratch database (the clock idle)`);
        await createBenchDatabase(o.databaseUrl, scratch);
        scratchCreated = true;
        pgbench = await runPgbench(
          withDatabase(o.databaseUrl, scratch),
          { clients: pgbenchClients, threads: Math.min(2, pgbenchClients), seconds: o.pgbenchSeconds, scale: o.pgbenchScale ?? pgbenchClients },
          run.signal,
        );
        log(`pgbench: ${pgbench.tps.toFixed(0)} tps`);
        await dropBenchDatabase(o.databaseUrl, scratch);
        scratchCreated = false;
        capacity = await capacityPhase(stack, capacityPairs, step);
      }
      step('stopping the workers, verifying the books');
      return { latency, pgbench, capacity };
    };
    const { latency, pgbench, capacity } = await Promise.race([body(), ended]).catch((error: unknown) => {
      log(`failed: ${error instanceof Error ? error.message : String(error)}; stopping everything`);
      throw error;
    });

    // the clock stops billing before the books are read (the read is one snapshot anyway)
    run.stopping();
    await stopTemporal({ worker, running, workerConnection });
    await stopTemporal({ worker: bareWorker, running: bareRunning, workerConnection: bareConnection });
    worker = bareWorker = undefined;
    workerConnection = bareConnection = undefined;
    const verification = await verify(monitor, runId, receipts);
    phasesDone(`${steps} phases done`);

    const ratioTicksPgbench = capacity && pgbench ? capacity.billedTicksPerSecond / pgbench.tps : undefined;
    const targets: Report['targets'] = {};
    if (ratioTicksPgbench !== undefined) targets['ratio ticks/pgbench'] = { value: ratioTicksPgbench, target: '>= 5', met: ratioTicksPgbench >= 5 };
    if (latency) {
      targets['tick lag p99'] = { value: latency.lag.p99, target: '<= 0.1 interval', met: latency.lag.p99 <= 0.1 };
      targets['cancel p99'] = { value: latency.cancel.p99, target: '<= 0.1 interval', met: latency.cancel.p99 <= 0.1 };
      targets['ratio opens/bare starts'] = { value: latency.ratioOpensBare, target: '>= 0.8', met: latency.ratioOpensBare >= 0.8 };
    }
    const report: Report = {
      temporalCli: cli.version,
      postgresVersion: server!.server_version,
      devServerConfig: { ...PRECISE_TIMERS, ...(o.timerShiftMs !== undefined && { 'history.timerProcessorMaxTimeShift': `${o.timerShiftMs}ms` }), ...o.dynamicConfig },
      shards: o.shards,
      rowsMax: o.rowsMax,
      poolSize: o.poolSize,
      streamsPerPair: o.streamsPerPair,
      machineBusyBeforeCores: busyBefore,
      capacity,
      pgbench,
      ratioTicksPgbench,
      latency,
      verification,
      retriedCalls: retried,
      targets,
    };
    if (o.json) console.log(JSON.stringify(report, (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 2));
    else for (const [k, v] of lines(report)) console.log(`${k}: ${v}`);
    if (!verification.ok) {
      log('verification failed: the books are wrong (see the books line)');
      process.exitCode = 1;
    }
  } finally {
    run.stopping(); // from here, a call failing as its connection closes is noted, not fatal
    await stopTemporal({ worker, running, workerConnection });
    await stopTemporal({ worker: bareWorker, running: bareRunning, workerConnection: bareConnection, clientConnection, devServer });
    await monitor?.end().catch(() => undefined);
    await pool?.end().catch(() => undefined);
    if (bundlePath) rmSync(bundlePath, { force: true });
    if (scratchCreated) await dropBenchDatabase(o.databaseUrl, scratch).catch(() => undefined);
    if (created) await dropBenchDatabase(o.databaseUrl, name);
  }
}

runBench(async () => {
  try {
    await main();
  } finally {
    // everything is stopped; a handle a library left open must not keep the run alive
    setTimeout(() => process.exit(), 10_000).unref();
  }
});
