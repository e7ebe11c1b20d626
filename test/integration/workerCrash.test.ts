import { randomBytes, randomInt } from 'node:crypto';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import type { Client, WorkflowHandle } from '@temporalio/client';
import { runAudit } from '../../src/audit';
import { loadConfig } from '../../src/config';
import { billingClockWorkflowId } from '../../src/domain/billing';
import type { StreamMode, StreamReceipt, StreamRequest } from '../../src/domain/streams';
import { createAccount, getAccount } from '../../src/ledger/accounts';
import { createParty } from '../../src/ledger/parties';
import { deposit } from '../../src/ledger/transfers';
import { connectClient } from '../../src/temporal/connection';
import { startStreamWorkflow } from '../../src/services/starts';
import { streamWorkflow } from '../../workflows';
import { cancelStreamSignal, streamOpenedUpdate } from '../../workflows/definitions';
import { createTestDatabase, type TestDatabase } from '../support/db';
import { sleep } from '../support/parties';
import { lastTicks, streamTickLedger, untilBilled } from '../support/streamLedger';
import { WORKER_START_TIMEOUT_MS, WorkerProcess, within } from '../support/workerProcess';

/**
 * The worker dies mid-stream, more than once: `sluice worker` runs as a separate
 * process (exactly as deployed: `node --import tsx src/cli.ts worker`) and is
 * SIGKILLed at a random moment while five streams are billing, then restarted.
 * Whatever was in flight (a billing transaction, a workflow task, a timer) is
 * retried or replayed by Temporal; the ledger must still bill every tick at most
 * once, with no gaps, and balance to the unit.
 *
 * Each kill waits until the restarted worker is billing again, so that every kill
 * lands on work in flight (Temporal hands a dead worker's work on only after its
 * timeouts: the billing activity's 3 s heartbeat, the workflow tasks' 5 s). Every
 * other kill lands inside a billing transaction for certain: the test holds the
 * payer's account row, waits until a batch of the worker is blocked on it (stream
 * rows locked, a transaction id taken), and kills the worker then.
 *
 * What the kills did is asserted, not only logged: every backend the worker had in
 * PostgreSQL ended with it; each held kill aborted a billing transaction of the
 * worker's (txid_status), so it cut a billing activity in the middle; and Temporal
 * retried those activities (billDue attempts > 1 in the billing clocks' histories),
 * at least once per batch cut.
 */
const STREAMS = 5;
const TICK_INTERVAL_MS = 300;
const KILLS = 4;
/** After a restart, billing resumes once Temporal gives up on the dead worker (10 s workflow task / sticky queue timeouts, 30 s for an activity). */
const RESUME_TIMEOUT_MS = 60_000;
const RATE = 3;
const MAX_TOTAL = 1_000_000;
/**
 * A killed worker's backends end at once (the kernel closes its sockets; a backend
 * blocked on a lock, once it gets the lock). The worker's pool closes an idle
 * connection only after 10 s, so backends ending within this are the kill's doing.
 */
const BACKENDS_END_MS = 2_000;
/** An activity killed mid-flight is retried only after its start-to-close timeout (30 s). */
const SETTLE_TIMEOUT_MS = 120_000;

let db: TestDatabase;
let client: Client;
let worker: WorkerProcess;
const taskQueue = `crash-${randomBytes(4).toString('hex')}`;

/** Opens a stream as the API does: update-with-start, returning once tick 1 has settled. */
async function openStream(ref: string, mode: StreamMode): Promise<{ opened: StreamReceipt; handle: WorkflowHandle<typeof streamWorkflow> }> {
  const request: StreamRequest = {
    ref,
    payer: 'buyer',
    payee: 'seller',
    payerAccountId: 'buyer.w',
    payeeAccountId: 'seller.w',
    ratePerTick: RATE,
    maxTotal: MAX_TOTAL,
    tickIntervalMs: TICK_INTERVAL_MS,
    mode,
  };
  return startStreamWorkflow(client, taskQueue, request);
}

/**
 * A billing transaction open right now (its transaction id and backend), waiting at
 * most `timeoutMs` to catch one: one blocked by the backend `blockedBy` (a batch
 * waiting for the account that backend holds), or else any billing statement of the
 * clock (tagged `sluice:`) running inside a transaction.
 */
