/**
 * Stream billing throughput against a bare Temporal baseline, in one run, on the
 * same Temporal dev server (our own, in memory) and the same worker (one Worker,
 * one task queue: the real workflows and activities plus the bare ones):
 *
 *   A (streams)  N real streams, opened with update-with-start as POST /v1/streams
 *                does (escrow), each billing a tick every interval through the
 *                ledger for D seconds; then all are cancelled at once and their
 *                receipts awaited. Billed ticks are counted in stream_ticks.
 *   B (bare)     N bare workflows of the same shape (bench/bareTickWorkflow.ts:
 *                timer to the next due time, an overdue tick at once, one activity
 *                per tick, cancel signal, closing activity) whose activity is a
 *                no-op that records its time in memory: Temporal and the worker
 *                without the ledger.
 *
 * Both phases offer the same load (N / interval ticks/s). While the machine keeps
 * up, both rates sit at the offered load and the tick lag tells them apart; once it
 * does not, the ratio billed/bare is what the ledger keeps of what Temporal and this
 * worker can carry. Before anything is timed a warm-up stream and bare workflow run
 * (the bundle is built, the code paths are hot) and the pool's connections are open.
 *
 * Reading the numbers:
 * - Tick lag is "work began − due": for a billed tick, billed_at (the billing
 *   transaction's start, after the wait for a pool connection, before its row-lock
 *   waits); for a bare tick, the no-op's start. Due = opened + (tick − 1) × interval;
 *   tick 1 (billed at open) is left out.
 * - The server fires no new timer before ~now + history.timerProcessorMaxTimeShift
 *   (1 s by default, here and in deploy's auto-setup): with a 1 s interval every timer
 *   takes ~1 s plus the tick's own round trips, so a stream that waits on its timer
 *   every tick drifts later and later; one that bills an overdue tick at once catches
 *   up. `--timer-shift-ms` lowers the setting on our dev server.
 * - On a shared box the neighbours take CPU unevenly across phases, and the phase with
 *   more runnable processes (A: PostgreSQL backends) gets a larger share from the
 *   scheduler. `--rounds 2` runs A B B A; the CPU lines show what each side used
 *   (this process, the dev server, the bench database's backends, the rest of the
 *   machine), and "cpu per tick, ours" gives the ratio when CPU is all that limits.
 *
 *   npm run bench:streams -- [--streams 200] [--interval-ms 1000] [--seconds 30]
 *     [--streams-per-pair 10] [--pool-size 10] [--max-activities 100]
 *     [--max-workflow-tasks 40] [--order ab|ba] [--rounds 1] [--timer-shift-ms MS]
 *     [--database-url URL] [--json]
 *
 * Progress goes to stderr, results to stdout (`--json` prints one object).
 * Exits non-zero if the books are wrong after the run: a stream's paid is not the
 * sum of its ticks, a tick billed twice (transfers of kind stream_tick: count(*) ≠
 * count(distinct (stream_ref, tick))), balances not summing to zero, a stream left
 * open, a receipt that disagrees with the database. The database sluice_bench_* is
 * dropped at the end, also on failure or Ctrl-C.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { Client, Connection, WithStartWorkflowOperation, WorkflowUpdateRPCTimeoutOrCancelledError, type WorkflowHandle } from '@temporalio/client';
import type { Context } from '@temporalio/activity';
import { NativeConnection, Worker, type ActivityInterceptorsFactory } from '@temporalio/worker';
import { Command, Option } from 'commander';
import pg from 'pg';
import { createActivities } from '../activities';
import { migrate } from '../src/db/migrate';
import { createPool, withDatabase, type Pool } from '../src/db/pool';
import { streamWorkflowId, tickDueAtMs, type StreamReceipt, type StreamRequest } from '../src/domain/streams';
import { createAccount } from '../src/ledger/accounts';
import { deposit } from '../src/ledger/transfers';
import { startDevServer, type DevServer } from '../src/temporal/devServer';
import { startStreamWorkflow } from '../src/temporal/streams';
import { resolveTool, TEMPORAL_CLI } from '../src/temporal/tools';
import { cancelStreamSignal } from '../workflows/definitions';
import { bareCancelSignal, bareOpenedUpdate, bareTickWorkflow, bareWorkflowId, type BareActivities, type BareReceipt } from './bareTickWorkflow';
import { freePort } from '../src/dev/ports';
import { endOfRun, interruptibleRun, killWithThisProcess, stopTemporal } from './temporalRun';
import { benchDatabaseName, createBenchDatabase, dropBenchDatabase, integerAtLeast, log, onServer, phaseProgress, phasesDone, type Quantiles, quantiles, runBench, withServerAndJson } from './support';


// A tick bills 1 unit; the escrow (maxTotal) is far above what a run can bill, so
// no stream completes on its own. Each payer is funded for all its escrows.
const RATE_PER_TICK = 1;
const MAX_TOTAL = 1_000_000;
const NAMESPACE = 'default';
/** Ticks of a warm-up stream and bare workflow before anything is timed. */
const WARMUP_TICKS = 3;

interface Options {
  streams: number;
  intervalMs: number;
  seconds: number;
  streamsPerPair: number;
  poolSize: number;
  maxActivities: number;
  maxWorkflowTasks: number;
  order: 'ab' | 'ba';
  rounds: number;
  timerShiftMs?: number;
  databaseUrl: string;
  json: boolean;
}

