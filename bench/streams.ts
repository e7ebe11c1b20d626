/**
 * The billing clock under load, against PostgreSQL's and Temporal's own baselines, in
 * one run on one PostgreSQL server, one Temporal dev server (our own, in memory, with
 * startDevServer's dynamic config) and one worker: src/worker.ts createWorker, i.e.
 * the real workflows, activities and billing clock shards on one pool. A second
 * worker next to it runs the bare baseline (bench/streams/bareTickWorkflow.ts, no-op
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
import { runBench } from './support/runner';
import { main } from './streams/main';

// The phases live in bench/streams/: options.ts (the flags above), latency.ts,
// capacity.ts, verify.ts and report.ts, with what they measure with (calls.ts,
// histories.ts, clock.ts, window.ts, sql.ts, cpu.ts) and the run itself (main.ts).
runBench(async () => {
  try {
    await main();
  } finally {
    // everything is stopped; a handle a library left open must not keep the run alive
    setTimeout(() => process.exit(), 10_000).unref();
  }
});