async function billingTransactionOpen(timeoutMs: number, blockedBy?: number): Promise<{ xid: string; pid: number } | undefined> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const { rows } = await db.pool.query(
      `select backend_xid::text as xid, pid from pg_stat_activity
        where datname = current_database() and backend_xid is not null and pid <> pg_backend_pid()
          and ${blockedBy === undefined ? `query like '/* sluice:%'` : `$1::int = any(pg_blocking_pids(pid))`}
        limit 1`,
      blockedBy === undefined ? [] : [blockedBy],
    );
    if (rows[0]) return rows[0];
    await sleep(2);
  }
  return undefined;
}

/**
 * The PostgreSQL backends serving a process: its TCP sockets (/proc/<pid>/fd) matched
 * by local port (/proc/net/tcp*) with the backends' client ports. Linux only.
 */
async function backendsOf(processId: number): Promise<number[]> {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${processId}/fd`)) {
    try {
      const socket = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${processId}/fd/${fd}`));
      if (socket) inodes.add(socket[1]!);
    } catch {
      // closed meanwhile
    }
  }
  const ports: number[] = [];
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const line of readFileSync(table, 'utf8').trim().split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (inodes.has(f[9]!)) ports.push(parseInt(f[1]!.split(':')[1]!, 16));
    }
  }
  const { rows } = await db.pool.query(`select pid from pg_stat_activity where datname = current_database() and client_port = any($1::int[])`, [ports]);
  return rows.map((r) => r.pid as number);
}

/** How many of `pids` have ended (their backends gone), waiting up to `timeoutMs` for all of them. */
async function backendsEnded(pids: number[], timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { rows } = await db.pool.query(`select count(*)::int as n from pg_stat_activity where pid = any($1::int[])`, [pids]);
    if (rows[0].n === 0 || Date.now() > deadline) return pids.length - rows[0].n;
    await sleep(50);
  }
}

/**
 * Retries of the billing activity, from the billing clocks' histories (every run of
 * each shard's chain, continue-as-new followed) and the attempt in flight: the sum of
 * (attempt - 1) over every billDue, so an activity killed twice counts twice.
 */
