import { randomBytes, randomInt } from 'node:crypto';
import { WithStartWorkflowOperation, type Client, type WorkflowHandle } from '@temporalio/client';
import { runAudit } from '../../src/audit';
import { SA_KIND, SA_PAYEE, SA_PAYER, SA_STATUS } from '../../src/domain/searchAttributes';
import { streamWorkflowId, type StreamMode, type StreamReceipt, type StreamRequest } from '../../src/domain/streams';
import { createAccount, getAccount } from '../../src/ledger/accounts';
import { createParty } from '../../src/ledger/parties';
import { deposit } from '../../src/ledger/transfers';
import { connectClient } from '../../src/temporal/connection';
import { startStreamWorkflow } from '../../src/temporal/streams';
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
 * lands on work in flight: Temporal gives up on a dead worker only after its
 * timeouts (a started workflow task or the dead worker's sticky queue: 10 s; a
 * started activity: its 30 s start-to-close), so back-to-back kills would mostly hit
 * a worker with nothing to do.
 */
const STREAMS = 5;
const TICK_INTERVAL_MS = 300;
const KILLS = 4;
/** After a restart, billing resumes once Temporal gives up on the dead worker (10 s workflow task / sticky queue timeouts, 30 s for an activity). */
const RESUME_TIMEOUT_MS = 60_000;
const RATE = 3;
const MAX_TOTAL = 1_000_000;
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

/** A billing clock transaction open right now (its transaction id), waiting at most `timeoutMs` to catch one. */
async function billingTransactionOpen(timeoutMs: number): Promise<string | undefined> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const { rows } = await db.pool.query(
      `select backend_xid::text as xid from pg_stat_activity
        where datname = current_database() and backend_xid is not null and query like '/* sluice:%' limit 1`,
    );
    if (rows[0]) return rows[0].xid;
    await sleep(2);
  }
  return undefined;
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
  worker = new WorkerProcess({ databaseUrl: db.url, temporalAddress: process.env.SLUICE_TEST_TEMPORAL_ADDRESS, taskQueue });
});

afterAll(async () => {
  await worker?.stop();
  await client?.connection.close();
  await db?.drop();
});

describe('a worker process killed mid-stream', () => {
  test(`SIGKILLed ${KILLS} times at random moments: every tick billed at most once, no gaps, the books balance`, async () => {
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
    let killedMidBatch = 0;
    for (let k = 0; k < KILLS; k++) {
      // a random moment while the streams are billing on this worker
      const since = await lastTicks(db.pool, refs);
      resumedMs.push(await untilBilled(db.pool, refs, since, (moved) => moved > 0, { ...resuming, what: `worker ${k + 1}` }));
      await sleep(randomInt(0, 1_500));
      // then the moment a billing transaction of the clock is open (it has a transaction id);
      // every other kill holds the payer's account meanwhile, so the batch waits inside its
      // transaction (stream rows locked) and the kill lands in the middle of it for sure
      const blocker = k % 2 === 0 ? await db.pool.connect() : undefined;
      await blocker?.query(`begin; select 1 from accounts where id = 'buyer.w' for update`);
      const open = await billingTransactionOpen(5_000);
      await worker.kill();
      await blocker?.query('commit');
      blocker?.release();
      // the kill landed mid-batch when that transaction never committed: the connection died with the worker
      const outcome = open ? await transactionOutcome(open) : 'none caught';
      if (outcome === 'aborted') killedMidBatch++;
      console.log(`kill ${k + 1}: ${blocker ? 'batch held' : 'at random'}, its billing transaction ${outcome}`);
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
    let retriedBillings = 0;
    let committedBeforeRetry = 0;
    let timedOutWorkflowTasks = 0;
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

      // what the kills hit, from the workflow's history: billTick attempts retried after a
      // kill, and among them those whose first attempt had committed (its result lost with
      // the worker): the retry must have found the tick billed and billed nothing
      const events = (await streams[i]!.handle.fetchHistory()).events ?? [];
      const tickOf = new Map<string, number>();
      for (const e of events) {
        const a = e.activityTaskScheduledEventAttributes;
        if (a?.activityType?.name === 'billTick') {
          const args = (a.input?.payloads ?? []).map((p) => JSON.parse(Buffer.from(p.data ?? new Uint8Array()).toString('utf8')));
          tickOf.set(String(e.eventId), args[1]);
        }
        if (e.workflowTaskTimedOutEventAttributes) timedOutWorkflowTasks++;
      }
      const billedAt = new Map((await db.pool.query(`select tick, billed_at from stream_ticks where stream_ref = $1`, [ref])).rows.map((r) => [r.tick, r.billed_at]));
      for (const e of events) {
        const a = e.activityTaskStartedEventAttributes;
        const tick = tickOf.get(String(a?.scheduledEventId));
        if (!a || tick === undefined || (a.attempt ?? 1) <= 1) continue;
        retriedBillings++;
        const startedMs = Number(e.eventTime?.seconds ?? 0) * 1000 + Math.floor((e.eventTime?.nanos ?? 0) / 1e6);
        if (billedAt.get(tick) && billedAt.get(tick)!.getTime() < startedMs) committedBeforeRetry++;
      }
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
    // the failure happened where it matters: at least one kill cut a billing batch in the middle
    expect(killedMidBatch).toBeGreaterThanOrEqual(1);
    const audit = await runAudit(db.pool);
    expect(audit.checks.filter((c) => !c.ok)).toEqual([]);

    console.log(
      `worker crash: ${KILLS} SIGKILLs at ${killedAt.map((ms) => `${(ms / 1000).toFixed(1)}s`).join(', ')}; ` +
        `worker starts ${startMs.map((ms) => `${(ms / 1000).toFixed(1)}s`).join(', ')}; ` +
        `billing resumed after ${resumedMs.map((ms) => `${(ms / 1000).toFixed(1)}s`).join(', ')}; ` +
        `at most ${behindAtResume} ticks behind the clock at the last resume, ${behindAtCancel} at the cancel 2 s later; ` +
        `${billed} ticks billed over ${STREAMS} streams (${receipts.map((r) => r.ticks).join('/')}), duplicates ${duplicates}; ` +
        `${killedMidBatch} kills cut a billing batch in the middle; ${timedOutWorkflowTasks} workflow tasks timed out, ${retriedBillings} billTick retries (${committedBeforeRetry} after a commit whose result was lost); ` +
        `closed ${(settleMs / 1000).toFixed(1)}s after the cancel, ${((Date.now() - t0) / 1000).toFixed(1)}s in all`,
    );
  }, (WORKER_START_TIMEOUT_MS + RESUME_TIMEOUT_MS) * (KILLS + 1) + SETTLE_TIMEOUT_MS + 60_000);
});