function parseOptions(): Options {
  return (
    withServerAndJson(
      new Command()
      .name('bench:streams')
      .description('billed stream ticks/s against bare Temporal ticks/s, same dev server, same worker, fresh database')
      .option('--streams <n>', 'concurrent streams (and bare workflows)', integerAtLeast(1), 200)
      // the API's lower bound for a tick interval
      .option('--interval-ms <n>', 'tick interval', integerAtLeast(100), 1000)
      .option('--seconds <n>', 'measured duration of each phase', integerAtLeast(1), 30)
      // Every tick locks the payer's AND the payee's account rows (captureHold ->
      // postTransfer locks both) for the rest of its transaction, so all streams of one
      // payer, or to one payee, bill one after another. Real traffic has many payers;
      // by default each group of 10 streams has a payer and a payee of its own.
      // `--streams-per-pair N` (>= --streams) is the one-payer, one-payee worst case.
      .option('--streams-per-pair <n>', 'streams sharing one payer and one payee', integerAtLeast(1), 10)
      // the worker's pool as `sluice worker` creates it (createPool's default max)
      .option('--pool-size <n>', "the worker's PostgreSQL pool size (the activities' connections)", integerAtLeast(1), 10)
      // the SDK's defaults, which src/worker.ts does not change
      .option('--max-activities <n>', 'worker maxConcurrentActivityTaskExecutions', integerAtLeast(1), 100)
      .option('--max-workflow-tasks <n>', 'worker maxConcurrentWorkflowTaskExecutions', integerAtLeast(2), 40)
      // The server does not fire a new timer earlier than ~now + history.timerProcessorMaxTimeShift
      // (default 1 s, on this dev server and on auto-setup alike): every timer under a second
      // takes about a second. Unset: the server's default, what a deployment gets.
      .option('--timer-shift-ms <n>', "set the dev server's history.timerProcessorMaxTimeShift (ms)", integerAtLeast(1))
      .addOption(new Option('--order <order>', 'ab: streams first, then bare; ba: the reverse').choices(['ab', 'ba']).default('ab'))
      // Rounds alternate the order (ab, then ba, ...: 2 rounds run A B B A), so a drift over
      // the run (neighbours on a shared box, a growing server, a warming JIT) weighs on both
      // phases alike. Rates and percentiles pool all rounds; each round's rate is shown too.
      .option('--rounds <n>', 'measured rounds, the order alternating each round', integerAtLeast(1), 1),
    )
      .parse()
      .opts<Options>()
  );
}


// ------------------------------------------------------------------ statistics


const fractionOf = (q: Quantiles, intervalMs: number): Quantiles => ({ ...q, p50: q.p50 / intervalMs, p99: q.p99 / intervalMs, max: q.max / intervalMs });

// ------------------------------------------------------------------ instrumentation (in memory)

/** Every no-op tick that ran: which workflow, which tick, when (this process's clock). */
const bareTicks: { id: string; n: number; at: number }[] = [];

const bareActivities: BareActivities = {
  async noopTick(id, n) {
    const at = Date.now();
    bareTicks.push({ id, n, at });
    return at;
  },
  async noopClose() {
    return Date.now();
  },
};

/**
 * Per activity type: schedule-to-start (the server's schedule time to the start
 * here: queueing on the server and for a free activity slot) and execution time
 * (for billTick: waiting for a pool connection, row-lock waits, the queries).
 * Diagnostics only; the headline numbers come from the database and the no-ops.
 */
interface ActivitySample {
  type: string;
  startedAt: number;
  scheduleToStartMs: number;
  execMs: number;
}
const activitySamples: ActivitySample[] = [];

const timingInterceptor: ActivityInterceptorsFactory = (ctx: Context) => ({
  inbound: {
    async execute(input, next) {
      const startedAt = Date.now();
      const t = performance.now();
      try {
        return await next(input);
      } finally {
        activitySamples.push({
          type: ctx.info.activityType,
          startedAt,
          scheduleToStartMs: startedAt - ctx.info.currentAttemptScheduledTimestampMs,
          execMs: performance.now() - t,
        });
      }
    },
  },
});

/** The samples of one activity type that started inside any of the windows (this process's clock). */
function activityStats(type: string, windows: { fromLocal: number; toLocal: number }[]) {
  const s = activitySamples.filter((a) => a.type === type && windows.some((w) => a.startedAt >= w.fromLocal && a.startedAt < w.toLocal));
  return { scheduleToStartMs: quantiles(s.map((a) => a.scheduleToStartMs)), execMs: quantiles(s.map((a) => a.execMs)) };
}

/** Samples the pool's wait queue and the database's lock waits while a phase is timed. */
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
      poolWaitingMax: Math.max(0, ...poolWaiting),
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

/** CPU seconds (user + system) a process has used, or undefined if /proc cannot tell. */
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

/** Busy and total CPU seconds of the whole machine (all cores). */
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
  /** Per backend of the bench database (the worker's pool and the monitor). */
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
  return {
    worker: (u.user + u.system) / 1e6,
    server: serverPid === undefined ? undefined : processCpuSeconds(serverPid),
    backends,
    machine: machineCpuSeconds(),
  };
}

/**
 * CPU used during a window, in cores (CPU seconds per second): this process (the
 * worker, its activities and the bench's client), the Temporal dev server, the
 * PostgreSQL backends of the bench database (backends that exited during the window
 * are missed; a local server is needed), the whole machine, and the rest of the
 * machine (other processes: on a shared box, the neighbours).
 */
interface CpuUse {
  worker: number;
  server?: number;
  postgres?: number;
  machine?: number;
  cores: number;
  others?: number;
}