async function billDueRetries(): Promise<{ activities: number; retries: number }> {
  const historyOf = async (id: string, runId: string) => (await client.workflow.getHandle(id, runId).fetchHistory()).events ?? [];
  const shards = loadConfig().SLUICE_BILLING_SHARDS;
  let activities = 0;
  let retries = 0;
  for (let shard = 0; shard < shards; shard++) {
    const id = billingClockWorkflowId(taskQueue, shard, shards);
    const latest = await client.workflow.getHandle(id).describe();
    for (let runId: string | undefined = latest.raw.workflowExecutionInfo?.firstRunId ?? latest.runId; runId; ) {
      const events = await historyOf(id, runId);
      const billDue = new Set(events.filter((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'billDue').map((e) => String(e.eventId)));
      for (const e of events) {
        const started = e.activityTaskStartedEventAttributes;
        if (!started || !billDue.has(String(started.scheduledEventId))) continue;
        activities++;
        retries += (started.attempt ?? 1) - 1;
      }
      runId = events.find((e) => e.workflowExecutionContinuedAsNewEventAttributes)?.workflowExecutionContinuedAsNewEventAttributes?.newExecutionRunId ?? undefined;
    }
    // a started activity's attempt is in the history only once it ends: the one in flight now
    for (const a of latest.raw.pendingActivities ?? []) if (a.activityType?.name === 'billDue') retries += (a.attempt ?? 1) - 1;
  }
  return { activities, retries };
}

/** What became of a transaction once its backend is done with it: committed or aborted. */
async function transactionOutcome(xid: string): Promise<string> {
  for (let i = 0; i < 200; i++) {
    // the cluster's xid epoch is 0 on a test server: the 32-bit id is the full one
    const { rows } = await db.pool.query(`select txid_status($1::bigint) as status`, [xid]);
    if (rows[0].status !== 'in progress') return rows[0].status;
    await sleep(50);
  }
  return 'in progress';
}

beforeAll(async () => {
  if (!process.env.SLUICE_TEST_TEMPORAL_ADDRESS) throw new Error('the jest globalSetup did not start Temporal');
  db = await createTestDatabase();
  client = await connectClient(process.env.SLUICE_TEST_TEMPORAL_ADDRESS, 'default');
  await createParty(db.pool, { id: 'buyer', name: 'Buyer' });
  await createParty(db.pool, { id: 'seller', name: 'Seller' });
  await createAccount(db.pool, { id: 'buyer.w', ownerId: 'buyer', kind: 'user' });
  await createAccount(db.pool, { id: 'seller.w', ownerId: 'seller', kind: 'user' });
  await deposit(db.pool, { key: 'fund-buyer', accountId: 'buyer.w', amount: STREAMS * MAX_TOTAL });
  worker = new WorkerProcess({ databaseUrl: db.runtimeUrl, temporalAddress: process.env.SLUICE_TEST_TEMPORAL_ADDRESS, taskQueue });
});

afterAll(async () => {
  await worker?.stop();
  await client?.connection.close();
  await db?.drop();
});

describe('a worker process killed mid-stream', () => {
  test(`SIGKILLed ${KILLS} times while billing, half of them inside a billing transaction: its backends end, the batch aborts, Temporal retries the activity; every tick billed at most once, no gaps, the books balance`, async () => {
    const t0 = Date.now();
    worker.start();
    await worker.untilPolling(client);
    const startMs = [Date.now() - t0];

    const refs = Array.from({ length: STREAMS }, (_, i) => `crash-${i}-${randomBytes(3).toString('hex')}`);
    // escrow and pay-as-you-go both take the retried path
    const streams = await Promise.all(refs.map((ref, i) => openStream(ref, i % 2 === 0 ? 'escrow' : 'payg')));
    for (const s of streams) expect(s.opened).toMatchObject({ status: 'STREAMING', ticks: 1, totalPaid: RATE });

    const resuming = { timeoutMs: RESUME_TIMEOUT_MS, everyMs: 100, context: () => `worker output:\n${worker.output}` };

    const killedAt: number[] = [];
    const resumedMs: number[] = [];
    const kills: Array<{ held: boolean; outcome: string; caughtWorkers: boolean; backends: number; ended: number }> = [];
    for (let k = 0; k < KILLS; k++) {
      // a random moment while the streams are billing on this worker
      const since = await lastTicks(db.pool, refs);
      resumedMs.push(await untilBilled(db.pool, refs, since, (moved) => moved > 0, { ...resuming, what: `worker ${k + 1}` }));
      await sleep(randomInt(0, 1_500));
      // then the moment a billing transaction of the clock is open (it has a transaction id);
      // every other kill holds the payer's account meanwhile and waits for a batch blocked on
      // it (its stream rows locked, inside its transaction): the kill lands in the middle of it
      const held = k % 2 === 0;
      const blocker = held ? await db.pool.connect() : undefined;
      await blocker?.query(`begin; select 1 from accounts where id = 'buyer.w' for update`);
      const blockerPid: number | undefined = blocker ? (await blocker.query('select pg_backend_pid() as pid')).rows[0].pid : undefined;
      const open = await billingTransactionOpen(held ? 15_000 : 5_000, blockerPid);
      const backends = await backendsOf(worker.child!.pid!);
      await worker.kill();
      await blocker?.query('commit');
      blocker?.release();
      // the kill landed mid-batch when that transaction never committed: the connection died with the worker
      const outcome = open ? await transactionOutcome(open.xid) : 'none caught';
      const ended = await backendsEnded(backends, BACKENDS_END_MS);
      kills.push({ held, outcome, caughtWorkers: open !== undefined && backends.includes(open.pid), backends: backends.length, ended });
      console.log(`kill ${k + 1}: ${held ? 'batch held' : 'at random'}, its billing transaction ${outcome}; ${ended} of the worker's ${backends.length} backends ended`);
      killedAt.push(Date.now() - t0);
      const restart = Date.now();
      worker.start();
      await worker.untilPolling(client);
      startMs.push(Date.now() - restart);
    }
    // every stream bills on the last worker before the end
    const sinceLast = await lastTicks(db.pool, refs);
    resumedMs.push(await untilBilled(db.pool, refs, sinceLast, (moved) => moved === STREAMS, { ...resuming, what: 'the last worker' }));
    // how far the streams fell behind the clock while workers died (the ticks that came due
    // then are billed now, back to back, not lost: streamCatchUp.test.ts checks the pace)
    const behind = async () =>
      (
        await db.pool.query(
          `select max(floor(extract(epoch from clock_timestamp() - opened_at) * 1000 / tick_interval_ms)::int + 1 - last_tick) as n from streams where ref = any($1)`,
          [refs],
        )
      ).rows[0].n as number;
    const behindAtResume = await behind();
    await sleep(2_000);
    const behindAtCancel = await behind();

    const cancelledAt = Date.now();
    await Promise.all(streams.map((s) => s.handle.signal(cancelStreamSignal, { by: 'buyer', reason: 'crash test over' })));
    const receipts = await within(SETTLE_TIMEOUT_MS, Promise.all(streams.map((s) => s.handle.result())), 'closing the streams', () => `worker output:\n${worker.output}`);
    const settleMs = Date.now() - cancelledAt;

    let billed = 0;
    let duplicates = 0;
    for (const [i, ref] of refs.entries()) {
      const receipt = receipts[i]!;
      expect(receipt).toMatchObject({ ref, status: 'CONFIRMED', reason: 'cancelled', closedBy: 'buyer' });

      // exactly once: ticks 1..last each billed once (one transfer keyed by its number) or
      // skipped, none after the close, the totals equal to the sum of the ticks
      const ledger = await streamTickLedger(db.pool, ref);
      expect(ledger.problems).toEqual([]);
      duplicates += ledger.duplicates;
      expect(ledger).toMatchObject({ status: 'closed', missing: [] });
      expect(receipt).toMatchObject({ totalPaid: ledger.paid, ticks: ledger.billed.length });
      expect(ledger.paid).toBe(RATE * ledger.billed.length);
      billed += ledger.billed.length;
    }

    // the books: the payer holds nothing once everything is closed, and all balances sum to zero
    const buyer = await getAccount(db.pool, 'buyer.w');
    const seller = await getAccount(db.pool, 'seller.w');
    expect(buyer.held).toBe(0);
    expect(seller.balance).toBe(RATE * billed);
    expect(buyer.balance).toBe(STREAMS * MAX_TOTAL - RATE * billed);
    expect((await db.pool.query(`select sum(balance)::bigint as sum from accounts`)).rows[0].sum).toBe(0);
    expect((await db.pool.query(`select count(*)::int as n from holds where status = 'open'`)).rows[0].n).toBe(0);
    expect(duplicates).toBe(0);
    expect(killedAt).toHaveLength(KILLS);

    // the failures happened where they matter. Every kill ended the worker's backends, all of them:
    for (const kill of kills) expect([kill.backends > 0, kill.ended]).toEqual([true, kill.backends]);
    const backendsEndedTotal = kills.reduce((n, kill) => n + kill.ended, 0);
    expect(backendsEndedTotal).toBeGreaterThan(0);
    // every held kill caught a billing transaction of the worker's, blocked inside it, and
    // the kill aborted it (txid_status): the kill cut a billing batch, and so its activity, in the middle
    const heldKills = kills.filter((kill) => kill.held);
    expect(heldKills.map((kill) => [kill.caughtWorkers, kill.outcome])).toEqual(heldKills.map(() => [true, 'aborted']));
    // a kill at random caught the worker's own transaction, if it caught one, whatever became of it
    for (const kill of kills.filter((x) => !x.held && x.outcome !== 'none caught')) expect(kill.caughtWorkers).toBe(true);
    const killedMidBatch = kills.filter((kill) => kill.outcome === 'aborted').length;
    expect(killedMidBatch).toBeGreaterThanOrEqual(heldKills.length);
    // Temporal retried what the kills cut: at least one more billDue attempt per batch cut
    const { activities: billingActivities, retries: retriedBillings } = await billDueRetries();
    expect(retriedBillings).toBeGreaterThanOrEqual(killedMidBatch);
    expect(retriedBillings).toBeGreaterThan(0);

    const audit = await runAudit(db.pool);
    expect(audit.checks.filter((c) => !c.ok)).toEqual([]);

    console.log(
      `worker crash: ${KILLS} SIGKILLs at ${killedAt.map((ms) => `${(ms / 1000).toFixed(1)}s`).join(', ')}; ` +
        `worker starts ${startMs.map((ms) => `${(ms / 1000).toFixed(1)}s`).join(', ')}; ` +
        `billing resumed after ${resumedMs.map((ms) => `${(ms / 1000).toFixed(1)}s`).join(', ')}; ` +
        `at most ${behindAtResume} ticks behind the clock at the last resume, ${behindAtCancel} at the cancel 2 s later; ` +
        `${billed} ticks billed over ${STREAMS} streams (${receipts.map((r) => r.ticks).join('/')}), duplicates ${duplicates}; ` +
        `${killedMidBatch} kills cut a billing batch in the middle, ${backendsEndedTotal} of the worker's backends ended with it; ` +
        `${retriedBillings} billDue retries over ${billingActivities} billing activities; ` +
        `closed ${(settleMs / 1000).toFixed(1)}s after the cancel, ${((Date.now() - t0) / 1000).toFixed(1)}s in all`,
    );
  }, (WORKER_START_TIMEOUT_MS + RESUME_TIMEOUT_MS) * (KILLS + 1) + SETTLE_TIMEOUT_MS + 60_000);
});
