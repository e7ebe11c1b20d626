import { randomBytes } from 'node:crypto';
import { type WorkflowHandle } from '@temporalio/client';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { createActivities } from '../../activities';
import { runAudit } from '../../src/audit';
import { streamWorkflowId, type StreamRequest } from '../../src/domain/streams';
import { createAccount, getAccount } from '../../src/ledger/accounts';
import { createParty } from '../../src/ledger/parties';
import { deposit } from '../../src/ledger/transfers';
import { HISTORY_TICKS_MAX } from '../../workflows/stream';
import { createTestDatabase, type TestDatabase } from '../support/db';
import { startStreamWorkflow } from '../../src/temporal/streams';
import { startBundleWorker, startTimeSkippingEnv } from '../support/timeSkipping';

/**
 * A long stream on the time-skipping test server: one-second ticks, billed one by
 * one by the real activities on a real database, with the default history bound
 * (continue-as-new every HISTORY_TICKS_MAX ticks). The timers are skipped, so the
 * run takes as long as the billing, not as long as the stream.
 *
 * A tick costs ~22-45 ms of wall time on a 2-core machine (two workflow tasks and
 * an activity through the test server, one billing transaction), so the full
 * 10,000-tick stream takes 4.5-5.5 minutes there: SLUICE_LONG=1 runs it, through the
 * same code. By default it runs LONG_STREAM_TICKS_CI ticks (under a minute, two
 * continue-as-new boundaries); SLUICE_LONG_TICKS=<n> picks any other length.
 */
const LONG_STREAM_TICKS_CI = 1_200;
const TICKS = Number(process.env.SLUICE_LONG_TICKS ?? (process.env.SLUICE_LONG === '1' ? 10_000 : LONG_STREAM_TICKS_CI));
const TICK_INTERVAL_MS = 1_000;
/** Events per billed tick: timer started/fired, activity scheduled/started/completed, two workflow tasks of three (an overdue tick has no timer). */
const EVENTS_PER_TICK_MAX = 12;
/** No tick billed for this long: the stream hangs. */
const STALL_MS = 60_000;
/** Jest's limit, only a backstop (a tick costs ~22-45 ms here, much more on a machine shared with other jobs). */
const TIMEOUT_MS = 120_000 + TICKS * 250;

let env: TestWorkflowEnvironment;
let db: TestDatabase;
let worker: Awaited<ReturnType<typeof startBundleWorker>> | undefined;
const taskQueue = `longstream-${randomBytes(4).toString('hex')}`;

/**
 * The stream's result, or a readable failure once billing has made no progress for
 * STALL_MS (a hang, e.g. a workflow task failing in a loop): how long the whole
 * stream takes depends on the machine and its load, a stall does not.
 */
async function resultOrStall<T>(result: Promise<T>, ref: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  let done = false;
  const stalled = new Promise<never>((_, reject) => {
    let last = -1;
    let since = Date.now();
    const check = async () => {
      if (done) return;
      const { rows } = await db.pool.query(`select last_tick from streams where ref = $1`, [ref]);
      const tick: number = rows[0]?.last_tick ?? 0;
      if (tick !== last) [last, since] = [tick, Date.now()];
      if (done) return;
      if (Date.now() - since > STALL_MS) reject(new Error(`stream ${ref} billed nothing for ${STALL_MS} ms (last tick ${last}; run with TEST_TEMPORAL_LOG_LEVEL=WARN to see why)`));
      else timer = setTimeout(() => void check().catch(reject), 1_000);
    };
    timer = setTimeout(() => void check().catch(reject), 1_000);
  });
  return Promise.race([result, stalled]).finally(() => {
    done = true;
    clearTimeout(timer);
  });
}

beforeAll(async () => {
  env = await startTimeSkippingEnv();

  // one billing transaction after another: no fsync wait on each commit (~2 ms a tick here)
  db = await createTestDatabase({ durableCommits: false });
  await createParty(db.pool, { id: 'alice', name: 'Alice' });
  await createParty(db.pool, { id: 'bob', name: 'Bob' });
  await createAccount(db.pool, { id: 'alice.wallet', ownerId: 'alice', kind: 'user' });
  await createAccount(db.pool, { id: 'bob.wallet', ownerId: 'bob', kind: 'user' });
  await deposit(db.pool, { key: 'seed-alice', accountId: 'alice.wallet', amount: TICKS });

  worker = await startBundleWorker(env, taskQueue, createActivities({ pool: db.pool }));
});

afterAll(async () => {
  await worker?.stop();
  await db?.drop();
  await env?.teardown();
});

interface Run {
  runId: string;
  status: string;
  events: number;
  /** Server (workflow) time of the run's first and last event. */
  startMs: number;
  endMs: number;
}

const eventTimeMs = (t: { seconds?: unknown; nanos?: number | null } | null | undefined) => Number(t?.seconds ?? 0) * 1000 + Math.floor((t?.nanos ?? 0) / 1e6);