function cpuUse(a: CpuSnapshot, b: CpuSnapshot, seconds: number): CpuUse {
  let pgSeconds = 0;
  let seen = 0;
  for (const [pid, end] of b.backends) {
    const start = a.backends.get(pid);
    pgSeconds += end - (start ?? 0);
    seen++;
  }
  const worker = (b.worker - a.worker) / seconds;
  const server = a.server !== undefined && b.server !== undefined ? (b.server - a.server) / seconds : undefined;
  const postgres = seen ? pgSeconds / seconds : undefined;
  const machine = a.machine && b.machine ? (b.machine.busy - a.machine.busy) / seconds : undefined;
  const cores = a.machine && b.machine ? Math.round((b.machine.total - a.machine.total) / seconds) : Number.NaN;
  const others = machine !== undefined ? machine - worker - (server ?? 0) - (postgres ?? 0) : undefined;
  return { worker, server, postgres, machine, cores, others };
}

// ------------------------------------------------------------------ setup

interface Pair {
  payer: string;
  payee: string;
}

async function setUpParties(url: string, pool: Pool, o: Options, runId: string): Promise<Pair[]> {
  const pairs = Math.ceil(o.streams / o.streamsPerPair);
  log(`migrations, ${pairs} payer(s) and ${pairs} payee(s) (${o.streamsPerPair} streams per pair), deposits`);
  await migrate(url);
  const result = Array.from({ length: pairs }, (_, i) => ({ payer: `bench-${runId}-payer-${i}`, payee: `bench-${runId}-payee-${i}` }));
  const ids = result.flatMap((p) => [p.payer, p.payee]);
  // parties are not on the measured path: plain SQL, no API keys to mint
  await pool.query(`insert into parties (id, name) select id, id from unnest($1::text[]) as id`, [ids]);
  for (const { payer, payee } of result) {
    // one account per party, with the party's id (one escrow per stream of the pair,
    // plus the warm-up stream's on the first payer)
    await createAccount(pool, { id: payer, ownerId: payer, kind: 'user' });
    await createAccount(pool, { id: payee, ownerId: payee, kind: 'user' });
    await deposit(pool, { key: `fund-${payer}`, accountId: payer, amount: (o.streamsPerPair + 1) * MAX_TOTAL });
  }
  await pool.query('vacuum analyze');
  return result;
}

// ------------------------------------------------------------------ phases

/** One measured phase of one round, raw. */
interface PhaseRun {
  /** Ticks (after tick 1) that ran inside the measured window. */
  ticks: number;
  windowSeconds: number;
  /** Local clock (ms) of the window, for the activity samples. */
  fromLocal: number;
  toLocal: number;
  lagsMs: number[];
  openMs: number[];
  openSeconds: number;
  /** Opening calls made again after an RPC deadline. */
  openRetries: number;
  cancelMs: number[];
  cancelSeconds: number;
  contention: Contention;
  cpu: CpuUse;
  history: HistoryStats;
}

interface PhaseResult {
  /** Ticks (after tick 1) that ran inside the measured windows, all rounds. */
  ticks: number;
  windowSeconds: number;
  ticksPerSecond: number;
  /** Each round's rate, in run order. */
  ticksPerSecondByRound: number[];
  /** Opening all N (update-with-start until tick 1 has settled), the slowest round. */
  openSeconds: number;
  openLatencyMs: Quantiles;
  openRetries: number;
  /** Tick lag (ran − due) of the ticks in the windows, as a fraction of the interval. */
  lag: Quantiles;
  /** Cancel signal sent to receipt returned, as a fraction of the interval. */
  cancelToReceipt: Quantiles;
  /** Cancelling all N, the slowest round. */
  cancelSeconds: number;
  activity: Record<string, ReturnType<typeof activityStats>>;
  contention: Contention;
  cpu: CpuUse;
  /** A few histories per round, summed. */
  history: HistoryStats;
}

/** Pools the rounds of one phase: rates over the summed windows, percentiles over all samples, means weighted by window. */
function summarize(runs: PhaseRun[], activityType: string, intervalMs: number): PhaseResult {
  const windowSeconds = runs.reduce((a, r) => a + r.windowSeconds, 0);
  const ticks = runs.reduce((a, r) => a + r.ticks, 0);
  const weighted = <T extends object>(pick: (r: PhaseRun) => T): T => {
    const out: Record<string, number | undefined> = {};
    for (const key of Object.keys(pick(runs[0]!))) {
      const values = runs.map((r) => (pick(r) as Record<string, number | undefined>)[key]);
      out[key] = values.some((v) => v === undefined)
        ? undefined
        : key.endsWith('Max') || key === 'cores'
          ? Math.max(...(values as number[]))
          : runs.reduce((a, r, i) => a + (values[i] as number) * r.windowSeconds, 0) / windowSeconds;
    }
    return out as T;
  };
  return {
    ticks,
    windowSeconds,
    ticksPerSecond: ticks / windowSeconds,
    ticksPerSecondByRound: runs.map((r) => r.ticks / r.windowSeconds),
    openSeconds: Math.max(...runs.map((r) => r.openSeconds)),
    openLatencyMs: quantiles(runs.flatMap((r) => r.openMs)),
    openRetries: runs.reduce((a, r) => a + r.openRetries, 0),
    lag: fractionOf(quantiles(runs.flatMap((r) => r.lagsMs)), intervalMs),
    cancelToReceipt: fractionOf(quantiles(runs.flatMap((r) => r.cancelMs)), intervalMs),
    cancelSeconds: Math.max(...runs.map((r) => r.cancelSeconds)),
    activity: { [activityType]: activityStats(activityType, runs) },
    contention: weighted((r) => r.contention),
    cpu: weighted((r) => r.cpu),
    history: runs.reduce(
      (a, r) => Object.fromEntries(Object.entries(a).map(([k, v]) => [k, v + r.history[k as keyof HistoryStats]])) as unknown as HistoryStats,
      { workflows: 0, events: 0, activities: 0, workflowTasks: 0, workflowTaskTimeouts: 0, workflowTaskFailures: 0, activityTimeouts: 0 },
    ),
  };
}

interface Stack {
  client: Client;
  taskQueue: string;
  pool: Pool;
  monitor: pg.Client;
  database: string;
  serverPid?: number;
  o: Options;
  signal: AbortSignal;
}

/** The database's clock (billed_at and opened_at are on it), in ms. */
async function dbNowMs(monitor: pg.Client): Promise<number> {
  const { rows } = await monitor.query<{ ms: number }>('select (extract(epoch from clock_timestamp()) * 1000)::float8 as ms');
  return rows[0]!.ms;
}

/** Opening calls that hit an RPC deadline and were made again (update-with-start is idempotent here). */
let openRetries = 0;
const OPEN_ATTEMPTS = 5;

/**
 * Update-with-start on an overloaded server can end in an RPC deadline
 * ("context deadline exceeded") although the workflow started: the call is made again,
 * which (USE_EXISTING) attaches to that workflow and waits for its first tick. The
 * API makes it once; a client of the API would retry the same way, with the same ref.
 */
async function withOpenRetries<T>(fn: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (error) {
      const message = error instanceof Error ? `${error.message} ${(error.cause as Error | undefined)?.message ?? ''}` : String(error);
      const deadline = error instanceof WorkflowUpdateRPCTimeoutOrCancelledError || /deadline exceeded|context canceled/i.test(message);
      if (!deadline || attempt >= OPEN_ATTEMPTS) throw error;
      openRetries++;
    }
  }
}

async function timed<T>(fn: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const t = performance.now();
  const value = await fn();
  return { value, ms: performance.now() - t };
}

function startStream(s: Stack, request: StreamRequest): Promise<StreamReceipt> {
  // the way POST /v1/streams opens one (update-with-start, search attributes)
  return withOpenRetries(async () => (await startStreamWorkflow(s.client, s.taskQueue, request)).opened);
}