/** Every run of a workflow, first to last, following continuedExecutionRunId back from the latest run. */
async function runsOf(workflowId: string): Promise<Run[]> {
  const runs: Run[] = [];
  let runId: string | undefined = (await env.client.workflow.getHandle(workflowId).describe()).runId;
  while (runId) {
    const handle: WorkflowHandle = env.client.workflow.getHandle(workflowId, runId);
    const events = (await handle.fetchHistory()).events ?? [];
    const status = (await handle.describe()).status.name;
    runs.unshift({ runId, status, events: events.length, startMs: eventTimeMs(events[0]?.eventTime), endMs: eventTimeMs(events.at(-1)?.eventTime) });
    runId = events[0]?.workflowExecutionStartedEventAttributes?.continuedExecutionRunId || undefined;
  }
  return runs;
}

describe('a long stream on the time-skipping test server', () => {
  test(`${TICKS} one-second ticks bill exactly once each, continue as new every ${HISTORY_TICKS_MAX} ticks and complete at maxTotal`, async () => {
    expect(TICKS).toBeGreaterThan(HISTORY_TICKS_MAX + 1); // at least one continue-as-new boundary is crossed
    const ref = `long-${randomBytes(4).toString('hex')}`;
    const request: StreamRequest = {
      ref,
      payer: 'alice',
      payee: 'bob',
      payerAccountId: 'alice.wallet',
      payeeAccountId: 'bob.wallet',
      ratePerTick: 1,
      maxTotal: TICKS,
      tickIntervalMs: TICK_INTERVAL_MS,
      mode: 'escrow',
    };
    const wallStart = Date.now();
    // opened as the API opens it: update-with-start, the update completing once tick 1 has settled
    const { opened, handle } = await startStreamWorkflow(env.client, taskQueue, request);
    expect(opened).toMatchObject({ status: 'STREAMING', ticks: 1, totalPaid: 1 });

    const receipt = await resultOrStall(handle.result(), ref);
    const wallMs = Date.now() - wallStart;
    expect(receipt).toMatchObject({ ref, status: 'CONFIRMED', reason: 'completed', closedBy: 'system', ticks: TICKS, totalPaid: TICKS });

    // the ledger: every tick 1..TICKS billed once, one unit each, and the money where it belongs
    const { rows: [t] } = await db.pool.query(
      `select count(*)::int as n, count(distinct tick)::int as distinct_ticks, min(tick) as first, max(tick) as last, sum(amount)::bigint as total
         from stream_ticks where stream_ref = $1`,
      [ref],
    );
    expect(t).toEqual({ n: TICKS, distinct_ticks: TICKS, first: 1, last: TICKS, total: TICKS });
    const { rows: [x] } = await db.pool.query(
      `select count(*)::int as n, count(distinct tick)::int as distinct_ticks, sum(amount)::bigint as total from transfers where stream_ref = $1 and kind = 'stream_tick'`,
      [ref],
    );
    expect(x).toEqual({ n: TICKS, distinct_ticks: TICKS, total: TICKS });
    expect((await db.pool.query(`select count(*)::int as n from stream_skips where stream_ref = $1`, [ref])).rows[0].n).toBe(0);
    expect(await getAccount(db.pool, 'bob.wallet')).toMatchObject({ balance: TICKS, held: 0 });
    expect(await getAccount(db.pool, 'alice.wallet')).toMatchObject({ balance: 0, held: 0 });
    expect((await db.pool.query(`select sum(balance)::bigint as sum from accounts`)).rows[0].sum).toBe(0);
    expect((await runAudit(db.pool)).checks.filter((c) => !c.ok)).toEqual([]);

    // continue-as-new kept every run's history bounded: tick 1 at open, then HISTORY_TICKS_MAX ticks a run
    const runs = await runsOf(streamWorkflowId(ref));
    expect(runs).toHaveLength(Math.ceil((TICKS - 1) / HISTORY_TICKS_MAX));
    expect(runs.slice(0, -1).every((r) => r.status === 'CONTINUED_AS_NEW')).toBe(true);
    expect(runs.at(-1)!.status).toBe('COMPLETED');
    const longest = Math.max(...runs.map((r) => r.events));
    expect(longest).toBeLessThan(HISTORY_TICKS_MAX * EVENTS_PER_TICK_MAX);
    expect((await env.client.workflow.getHandle(streamWorkflowId(ref), runs[0]!.runId).describe()).status.name).toBe('CONTINUED_AS_NEW');

    // the timers were skipped, not waited: the workflow clock moved through the whole stream
    const serverMs = runs.at(-1)!.endMs - runs[0]!.startMs;
    expect(serverMs).toBeGreaterThanOrEqual((TICKS - 1) * TICK_INTERVAL_MS);
    expect(wallMs).toBeLessThan(serverMs / 10);
    console.log(
      `long stream: ${TICKS} ticks in ${(wallMs / 1000).toFixed(1)} s wall (${(wallMs / TICKS).toFixed(1)} ms/tick), ` +
        `${(serverMs / 1000).toFixed(0)} s of stream time on the server clock, ${runs.length} runs, longest history ${longest} events (last ${runs.at(-1)!.events})`,
    );
  }, TIMEOUT_MS);
});