function startBare(s: Stack, id: string): Promise<BareReceipt> {
  return withOpenRetries(() => s.client.workflow.executeUpdateWithStart(bareOpenedUpdate, {
    startWorkflowOperation: new WithStartWorkflowOperation(bareTickWorkflow, {
      workflowId: bareWorkflowId(id),
      taskQueue: s.taskQueue,
      args: [{ id, tickIntervalMs: s.o.intervalMs }],
      workflowIdConflictPolicy: 'USE_EXISTING',
    }),
  }));
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

/** Cancels every handle at once (signal, then the result), timing each to its receipt. */
async function cancelAll<R>(handles: WorkflowHandle[], send: (h: WorkflowHandle) => Promise<void>) {
  const t = performance.now();
  const results = await Promise.all(
    handles.map(async (h) => {
      const { value, ms } = await timed(async () => {
        await send(h);
        return (await h.result()) as R;
      });
      return { receipt: value, ms };
    }),
  );
  return { results, seconds: (performance.now() - t) / 1000 };
}

/**
 * What the server recorded, from a sample of the phase's histories: events per tick
 * and the events that mean wasted work (a workflow task that timed out, e.g. a
 * sticky task nobody picked up in time, or failed; an activity that timed out).
 */
interface HistoryStats {
  /** Histories sampled, and their totals. */
  workflows: number;
  events: number;
  /** Activities completed (ticks, the opening one and the closing one). */
  activities: number;
  workflowTasks: number;
  workflowTaskTimeouts: number;
  workflowTaskFailures: number;
  activityTimeouts: number;
}

async function historyStats(s: Stack, workflowIds: string[], sample = 5): Promise<HistoryStats> {
  const counts: Record<string, number> = {};
  const step = Math.max(1, Math.floor(workflowIds.length / sample));
  const picked = workflowIds.filter((_, i) => i % step === 0).slice(0, sample);
  for (const id of picked) {
    const history = await s.client.workflow.getHandle(id).fetchHistory();
    for (const event of history.events ?? []) {
      // the one attributes field that is set names the event type
      const kind = Object.keys(event).find((k) => k.endsWith('EventAttributes') && (event as Record<string, unknown>)[k] != null);
      if (kind) counts[kind] = (counts[kind] ?? 0) + 1;
    }
  }
  return {
    workflows: picked.length,
    events: Object.values(counts).reduce((a, b) => a + b, 0),
    activities: counts.activityTaskCompletedEventAttributes ?? 0,
    workflowTasks: counts.workflowTaskCompletedEventAttributes ?? 0,
    workflowTaskTimeouts: counts.workflowTaskTimedOutEventAttributes ?? 0,
    workflowTaskFailures: counts.workflowTaskFailedEventAttributes ?? 0,
    activityTimeouts: counts.activityTaskTimedOutEventAttributes ?? 0,
  };
}

/** The measured window: CPU and contention sampled, clocks read at both ends. The interrupt (Ctrl-C) ends it and the run fails. */
async function window(s: Stack, clock: () => Promise<number>) {
  const from = await clock();
  const fromLocal = Date.now();
  const cpuFrom = await cpuSnapshot(s.monitor, s.database, s.serverPid);
  const stopSampler = startSampler(s.pool, s.monitor, s.database);
  let contention: Contention;
  try {
    await sleep(s.o.seconds * 1000, undefined, { signal: s.signal });
  } finally {
    contention = await stopSampler();
  }
  const cpuTo = await cpuSnapshot(s.monitor, s.database, s.serverPid);
  const to = await clock();
  const toLocal = Date.now();
  const windowSeconds = (to - from) / 1000;
  return { from, to, fromLocal, toLocal, windowSeconds, contention, cpu: cpuUse(cpuFrom, cpuTo, windowSeconds) };
}

async function streamPhase(s: Stack, pairs: Pair[], tag: string, label: string): Promise<PhaseRun & { receipts: StreamReceipt[] }> {
  const { o } = s;
  await s.monitor.query('checkpoint');
  const refs = Array.from({ length: o.streams }, (_, i) => `bench-${tag}-a-${i}`);
  log(`${label} streams: opening ${o.streams} (interval ${o.intervalMs} ms)`);
  const retriesBefore = openRetries;
  const openStart = performance.now();
  const opened = await Promise.all(
    refs.map((ref, i) => timed(() => startStream(s, streamRequest(pairs[Math.floor(i / o.streamsPerPair)]!, ref, o.intervalMs)))),
  );
  const openSeconds = (performance.now() - openStart) / 1000;
  const notStreaming = opened.filter((r) => r.value.status !== 'STREAMING');
  if (notStreaming.length) throw new Error(`${notStreaming.length} stream(s) did not open: ${JSON.stringify(notStreaming[0]!.value)}`);

  log(`${label} streams: all open after ${openSeconds.toFixed(1)} s; measuring ${o.seconds} s`);
  // billed_at and opened_at are the database's clock: the window is too
  const w = await window(s, () => dbNowMs(s.monitor));

  log(`${label} streams: cancelling ${o.streams}`);
  const cancelled = await cancelAll<StreamReceipt>(
    refs.map((ref) => s.client.workflow.getHandle(streamWorkflowId(ref))),
    (h) => h.signal(cancelStreamSignal, { by: pairs[0]!.payer, reason: 'bench' }),
  );

  const { rows } = await s.pool.query<{ tick: number; billed_ms: number; opened_ms: number }>(
    `select t.tick, (extract(epoch from t.billed_at) * 1000)::float8 as billed_ms,
            (extract(epoch from s.opened_at) * 1000)::float8 as opened_ms
       from stream_ticks t join streams s on s.ref = t.stream_ref
      where s.ref = any($1) and t.tick > 1 and t.billed_at >= to_timestamp($2 / 1000.0) and t.billed_at < to_timestamp($3 / 1000.0)`,
    [refs, w.from, w.to],
  );
  log(`${label} streams: ${(rows.length / w.windowSeconds).toFixed(1)} billed ticks/s`);
  const history = await historyStats(s, refs.map(streamWorkflowId));
  return {
    ticks: rows.length,
    windowSeconds: w.windowSeconds,
    fromLocal: w.fromLocal,
    toLocal: w.toLocal,
    lagsMs: rows.map((r) => r.billed_ms - tickDueAtMs(r.opened_ms, o.intervalMs, r.tick)),
    openMs: opened.map((r) => r.ms),
    openSeconds,
    openRetries: openRetries - retriesBefore,
    cancelMs: cancelled.results.map((r) => r.ms),
    cancelSeconds: cancelled.seconds,
    contention: w.contention,
    cpu: w.cpu,
    history,
    receipts: cancelled.results.map((r) => r.receipt),
  };
}

async function barePhase(s: Stack, tag: string, label: string): Promise<PhaseRun> {
  const { o } = s;
  const ids = Array.from({ length: o.streams }, (_, i) => `${tag}-b-${i}`);
  log(`${label} bare: opening ${o.streams} (interval ${o.intervalMs} ms)`);
  const retriesBefore = openRetries;
  const openStart = performance.now();
  const opened = await Promise.all(ids.map((id) => timed(() => startBare(s, id))));
  const openSeconds = (performance.now() - openStart) / 1000;

  log(`${label} bare: all open after ${openSeconds.toFixed(1)} s; measuring ${o.seconds} s`);
  // the no-ops record this process's clock: the window is on it too
  const w = await window(s, async () => Date.now());

  log(`${label} bare: cancelling ${o.streams}`);
  const cancelled = await cancelAll<BareReceipt>(
    ids.map((id) => s.client.workflow.getHandle(bareWorkflowId(id))),
    (h) => h.signal(bareCancelSignal),
  );

  const mine = new Set(ids);
  const origin = new Map(opened.map((r) => [r.value.id, r.value.openedAtMs]));
  const inWindow = bareTicks.filter((t) => mine.has(t.id) && t.n > 1 && t.at >= w.from && t.at < w.to);
  log(`${label} bare: ${(inWindow.length / w.windowSeconds).toFixed(1)} ticks/s`);
  const history = await historyStats(s, ids.map(bareWorkflowId));
  return {
    ticks: inWindow.length,
    windowSeconds: w.windowSeconds,
    fromLocal: w.fromLocal,
    toLocal: w.toLocal,
    lagsMs: inWindow.map((t) => t.at - tickDueAtMs(origin.get(t.id)!, o.intervalMs, t.n)),
    openMs: opened.map((r) => r.ms),
    openSeconds,
    openRetries: openRetries - retriesBefore,
    cancelMs: cancelled.results.map((r) => r.ms),
    cancelSeconds: cancelled.seconds,
    contention: w.contention,
    cpu: w.cpu,
    history,
  };
}

/** One stream and one bare workflow, a few ticks each, before anything is timed. */
async function warmUp(s: Stack, pair: Pair, runId: string): Promise<void> {
  log(`warm-up: one stream and one bare workflow, ${WARMUP_TICKS} ticks each`);
  const ref = `bench-${runId}-warmup`;
  const id = `${runId}-warmup`;
  await Promise.all([startStream(s, streamRequest(pair, ref, s.o.intervalMs)), startBare(s, id)]);
  await sleep((WARMUP_TICKS - 1) * s.o.intervalMs + 200, undefined, { signal: s.signal });
  const stream = s.client.workflow.getHandle(streamWorkflowId(ref));
  const bare = s.client.workflow.getHandle(bareWorkflowId(id));
  await Promise.all([stream.signal(cancelStreamSignal, { by: pair.payer, reason: 'warm-up' }), bare.signal(bareCancelSignal)]);
  await Promise.all([stream.result(), bare.result()]);
  // every connection of the pool open before the clock starts
  const warm = await Promise.all(Array.from({ length: s.o.poolSize }, () => s.pool.connect()));
  warm.forEach((c) => c.release());
}

// ------------------------------------------------------------------ verification

interface Verification {
  streams: number;
  paidMismatches: number;
  ticksBilledMismatches: number;
  tickTransfers: number;
  distinctTickTransfers: number;
  streamTicks: number;
  openStreams: number;
  balanceSum: string;
  receiptMismatches: number;
  ok: boolean;
}

async function verify(pool: Pool, receipts: StreamReceipt[]): Promise<Verification> {
  const { rows } = await pool.query<Omit<Verification, 'receiptMismatches' | 'ok'>>(
    `with t as (select stream_ref, sum(amount) as paid, count(*) as n from stream_ticks group by stream_ref)
     select (select count(*) from streams)::int as streams,
            (select count(*) from streams s left join t on t.stream_ref = s.ref where s.paid <> coalesce(t.paid, 0))::int as "paidMismatches",
            (select count(*) from streams s left join t on t.stream_ref = s.ref where s.ticks_billed <> coalesce(t.n, 0))::int as "ticksBilledMismatches",
            (select count(*) from transfers where kind = 'stream_tick')::int as "tickTransfers",
            (select count(distinct (stream_ref, tick)) from transfers where kind = 'stream_tick')::int as "distinctTickTransfers",
            (select count(*) from stream_ticks)::int as "streamTicks",
            (select count(*) from streams where status = 'open')::int as "openStreams",
            (select coalesce(sum(balance), 0)::text from accounts) as "balanceSum"`,
  );
  const v = rows[0]!;
  const { rows: db } = await pool.query<{ ref: string; paid: number; ticks: number }>(
    'select stream_ref as ref, sum(amount)::bigint as paid, count(*)::int as ticks from stream_ticks where stream_ref = any($1) group by stream_ref',
    [receipts.map((r) => r.ref)],
  );
  const byRef = new Map(db.map((r) => [r.ref, r]));
  const receiptMismatches = receipts.filter((r) => {
    const d = byRef.get(r.ref);
    return r.status !== 'CONFIRMED' || r.reason !== 'cancelled' || !d || d.paid !== r.totalPaid || d.ticks !== r.ticks;
  }).length;
  const ok =
    v.paidMismatches === 0 &&
    v.ticksBilledMismatches === 0 &&
    v.tickTransfers === v.distinctTickTransfers &&
    v.tickTransfers === v.streamTicks &&
    v.openStreams === 0 &&
    v.balanceSum === '0' &&
    receiptMismatches === 0;
  return { ...v, receiptMismatches, ok };
}

// ------------------------------------------------------------------ report

/** The phases in run order: each round one of each, the order flipping every round. */
function phaseSequence(order: 'ab' | 'ba', rounds: number): ('a' | 'b')[] {
  const first: ('a' | 'b')[] = order === 'ab' ? ['a', 'b'] : ['b', 'a'];
  return Array.from({ length: rounds }, (_, r) => (r % 2 === 0 ? first : [...first].reverse())).flat();
}

type Report = Omit<Options, 'databaseUrl' | 'json' | 'timerShiftMs'> & {
  /** The phases as run, a = streams, b = bare (e.g. abba). */
  sequence: string;
  /** null: the server's default (1 s). */
  timerShiftMs: number | null;
  temporalCli: string;
  postgresVersion: string;
  payers: number;
  payees: number;
  offeredTicksPerSecond: number;
  streamsPhase: PhaseResult;
  barePhase: PhaseResult;
  ratio: number;
  /** Cores busy on the machine in the 2 s before the run started anything (neighbours). */
  machineBusyBeforeCores: number | null;
  /** CPU ms per tick of this process, the dev server and the bench database's backends. */
  cpuPerTickMs: { streams: number; bare: number };
  verification: Verification;
};

const cpuPerTickMs = (p: PhaseResult) => ((p.cpu.worker + (p.cpu.server ?? Number.NaN) + (p.cpu.postgres ?? 0)) / p.ticksPerSecond) * 1000;

const f1 = (n: number) => (Number.isFinite(n) ? n.toFixed(1) : 'n/a');
const f2 = (n: number) => (Number.isFinite(n) ? n.toFixed(2) : 'n/a');
const ms = (q: Quantiles) => `${q.p50.toFixed(0)} / ${q.p99.toFixed(0)} ms`;
const cores = (n: number | undefined) => (n === undefined || !Number.isFinite(n) ? 'n/a' : n.toFixed(2));
const cpuLine = (c: CpuUse, ticksPerSecond: number) =>
  `worker ${cores(c.worker)}, temporal ${cores(c.server)}, postgres ${cores(c.postgres)}, others ${cores(c.others)}; ` +
  `machine ${cores(c.machine)} of ${c.cores} cores busy; ` +
  `per tick: worker ${((c.worker / ticksPerSecond) * 1000).toFixed(1)} ms, temporal ${(((c.server ?? Number.NaN) / ticksPerSecond) * 1000).toFixed(1)} ms, ` +
  `postgres ${(((c.postgres ?? Number.NaN) / ticksPerSecond) * 1000).toFixed(1)} ms`;
const historyLine = (h: HistoryStats) =>
  `${h.workflows} workflows: ${(h.events / Math.max(1, h.activities)).toFixed(1)} events and ${(h.workflowTasks / Math.max(1, h.activities)).toFixed(2)} workflow tasks per activity; ` +
  `workflow task timeouts ${h.workflowTaskTimeouts}, failures ${h.workflowTaskFailures}; activity timeouts ${h.activityTimeouts}`;
const retries = (p: PhaseResult) => (p.openRetries ? `; ${p.openRetries} calls made again after an RPC deadline` : '');
const byRound = (p: PhaseResult) => (p.ticksPerSecondByRound.length > 1 ? `; by round ${p.ticksPerSecondByRound.map((x) => x.toFixed(1)).join(', ')}` : '');
const frac = (q: Quantiles) => `${f2(q.p50)} / ${f2(q.p99)} (max ${f2(q.max)}, n=${q.count})`;

function printTable(r: Report): void {
  const a = r.streamsPhase;
  const b = r.barePhase;
  const bill = a.activity.billTick!;
  const noop = b.activity.noopTick!;
  const v = r.verification;
  const rows: [string, string][] = [
    ['temporal cli', r.temporalCli],
    ['postgresql', r.postgresVersion],
    ['streams (N)', String(r.streams)],
    ['interval', `${r.intervalMs} ms`],
    ['seconds', String(r.seconds)],
    ['payers / payees', `${r.payers} / ${r.payees} (${r.streamsPerPair} streams per pair)`],
    ['worker', `pool ${r.poolSize}, maxConcurrentActivityTaskExecutions ${r.maxActivities}, maxConcurrentWorkflowTaskExecutions ${r.maxWorkflowTasks}`],
    ['phases (a=streams b=bare)', `${r.sequence} (${r.rounds} round${r.rounds > 1 ? 's' : ''}, each ${r.seconds} s measured)`],
    ['server timer shift', r.timerShiftMs === null ? "server default (1 s): timers under 1 s take ~1 s" : `history.timerProcessorMaxTimeShift ${r.timerShiftMs} ms`],
    ['machine before the run', `${cores(r.machineBusyBeforeCores ?? undefined)} cores busy (neighbours)`],
    ['offered ticks/s', r.offeredTicksPerSecond.toFixed(1)],
    ['billed ticks/s', `${a.ticksPerSecond.toFixed(1)} (${a.ticks} in ${a.windowSeconds.toFixed(2)} s)${byRound(a)}`],
    ['bare ticks/s', `${b.ticksPerSecond.toFixed(1)} (${b.ticks} in ${b.windowSeconds.toFixed(2)} s)${byRound(b)}`],
    ['ratio billed/bare', `${f2(r.ratio)} (target >= 0.8)`],
    ['tick lag p50/p99 streams', `${frac(a.lag)} x interval`],
    ['tick lag p50/p99 bare', `${frac(b.lag)} x interval`],
    ['cancel->receipt p50/p99 streams', `${frac(a.cancelToReceipt)} x interval (all ${r.streams} in ${a.cancelSeconds.toFixed(1)} s)`],
    ['cancel->receipt p50/p99 bare', `${frac(b.cancelToReceipt)} x interval (all ${r.streams} in ${b.cancelSeconds.toFixed(1)} s)`],
    ['open p50/p99 streams', `${ms(a.openLatencyMs)} (all ${r.streams} in ${a.openSeconds.toFixed(1)} s${retries(a)})`],
    ['open p50/p99 bare', `${ms(b.openLatencyMs)} (all ${r.streams} in ${b.openSeconds.toFixed(1)} s${retries(b)})`],
    ['billTick sched->start p50/p99', ms(bill.scheduleToStartMs)],
    ['billTick exec p50/p99', ms(bill.execMs)],
    ['noopTick sched->start p50/p99', ms(noop.scheduleToStartMs)],
    [
      'contention (streams phase)',
      `pool waiters mean ${f2(a.contention.poolWaitingMean)} max ${a.contention.poolWaitingMax}, ` +
        `backends waiting on a lock mean ${f2(a.contention.lockWaitingMean)} max ${a.contention.lockWaitingMax}, ` +
        `active backends mean ${f2(a.contention.activeBackendsMean)}`,
    ],
    ['history streams (sample)', historyLine(a.history)],
    ['history bare (sample)', historyLine(b.history)],
    ['cpu streams phase (cores)', cpuLine(a.cpu, a.ticksPerSecond)],
    ['cpu bare phase (cores)', cpuLine(b.cpu, b.ticksPerSecond)],
    [
      'cpu per tick, ours',
      `streams ${f1(r.cpuPerTickMs.streams)} ms, bare ${f1(r.cpuPerTickMs.bare)} ms (worker + temporal + postgres); ` +
        `bare/streams ${f2(r.cpuPerTickMs.bare / r.cpuPerTickMs.streams)}: the ratio when CPU is all that limits, whatever the neighbours take`,
    ],
    [
      'books',
      `${v.ok ? 'ok' : 'FAILED'} (${v.streams} streams, paid = sum of ticks: ${v.paidMismatches} mismatches; ` +
        `tick transfers ${v.tickTransfers}, distinct (stream,tick) ${v.distinctTickTransfers}, stream_ticks ${v.streamTicks}; ` +
        `open ${v.openStreams}; sum of balances ${v.balanceSum}; receipts disagreeing ${v.receiptMismatches})`,
    ],
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  for (const [k, val] of rows) console.log(`${k.padEnd(width)}  ${val}`);
  console.log(`ratio billed/bare: ${f2(r.ratio)}`);
}

// ------------------------------------------------------------------ main

async function main(): Promise<void> {
  const o = parseOptions();
  const runId = randomBytes(3).toString('hex');
  const name = benchDatabaseName();
  const url = withDatabase(o.databaseUrl, name);

  // Ctrl-C or a kill ends the run and still stops everything and drops the database
  const run = interruptibleRun();

  // what the machine is doing before we start: on a shared box, the neighbours
  const before = machineCpuSeconds();
  await sleep(2000);
  const after = machineCpuSeconds();
  const busyBefore = before && after ? (after.busy - before.busy) / 2 : undefined;

  const cli = resolveTool(TEMPORAL_CLI);
  if (!cli.path) throw new Error('the Temporal CLI could not be found or installed (try `npm run tools`)');
  const [server] = await onServer<{ server_version: string }>(o.databaseUrl, 'show server_version');

  let devServer: DevServer | undefined;
  let pool: Pool | undefined;
  let monitor: pg.Client | undefined;
  let worker: Worker | undefined;
  let running: Promise<void> | undefined;
  let workerConnection: NativeConnection | undefined;
  let clientConnection: Connection | undefined;
  let created = false;
  try {
    await createBenchDatabase(o.databaseUrl, name);
    created = true;
    pool = createPool(url, o.poolSize);
    const pairs = await setUpParties(url, pool, o, runId);
    // a connection of its own for clocks and sampling: never queued behind the activities
    monitor = new pg.Client({ connectionString: url, application_name: 'sluice-bench-monitor' });
    await monitor.connect();

    log(`starting an in-memory Temporal dev server (${cli.version})`);
    devServer = await startDevServer({
      cliPath: cli.path,
      port: await freePort(),
      dynamicConfig: o.timerShiftMs === undefined ? undefined : { 'history.timerProcessorMaxTimeShift': `${o.timerShiftMs}ms` },
    });
    killWithThisProcess(devServer);
    if (run.signal.aborted) throw run.signal.reason;

    const taskQueue = `bench-streams-${runId}`;
    log(`worker on ${taskQueue}: bundling workflows (the real ones and the bare baseline)`);
    workerConnection = await NativeConnection.connect({ address: devServer.address });
    worker = await Worker.create({
      connection: workerConnection,
      namespace: NAMESPACE,
      taskQueue,
      activities: { ...createActivities({ pool }), ...bareActivities },
      workflowsPath: require.resolve('./workflows'),
      maxConcurrentActivityTaskExecutions: o.maxActivities,
      maxConcurrentWorkflowTaskExecutions: o.maxWorkflowTasks,
      interceptors: { activity: [timingInterceptor] },
    });
    running = worker.run();
    const ended = endOfRun(running, run.signal);

    clientConnection = await Connection.connect({ address: devServer.address });
    const stack: Stack = {
      client: new Client({ connection: clientConnection, namespace: NAMESPACE }),
      taskQueue,
      pool,
      monitor,
      database: name,
      serverPid: devServer.process.pid,
      o,
      signal: run.signal,
    };

    const body = async () => {
      await warmUp(stack, pairs[0]!, runId);
      const streamRuns: PhaseRun[] = [];
      const bareRuns: PhaseRun[] = [];
      const receipts: StreamReceipt[] = [];
      const sequence = phaseSequence(o.order, o.rounds);
      for (const [i, phase] of sequence.entries()) {
        if (i > 0) await sleep(Math.max(2000, o.intervalMs), undefined, { signal: run.signal }); // let the last cancels settle
        const round = Math.floor(i / 2);
        const tag = `${runId}-${round}`;
        const label = `[${i + 1}/${sequence.length}]`;
        phaseProgress(i, sequence.length, `phase ${label}: ${phase === 'a' ? 'billed streams' : 'bare timers'}`);
        if (phase === 'a') {
          const { receipts: closed, ...run } = await streamPhase(stack, pairs, tag, label);
          streamRuns.push(run);
          receipts.push(...closed);
        } else {
          bareRuns.push(await barePhase(stack, tag, label));
        }
      }
      phaseProgress(sequence.length, sequence.length, `${sequence.length} phases measured`);
      phasesDone(`${sequence.length} phases measured`); // a terminal's bar line ends; piped, nothing
      log('verifying the books');
      const verification = await verify(stack.pool, receipts);
      return {
        streamsPhase: summarize(streamRuns, 'billTick', o.intervalMs),
        barePhase: summarize(bareRuns, 'noopTick', o.intervalMs),
        sequence: sequence.join(''),
        verification,
      };
    };
    const { streamsPhase, barePhase: bare, sequence, verification } = await Promise.race([body(), ended]).catch((error: unknown) => {
      log(`failed: ${error instanceof Error ? error.message : String(error)}; stopping everything`);
      throw error;
    });

    const report: Report = {
      temporalCli: cli.version,
      postgresVersion: server!.server_version,
      streams: o.streams,
      intervalMs: o.intervalMs,
      seconds: o.seconds,
      streamsPerPair: o.streamsPerPair,
      payers: pairs.length,
      payees: pairs.length,
      poolSize: o.poolSize,
      maxActivities: o.maxActivities,
      maxWorkflowTasks: o.maxWorkflowTasks,
      order: o.order,
      rounds: o.rounds,
      sequence,
      timerShiftMs: o.timerShiftMs ?? null,
      offeredTicksPerSecond: (o.streams * 1000) / o.intervalMs,
      streamsPhase,
      barePhase: bare,
      ratio: streamsPhase.ticksPerSecond / bare.ticksPerSecond,
      cpuPerTickMs: { streams: cpuPerTickMs(streamsPhase), bare: cpuPerTickMs(bare) },
      machineBusyBeforeCores: busyBefore ?? null,
      verification,
    };
    if (o.json) console.log(JSON.stringify(report, (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 2));
    else printTable(report);
    if (!verification.ok) process.exitCode = 1;
  } finally {
    run.stopping(); // from here, a call failing as its connection closes is noted, not fatal
    await stopTemporal({ worker, running, workerConnection, clientConnection, devServer });
    await monitor?.end().catch(() => undefined);
    await pool?.end().catch(() => undefined);
    if (created) {
      await dropBenchDatabase(o.databaseUrl, name);
    }
  }
}

runBench(main);
