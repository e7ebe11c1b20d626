/**
 * Records one workflow history per representative path into test/histories/, for
 * the replay test (test/integration/replay.test.ts) to check that today's workflow
 * code still replays what yesterday's code wrote.
 *
 *   npm run record:histories
 *
 * Brings up everything it needs and tears it down again: an in-memory Temporal dev
 * server (the CLI resolved as DESIGN.md §8 orders it), a fresh migrated database on
 * TEST_DATABASE_URL's server (dropped at the end), and a worker bundling workflows/.
 * Re-record only after an intended, incompatible workflow change; see
 * test/histories/README.md.
 */
import { setCurrentVersion } from '../src/temporal/deployments';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { WithStartWorkflowOperation, WorkflowFailedError, type Client, type WorkflowHandle } from '@temporalio/client';
import { historyFromJSON, historyToJSON } from '@temporalio/common/lib/proto-utils';
import type { temporal } from '@temporalio/proto';
import { DefaultLogger, Runtime, Worker } from '@temporalio/worker';
import { paymentWorkflowId, refundWorkflowId, type PaymentRequest, type RefundRequest } from '../src/domain/payments';
import { paymentVisibility, refundVisibility, subaccountCreationVisibility, subaccountEliminationVisibility } from '../workflows/searchAttributes';
import { streamWorkflowId, type StreamReceipt, type StreamRequest } from '../src/domain/streams';
import { createAccount } from '../src/ledger/accounts';
import { createParty } from '../src/ledger/parties';
import { deposit, transfer } from '../src/ledger/transfers';
import { connectClient } from '../src/temporal/connection';
import { startDevServer, type DevServer } from '../src/temporal/devServer';
import { sluiceErrorFromTemporal } from '../src/temporal/failures';
import { describeTool, resolveTool, TEMPORAL_CLI } from '../src/temporal/tools';
import { createWorker, WORKFLOWS_PATH } from '../src/worker';
import { createScratchDatabase, type ScratchDatabase } from '../src/ledger/scratch';
import { freePort } from '../src/dev/ports';
import { paymentWorkflow, refundWorkflow } from '../workflows';
import { billingDueSignal, cancelStreamSignal, closeSessionUpdate, jobPaymentUpdate, pauseStreamUpdate, resumeStreamUpdate, sessionRequestUpdate, streamHaltedSignal } from '../workflows/definitions';
import { BILLING_CLOCK_PATCH, OUTSIDE_CANCEL_SETTLES_PATCH, type StreamWorkflowOptions } from '../workflows/stream';
import { PAYMENT_RUNS_THROUGH_CANCEL_PATCH } from '../workflows/payment';
import { ELIMINATION_RUNS_THROUGH_CANCEL_PATCH, ONGOING_RULES_PATCH, SAGA_LOCAL_STEPS_PATCH, SAGA_OUTSIDE_CANCEL_PATCH, subaccountLifecycleWorkflow } from '../workflows/entities';
import { reconcilerWorkflow } from '../workflows/reconciler';
import { checkpointWorkflow } from '../workflows/checkpoints';
import { BILLING_SHARDS_DEFAULT, billingClockWorkflowId, shardOf } from '../src/domain/billing';
import { getStream } from '../src/ledger/streams';
import { startStreamWorkflow } from '../src/services/starts';
import { startJobWorkflow } from '../src/services/starts';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseFaults } from '../src/domain/faults';
import { activateSubaccount, allocateSubaccount, fundSubaccount, holdCollateral, registerEntity } from '../src/ledger/entities';
import { creationWorkflowId, eliminationWorkflowId, lifecycleWorkflowId, type CreationResult } from '../src/domain/entities';
import { subaccountCreationWorkflow, subaccountEliminationWorkflow } from '../workflows/entities';
import { SETTLE_REFUSED_COMPENSATES_PATCH } from '../workflows/job';
import { setTier } from '../src/ledger/grants';
import type { GrantView, JobRequest, WorkSimulation } from '../src/domain/grants';
import { sessionWorkflowId, type SessionOpening } from '../src/domain/sessions';
import { startSessionWorkflow } from '../src/services/starts';

const HISTORIES_DIR = resolve(__dirname, '..', 'test', 'histories');
const TASK_QUEUE = 'record-histories';
const log = (line: string) => process.stdout.write(`${line}\n`);

// a refused payment is logged by the SDK as a warning; this script checks it instead
Runtime.install({ logger: new DefaultLogger('ERROR') });

/** Starts a workflow the way the API does (src/api/routes/payments.ts): same id scheme, policies and search attributes. */
async function startPayment(client: Client, request: PaymentRequest) {
  return client.workflow.start(paymentWorkflow, {
    workflowId: paymentWorkflowId(request.ref),
    taskQueue: TASK_QUEUE,
    args: [request],
    workflowIdConflictPolicy: 'USE_EXISTING',
    workflowIdReusePolicy: 'ALLOW_DUPLICATE_FAILED_ONLY',
    ...paymentVisibility({ ref: request.ref, payer: 'alice', payee: 'bob', amount: request.amount }),
  });
}

async function startRefund(client: Client, request: RefundRequest) {
  return client.workflow.start(refundWorkflow, {
    workflowId: refundWorkflowId(request.ref, request.refundKey),
    taskQueue: TASK_QUEUE,
    args: [request],
    workflowIdConflictPolicy: 'USE_EXISTING',
    workflowIdReusePolicy: 'ALLOW_DUPLICATE_FAILED_ONLY',
    ...refundVisibility({ ref: request.ref, payer: 'bob', payee: 'alice', amount: request.amount }),
  });
}

/**
 * Opens a stream the way the API does (src/api/routes/streams.ts): update-with-start
 * on `stream-<ref>`, waiting on streamOpenedUpdate (tick 1 settled or opening failed).
 */
async function openStream(client: Client, request: StreamRequest, options: StreamWorkflowOptions = {}) {
  return startStreamWorkflow(client, TASK_QUEUE, request, options);
}

const streamRequest = (ref: string, terms: Pick<StreamRequest, 'ratePerTick' | 'maxTotal' | 'tickIntervalMs'>): StreamRequest => ({
  ref,
  payer: 'alice',
  payee: 'bob',
  payerAccountId: 'alice.wallet',
  payeeAccountId: 'bob.wallet',
  mode: 'escrow',
  ...terms,
});

function expectReceipt(receipt: StreamReceipt, expected: Partial<StreamReceipt>): void {
  for (const [k, v] of Object.entries(expected)) {
    if (receipt[k as keyof StreamReceipt] !== v) throw new Error(`unexpected stream receipt ${JSON.stringify(receipt)} (wanted ${JSON.stringify(expected)})`);
  }
}

function jobRequest(jobId: string, estimatedCost: number, simulate: WorkSimulation): JobRequest {
  return { jobId, payer: 'alice', payerAccountId: 'alice.wallet', estimatedCost, requestHash: jobId, work: { description: 'recorded', simulate }, paymentTimeoutMs: 60_000 };
}

function expectGrant(grant: GrantView, expected: Partial<GrantView>): void {
  for (const [k, v] of Object.entries(expected)) {
    if (grant[k as keyof GrantView] !== v) throw new Error(`unexpected grant ${JSON.stringify(grant)}: expected ${k} = ${String(v)}`);
  }
}

async function createSubaccount(client: Client, entityId: string, requestId: string): Promise<CreationResult> {
  return client.workflow.execute(subaccountCreationWorkflow, {
    workflowId: creationWorkflowId(entityId, requestId),
    taskQueue: TASK_QUEUE,
    args: [{ entityId, requestId }],
    ...subaccountCreationVisibility({ entityId, requestId }),
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The patch ids a history has markers for (patched() records one the first time a run takes the new path). */
function patchesIn(history: temporal.api.history.v1.IHistory): string[] {
  return (history.events ?? []).flatMap((e) => {
    const data = e.markerRecordedEventAttributes?.details?.['patch-data']?.payloads?.[0]?.data;
    return data ? [JSON.parse(Buffer.from(data).toString('utf8')).id as string] : [];
  });
}

/**
 * Checks a stream's history took the billing clock's path: the patch marker, `wakes`
 * billingDue signals sent to the clock (the open, each resume), and no tick billed
 * by the workflow itself (no billTick, no timer).
 */
function expectClocked(ref: string, history: temporal.api.history.v1.IHistory, { wakes }: { wakes: number }): void {
  const events = history.events ?? [];
  if (!patchesIn(history).includes(BILLING_CLOCK_PATCH)) throw new Error(`${ref} did not take the billing clock's path`);
  const sent = events.filter((e) => e.signalExternalWorkflowExecutionInitiatedEventAttributes?.signalName === billingDueSignal.name).length;
  if (sent !== wakes) throw new Error(`${ref} woke the billing clock ${sent} times, not ${wakes}`);
  if (events.some((e) => e.timerStartedEventAttributes || e.activityTaskScheduledEventAttributes?.activityType?.name === 'billTick')) {
    throw new Error(`${ref} billed a tick itself`);
  }
}

/** Writes the history (fetched now, unless given) in the JSON shape Temporal's tools use (historyToJSON), and checks it reads back. */
/** The history of a standing workflow once its workflow task has completed and its timer started (saved open). */
async function untilOnTimer(handle: WorkflowHandle): Promise<temporal.api.history.v1.IHistory> {
  for (let i = 0; ; i++) {
    if (i > 400) throw new Error(`${handle.workflowId} never started its timer`);
    const history = await handle.fetchHistory();
    const tail = history.events?.slice(-2) ?? [];
    if (tail.length === 2 && tail[0]!.workflowTaskCompletedEventAttributes && tail[1]!.timerStartedEventAttributes) return history;
    await sleep(50);
  }
}

async function save(name: string, handle: WorkflowHandle, fetched?: temporal.api.history.v1.IHistory): Promise<string> {
  const history = fetched ?? (await handle.fetchHistory());
  const file = join(HISTORIES_DIR, `${name}.json`);
  writeFileSync(file, `${historyToJSON(history)}\n`);
  const reread = historyFromJSON(JSON.parse(readFileSync(file, 'utf8')));
  if (reread.events?.length !== history.events?.length) throw new Error(`${file} does not round-trip`);
  log(`  wrote ${relative(process.cwd(), file)} (${history.events?.length} events)`);
  return file;
}

async function main(): Promise<void> {
  const cli = resolveTool(TEMPORAL_CLI);
  log(describeTool(cli));
  if (!cli.path) throw new Error('the Temporal CLI could not be found or installed');

  let server: DevServer | undefined;
  let db: ScratchDatabase | undefined;
  let client: Client | undefined;
  try {
    server = await startDevServer({ cliPath: cli.path, port: await freePort() });
    db = await createScratchDatabase(process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres', { prefix: 'sluice_histories' });
    log(`dev server ${server.address}, database ${new URL(db.url).pathname.slice(1)}`);

    await createParty(db.pool, { id: 'alice', name: 'Alice' });
    await createParty(db.pool, { id: 'bob', name: 'Bob' });
    await createAccount(db.pool, { id: 'alice.wallet', ownerId: 'alice', kind: 'user' });
    await createAccount(db.pool, { id: 'bob.wallet', ownerId: 'bob', kind: 'user' });
    await deposit(db.pool, { key: 'seed-alice', accountId: 'alice.wallet', amount: 1000 });

    client = await connectClient(server.address, 'default');
    // a webhook receiver that takes every delivery, and one fault: rec-ent's subaccount 2 fails to activate
    const hooks = createServer((req, res) => req.resume().on('end', () => res.writeHead(204).end()));
    await new Promise<void>((r) => hooks.listen(0, '127.0.0.1', r));
    const hookUrl = `http://127.0.0.1:${(hooks.address() as AddressInfo).port}/hooks`;
    // and faults: rec-ent's subaccount 2 fails to activate, rec-alloc's allocation commits but is reported
    // failed, rec-job-settle-refused's settlement is refused for good, rec-cancel's collateral step and
    // rec-elim's close_streams step fail twice (each workflow sits between its steps long enough to be cancelled there)
    const faults = parseFaults('activate@rec-ent/2=always,allocate@rec-alloc=after,settle@rec-job-settle-refused=always,hold_collateral@rec-cancel=2,close_streams@rec-elim=2');
    const { worker, connection, version } = await createWorker({ pool: db.pool, address: server.address, namespace: 'default', taskQueue: TASK_QUEUE, faults });
    const files: string[] = [];
    try {
      await worker.runUntil(async () => {
        // the worker is a version of a deployment of its own: current before any workflow starts
        await setCurrentVersion(client!, version!);
        // 1. paymentWorkflow, the happy path: settle, upsert SluiceStatus, return the receipt
        const paid = await startPayment(client!, { ref: 'rec-1', payerAccountId: 'alice.wallet', payeeAccountId: 'bob.wallet', amount: 250, memo: 'gpu minutes' });
        const receipt = await paid.result();
        if (receipt.status !== 'CONFIRMED' || receipt.amount !== 250) throw new Error(`unexpected receipt ${JSON.stringify(receipt)}`);
        files.push(await save('payment-success', paid));

        // 2. paymentWorkflow failing: the activity's non-retryable insufficient_funds fails the workflow
        const refused = await startPayment(client!, { ref: 'rec-big', payerAccountId: 'alice.wallet', payeeAccountId: 'bob.wallet', amount: 5000 });
        const failure = await refused.result().then(
          () => undefined,
          (error: unknown) => error,
        );
        if (!(failure instanceof WorkflowFailedError) || sluiceErrorFromTemporal(failure)?.code !== 'insufficient_funds') {
          throw new Error(`expected the payment to fail with insufficient_funds, got ${String(failure)}`);
        }
        files.push(await save('payment-insufficient-funds', refused));

        // 2b. paymentWorkflow cancelled through Temporal as it starts: its transaction runs to its end and the run
        //     completes with the receipt (PAYMENT_RUNS_THROUGH_CANCEL_PATCH)
        const cancelledPayment = await startPayment(client!, { ref: 'rec-cancelled', payerAccountId: 'alice.wallet', payeeAccountId: 'bob.wallet', amount: 10 });
        await cancelledPayment.cancel();
        if ((await cancelledPayment.result()).amount !== 10) throw new Error('rec-cancelled did not pay');
        if (!patchesIn(await cancelledPayment.fetchHistory()).includes(PAYMENT_RUNS_THROUGH_CANCEL_PATCH)) throw new Error('rec-cancelled took the old path');
        files.push(await save('payment-cancelled', cancelledPayment));

        // 3. refundWorkflow: part of the first payment back, payee to payer
        const refund = await startRefund(client!, { ref: 'rec-1', refundKey: 'r1', amount: 100 });
        const refundReceipt = await refund.result();
        if (refundReceipt.amount !== 100 || refundReceipt.refundedTotal !== 100) throw new Error(`unexpected refund ${JSON.stringify(refundReceipt)}`);
        files.push(await save('refund', refund));

        // The stream paths below are the billing clock's (BILLING_CLOCK_PATCH). The per-tick loop's histories
        // (stream-cancelled, stream-paused-resumed-run-*, stream-continued-*) were recorded before the patch and
        // cannot be recorded again: they are kept as they are, and replay the unpatched branch.
        // Every recorded stream is paid from alice.wallet: streams are sharded by payer account, so one
        // clock (that shard's) has served them all.
        const clockShard = shardOf('alice.wallet', BILLING_SHARDS_DEFAULT);
        const ticksBilled = async (ref: string) => (await getStream(db!.pool, ref)).ticks_billed;
        const untilTicksBilled = async (ref: string, n: number) => {
          for (let i = 0; (await ticksBilled(ref)) < n; i++) {
            if (i > 300) throw new Error(`stream ${ref} did not reach ${n} ticks`);
            await sleep(50);
          }
        };

        // 4. streamWorkflow cancelled by the payer: tick 1 at open, the clock woken (billingDue), the later ticks
        //    billed by the clock; the cancel signal wakes the workflow, the close bills what is due and releases the escrow
        const cancelled = await openStream(client!, streamRequest('rec-stream-clock-cancel', { ratePerTick: 5, maxTotal: 500, tickIntervalMs: 200 }));
        expectReceipt(cancelled.opened, { status: 'STREAMING', ticks: 1, totalPaid: 5 });
        await untilTicksBilled('rec-stream-clock-cancel', 5);
        await cancelled.handle.signal(cancelStreamSignal, { by: 'alice', reason: 'done' });
        const cancelReceipt = await cancelled.handle.result();
        expectReceipt(cancelReceipt, { status: 'CONFIRMED', reason: 'cancelled', closedBy: 'alice', totalPaid: 5 * cancelReceipt.ticks });
        if (cancelReceipt.ticks < 5) throw new Error(`unexpected receipt ${JSON.stringify(cancelReceipt)}`);
        expectClocked('rec-stream-clock-cancel', await cancelled.handle.fetchHistory(), { wakes: 1 });
        files.push(await save('stream-clocked-cancelled', cancelled.handle));

        // 4b. streamWorkflow paused and resumed (updates: the clock skips a paused stream, the resume wakes it
        //     again), paused again and cancelled while paused
        const paused = await openStream(client!, streamRequest('rec-stream-clock-pause', { ratePerTick: 2, maxTotal: 200, tickIntervalMs: 200 }));
        expectReceipt(paused.opened, { status: 'STREAMING', ticks: 1, totalPaid: 2 });
        await untilTicksBilled('rec-stream-clock-pause', 3);
        await paused.handle.executeUpdate(pauseStreamUpdate, { args: [{ by: 'alice' }] });
        const atPause = await ticksBilled('rec-stream-clock-pause');
        await sleep(600);
        if ((await ticksBilled('rec-stream-clock-pause')) !== atPause) throw new Error('rec-stream-clock-pause billed a tick while paused');
        await paused.handle.executeUpdate(resumeStreamUpdate, { args: [{ by: 'alice' }] });
        await untilTicksBilled('rec-stream-clock-pause', atPause + 3);
        await paused.handle.executeUpdate(pauseStreamUpdate, { args: [{ by: 'alice' }] });
        await paused.handle.signal(cancelStreamSignal, { by: 'alice', reason: 'done while paused' });
        const pausedReceipt = await paused.handle.result();
        expectReceipt(pausedReceipt, { status: 'CONFIRMED', reason: 'cancelled', closedBy: 'alice', totalPaid: 2 * pausedReceipt.ticks });
        if (pausedReceipt.ticks < atPause + 3) throw new Error(`unexpected receipt ${JSON.stringify(pausedReceipt)}`);
        if (pausedReceipt.pauses?.length !== 2 || !pausedReceipt.pauses[0]!.resumedAt || pausedReceipt.pauses[1]!.resumedAt) {
          throw new Error(`unexpected pauses ${JSON.stringify(pausedReceipt.pauses)}`);
        }
        const pausedHistory = await paused.handle.fetchHistory();
        expectClocked('rec-stream-clock-pause', pausedHistory, { wakes: 2 });
        const updates = pausedHistory.events?.filter((e) => e.workflowExecutionUpdateAcceptedEventAttributes).length ?? 0;
        if (updates !== 4) throw new Error(`rec-stream-clock-pause recorded ${updates} updates, not 4 (open, pause, resume, pause)`);
        files.push(await save('stream-clocked-paused-resumed', paused.handle));

        // 5. streamWorkflow completing at maxTotal (last tick partial): the clock bills ticks 2 to 5 (5 of 10 last),
        //    halts the stream and signals its workflow (streamHalted), which closes it as completed
        const completed = await openStream(client!, streamRequest('rec-stream-clock-done', { ratePerTick: 10, maxTotal: 45, tickIntervalMs: 200 }));
        expectReceipt(completed.opened, { status: 'STREAMING', ticks: 1, totalPaid: 10 });
        expectReceipt(await completed.handle.result(), { status: 'CONFIRMED', reason: 'completed', closedBy: 'system', ticks: 5, totalPaid: 45 });
        const completedHistory = await completed.handle.fetchHistory();
        expectClocked('rec-stream-clock-done', completedHistory, { wakes: 1 });
        if (!completedHistory.events?.some((e) => e.workflowExecutionSignaledEventAttributes?.signalName === streamHaltedSignal.name)) {
          throw new Error('rec-stream-clock-done was not closed by the clock\'s halt signal');
        }
        files.push(await save('stream-clocked-completed', completed.handle));

        // 5b. billingClockWorkflow, the shard of the three streams above: it runs for good, so its history is
        //     saved open, as it stands once the clock sleeps again (the last workflow task completed, its idle
        //     timer started), after it billed their ticks and sent the halt signal
        const clock = client!.workflow.getHandle(billingClockWorkflowId(TASK_QUEUE, clockShard, BILLING_SHARDS_DEFAULT));
        let clockHistory: temporal.api.history.v1.IHistory | undefined;
        for (let i = 0; ; i++) {
          if (i > 200) throw new Error(`the billing clock of shard ${clockShard} did not go back to sleep`);
          const history = await clock.fetchHistory();
          const tail = history.events?.slice(-2) ?? [];
          if (tail.length === 2 && tail[0]!.workflowTaskCompletedEventAttributes && tail[1]!.timerStartedEventAttributes) {
            clockHistory = history;
            break;
          }
          await sleep(50);
        }
        if ((await clock.describe()).status.name !== 'RUNNING') throw new Error('the billing clock is not running');
        const clockEvents = clockHistory.events ?? [];
        const billed = clockEvents.filter((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'billDue').length;
        const haltSent = clockEvents.some(
          (e) =>
            e.signalExternalWorkflowExecutionInitiatedEventAttributes?.signalName === streamHaltedSignal.name &&
            e.signalExternalWorkflowExecutionInitiatedEventAttributes.workflowExecution?.workflowId === streamWorkflowId('rec-stream-clock-done'),
        );
        const wakesTaken = clockEvents.filter((e) => e.workflowExecutionSignaledEventAttributes?.signalName === billingDueSignal.name).length;
        if (billed < 2 || !haltSent || wakesTaken < 4) {
          throw new Error(`the billing clock's history is not the one wanted: ${billed} billDue, halt signal ${haltSent ? '' : 'not '}sent, ${wakesTaken} wakes`);
        }
        files.push(await save('billing-clock', clock, clockHistory));

        // 5c. streamWorkflow cancelled through Temporal (the UI's Request Cancellation): it settles like a cancel,
        //     closedBy operator, reason workflow_cancelled, and completes with the receipt (OUTSIDE_CANCEL_SETTLES_PATCH)
        const outside = await openStream(client!, streamRequest('rec-stream-outside-cancel', { ratePerTick: 3, maxTotal: 300, tickIntervalMs: 200 }));
        await untilTicksBilled('rec-stream-outside-cancel', 3);
        await outside.handle.cancel();
        expectReceipt(await outside.handle.result(), { status: 'CONFIRMED', reason: 'workflow_cancelled', closedBy: 'operator' });
        if (!patchesIn(await outside.handle.fetchHistory()).includes(OUTSIDE_CANCEL_SETTLES_PATCH)) throw new Error('rec-stream-outside-cancel took the old path');
        files.push(await save('stream-outside-cancelled', outside.handle));

        // 6. streamWorkflow that cannot open: the escrow hold is refused, the stream is recorded FAILED and nothing is charged
        const refusedStream = await openStream(client!, streamRequest('rec-stream-poor', { ratePerTick: 1, maxTotal: 5000, tickIntervalMs: 200 }));
        expectReceipt(refusedStream.opened, { status: 'FAILED', ticks: 0, totalPaid: 0 });
        expectReceipt(await refusedStream.handle.result(), { status: 'FAILED' });
        files.push(await save('stream-open-failed', refusedStream.handle));

        // 7. grantJobWorkflow, free: reserved at decide time, work cheaper than the estimate, settled
        await setTier(db!.pool, 'alice', 'established');
        const free = await startJobWorkflow(client!, TASK_QUEUE, jobRequest('rec-job-free', 30, { actualCost: 20 }));
        expectGrant(free.decided, { decision: 'free', status: 'reserved', reserved: 30 });
        expectGrant(await free.handle.result(), { status: 'settled', absorbed: 20, returned: 10 });
        files.push(await save('job-free', free.handle));

        // 8. partial: advisory 20 (50 − 30 used), the payment update re-grants and charges, a duplicate payment changes nothing
        const partial = await startJobWorkflow(client!, TASK_QUEUE, jobRequest('rec-job-partial', 60, { actualCost: 60 }));
        expectGrant(partial.decided, { decision: 'partial', status: 'awaiting_payment', advisoryAbsorb: 30 });
        expectGrant(await partial.handle.executeUpdate(jobPaymentUpdate), { status: 'reserved', reserved: 30, paid: 30 });
        expectGrant(await partial.handle.executeUpdate(jobPaymentUpdate), { status: 'reserved', reserved: 30, paid: 30 });
        expectGrant(await partial.handle.result(), { status: 'settled', absorbed: 30, paid: 30, credited: 3 });
        files.push(await save('job-partial-paid', partial.handle));

        // 9. gate, paid, the work fails every attempt: the compensations refund the payment
        const failing = await startJobWorkflow(client!, TASK_QUEUE, jobRequest('rec-job-fail', 40, { failTimes: 'always' }));
        expectGrant(failing.decided, { decision: 'gate', status: 'awaiting_payment' });
        await failing.handle.executeUpdate(jobPaymentUpdate);
        expectGrant(await failing.handle.result(), { status: 'failed', paid: 40, refunded: 40 });
        files.push(await save('job-work-failed', failing.handle));

        // 10. no payment within the timeout: cancelled, nothing reserved or charged
        const unpaid = await startJobWorkflow(client!, TASK_QUEUE, { ...jobRequest('rec-job-timeout', 40, {}), paymentTimeoutMs: 1000 });
        expectGrant(await unpaid.handle.result(), { status: 'cancelled', paid: 0, reserved: 0 });
        files.push(await save('job-payment-timeout', unpaid.handle));

        // 10b. gate, paid, worked, the settlement refused for good (injected): compensated and failed (SETTLE_REFUSED_COMPENSATES_PATCH)
        const unsettled = await startJobWorkflow(client!, TASK_QUEUE, jobRequest('rec-job-settle-refused', 40, { actualCost: 40 }));
        await unsettled.handle.executeUpdate(jobPaymentUpdate);
        expectGrant(await unsettled.handle.result(), { status: 'failed', paid: 40, refunded: 40 });
        if (!patchesIn(await unsettled.handle.fetchHistory()).includes(SETTLE_REFUSED_COMPENSATES_PATCH)) throw new Error('rec-job-settle-refused took the old path');
        files.push(await save('job-settle-refused', unsettled.handle));

        // 10c. sessionWorkflow: opened (update-with-start), a free request, a partial one and the same free one sent
        //      again at once, a request whose work fails (compensated), one whose charge the balance cannot pay
        //      (refused, nothing reserved), then closed: what remains refunded, the receipt
        await createParty(db!.pool, { id: 'rec-sess', name: 'Recorded session payer' });
        await createAccount(db!.pool, { id: 'rec-sess.w', ownerId: 'rec-sess', kind: 'user' });
        await deposit(db!.pool, { key: 'seed-rec-sess', accountId: 'rec-sess.w', amount: 1000 });
        await setTier(db!.pool, 'rec-sess', 'trusted');
        const opening: SessionOpening = { sessionId: 'rec-session', payer: 'rec-sess', payerAccountId: 'rec-sess.w', amountUnits: 500 };
        const sessionOpened = await startSessionWorkflow(client!, TASK_QUEUE, opening);
        if (sessionOpened.balance !== 500) throw new Error(`unexpected session ${JSON.stringify(sessionOpened)}`);
        const sessionHandle = client!.workflow.getHandle(sessionWorkflowId('rec-session'));
        const sessionRequest = (requestId: string, estimatedCost: number, simulate: WorkSimulation) =>
          sessionHandle.executeUpdate(sessionRequestUpdate, { args: [{ requestId, estimatedCost, requestHash: requestId, work: { description: 'recorded', simulate } }] });
        expectGrant(await sessionRequest('r-free', 40, { actualCost: 30 }), { decision: 'free', status: 'settled', absorbed: 30, returned: 10, paid: 0 });
        const [partialRequest, again] = await Promise.all([sessionRequest('r-partial', 200, { actualCost: 200 }), sessionRequest('r-free', 40, { actualCost: 30 })]);
        expectGrant(partialRequest, { decision: 'partial', status: 'settled', absorbed: 170, paid: 30, credited: 3 });
        expectGrant(again, { status: 'settled', absorbed: 30 });
        expectGrant(await sessionRequest('r-fail', 20, { failTimes: 'always' }), { decision: 'gate', status: 'failed', paid: 20, refunded: 20 });
        const refusedRequest = await sessionRequest('r-too-dear', 10_000, {}).then(
          () => undefined,
          (error: unknown) => sluiceErrorFromTemporal(error),
        );
        if (refusedRequest?.code !== 'insufficient_funds') throw new Error(`r-too-dear was not refused for its charge: ${String(refusedRequest)}`);
        const closedSession = await sessionHandle.executeUpdate(closeSessionUpdate);
        if (closedSession.status !== 'closed' || closedSession.refunded !== 470 || closedSession.balance !== 0) throw new Error(`unexpected receipt ${JSON.stringify(closedSession)}`);
        await sessionHandle.result();
        files.push(await save('session-closed', sessionHandle));

        // 10d. sessionWorkflow whose funding the payer cannot pay: the open update fails, the run fails, nothing moved
        const poorOpening: SessionOpening = { sessionId: 'rec-session-poor', payer: 'rec-sess', payerAccountId: 'rec-sess.w', amountUnits: 1_000_000 };
        const poorOpen = await startSessionWorkflow(client!, TASK_QUEUE, poorOpening).then(
          () => undefined,
          (error: unknown) => sluiceErrorFromTemporal(error),
        );
        if (poorOpen?.code !== 'insufficient_funds') throw new Error(`rec-session-poor was not refused: ${String(poorOpen)}`);
        const poorHandle = client!.workflow.getHandle(sessionWorkflowId('rec-session-poor'));
        if (!(await poorHandle.result().then(() => false, (error: unknown) => error instanceof WorkflowFailedError))) throw new Error('rec-session-poor did not fail');
        files.push(await save('session-open-refused', poorHandle));

        // 11. subaccountCreationWorkflow → challenge (1 s) → the lifecycle passes it; then a failed creation
        //     (activate fails: unfund, release collateral, mark failed); then a challenge that fails and eliminates
        //     (assessEveryMs 0: the rules only at the end of the challenge, so the passed one's lifecycle ends there)
        await registerEntity(db!.pool, { id: 'rec-ent', name: 'Recorded', collateral: 100, funding: 50, webhookUrls: [hookUrl], challengeMs: 1000, challengeMinBps: 5000, assessEveryMs: 0 });
        await deposit(db!.pool, { key: 'seed-rec-ent', accountId: 'rec-ent.main', amount: 1000 });
        const created = await createSubaccount(client!, 'rec-ent', 'rec-1');
        if (created.subaccount?.status !== 'challenge') throw new Error(`unexpected creation ${JSON.stringify(created)}`);
        const createdHandle = client!.workflow.getHandle(creationWorkflowId('rec-ent', 'rec-1'));
        if (!patchesIn(await createdHandle.fetchHistory()).includes(SAGA_LOCAL_STEPS_PATCH)) throw new Error('rec-ent/1 took the old path (steps as activities)');
        files.push(await save('subaccount-created', createdHandle));
        const lifecycle = client!.workflow.getHandle(lifecycleWorkflowId('rec-ent/1'));
        if ((await lifecycle.result()).status !== 'active') throw new Error('rec-ent/1 did not pass its challenge');
        if (!patchesIn(await lifecycle.fetchHistory()).includes(ONGOING_RULES_PATCH)) throw new Error('rec-ent/1 took the old lifecycle');
        files.push(await save('subaccount-challenge-passed', lifecycle));
        const failed = await createSubaccount(client!, 'rec-ent', 'rec-2');
        if (failed.failedStep !== 'activate' || failed.compensated.join() !== 'unfund,release_collateral,mark_failed') throw new Error(`unexpected failure ${JSON.stringify(failed)}`);
        files.push(await save('subaccount-creation-failed', client!.workflow.getHandle(creationWorkflowId('rec-ent', 'rec-2'))));
        // an allocation that committed but was reported failed: its slot is marked failed (ALLOCATION_FAILED_MARKS_SLOT_PATCH)
        await registerEntity(db!.pool, { id: 'rec-alloc', name: 'Recorded', collateral: 100, funding: 50, webhookUrls: [hookUrl] });
        // funded, or the allocation would be refused for insufficient funds before the fault's commit
        await deposit(db!.pool, { key: 'seed-rec-alloc', accountId: 'rec-alloc.main', amount: 1000 });
        const lost = await createSubaccount(client!, 'rec-alloc', 'rec-1');
        if (lost.failedStep !== 'allocate' || lost.subaccount?.status !== 'failed') throw new Error(`unexpected allocation failure ${JSON.stringify(lost)}`);
        files.push(await save('subaccount-allocation-failed', client!.workflow.getHandle(creationWorkflowId('rec-alloc', 'rec-1'))));
        // a creation cancelled through Temporal between its steps (its collateral step failing, its local retry
        // waiting on a timer): the compensations run out of the cancellation's reach and the slot fails (SAGA_OUTSIDE_CANCEL_PATCH)
        await registerEntity(db!.pool, { id: 'rec-cancel', name: 'Recorded', collateral: 100, funding: 50, webhookUrls: [hookUrl] });
        await deposit(db!.pool, { key: 'seed-rec-cancel', accountId: 'rec-cancel.main', amount: 1000 });
        const cancelling = await client!.workflow.start(subaccountCreationWorkflow, {
          workflowId: creationWorkflowId('rec-cancel', 'rec-1'),
          taskQueue: TASK_QUEUE,
          args: [{ entityId: 'rec-cancel', requestId: 'rec-1' }],
          ...subaccountCreationVisibility({ entityId: 'rec-cancel', requestId: 'rec-1' }),
        });
        for (let i = 0; !(await db!.pool.query(`select 1 from subaccounts where entity_id = 'rec-cancel' and status = 'pending'`)).rows[0]; i++) {
          if (i > 400) throw new Error('rec-cancel/1 was never allocated');
          await sleep(5);
        }
        await cancelling.cancel();
        const cancelledCreation = await cancelling.result();
        if (cancelledCreation.error?.code !== 'workflow_cancelled' || cancelledCreation.subaccount?.status !== 'failed') throw new Error(`unexpected cancelled creation ${JSON.stringify(cancelledCreation)}`);
        const cancelledPatches = patchesIn(await cancelling.fetchHistory());
        if (!cancelledPatches.includes(SAGA_OUTSIDE_CANCEL_PATCH) || !cancelledPatches.includes(SAGA_LOCAL_STEPS_PATCH)) throw new Error('rec-cancel took the old path');
        files.push(await save('subaccount-creation-cancelled', cancelling));
        // an elimination cancelled through Temporal once begun (its close_streams step fails twice, which keeps it
        // between its steps): it runs to its end, no step asked to cancel, and completes eliminated
        // (ELIMINATION_RUNS_THROUGH_CANCEL_PATCH)
        await registerEntity(db!.pool, { id: 'rec-elim', name: 'Recorded', collateral: 100, funding: 50, webhookUrls: [hookUrl] });
        await deposit(db!.pool, { key: 'seed-rec-elim', accountId: 'rec-elim.main', amount: 1000 });
        const live = await createSubaccount(client!, 'rec-elim', 'rec-1');
        if (live.subaccount?.status !== 'active') throw new Error(`unexpected creation ${JSON.stringify(live)}`);
        const elimination = { id: live.subaccount.id, reason: 'recorded', by: 'operator' };
        const eliminating = await client!.workflow.start(subaccountEliminationWorkflow, {
          workflowId: eliminationWorkflowId(elimination.id),
          taskQueue: TASK_QUEUE,
          args: [elimination],
          ...subaccountEliminationVisibility(elimination),
        });
        for (let i = 0; !(await db!.pool.query(`select 1 from subaccounts where id = $1 and status = 'eliminating'`, [elimination.id])).rows[0]; i++) {
          if (i > 400) throw new Error(`${elimination.id} never began its elimination`);
          await sleep(5);
        }
        await eliminating.cancel();
        const eliminated = await eliminating.result();
        if (eliminated.subaccount.status !== 'eliminated') throw new Error(`unexpected cancelled elimination ${JSON.stringify(eliminated)}`);
        const eliminationHistory = await eliminating.fetchHistory();
        if (!patchesIn(eliminationHistory).includes(ELIMINATION_RUNS_THROUGH_CANCEL_PATCH)) throw new Error(`${elimination.id} took the old path`);
        const eliminationEvents = eliminationHistory.events ?? [];
        const cancelAt = eliminationEvents.findIndex((e) => e.workflowExecutionCancelRequestedEventAttributes);
        const settledAt = eliminationEvents.findIndex((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'settleElimination');
        if (cancelAt < 0 || settledAt < cancelAt) throw new Error(`${elimination.id} was not cancelled before it settled`);
        if (eliminationEvents.some((e) => e.activityTaskCancelRequestedEventAttributes)) throw new Error(`${elimination.id} asked a step to cancel`);
        files.push(await save('subaccount-elimination-cancelled', eliminating, eliminationHistory));

        const doomed = await createSubaccount(client!, 'rec-ent', 'rec-3');
        const doomedId = doomed.subaccount!.id;
        await transfer(db!.pool, { key: 'rec-spend', kind: 'transfer', debitAccountId: doomedId, creditAccountId: 'bob.wallet', amount: 40 });
        const doomedLife = client!.workflow.getHandle(lifecycleWorkflowId(doomedId));
        if ((await doomedLife.result()).status !== 'eliminated') throw new Error(`${doomedId} was not eliminated`);
        files.push(await save('subaccount-challenge-failed', doomedLife));
        files.push(await save('subaccount-eliminated', client!.workflow.getHandle(eliminationWorkflowId(doomedId))));

        // 11b. ongoing rules (ONGOING_RULES_PATCH): a subaccount passes its challenge, keeps passing its
        //      assessments every second, then falls 40% from its high-water mark (the limit 20%) and the
        //      next assessment eliminates it by max_drawdown
        await registerEntity(db!.pool, {
          id: 'rec-rules', name: 'Recorded', collateral: 10, funding: 50, webhookUrls: [hookUrl], challengeMs: 1000, assessEveryMs: 1000, maxDrawdownBps: 2000, inactivityMs: 3_600_000,
        });
        await deposit(db!.pool, { key: 'seed-rec-rules', accountId: 'rec-rules.main', amount: 1000 });
        const ruled = await createSubaccount(client!, 'rec-rules', 'rec-1');
        const ruledId = ruled.subaccount!.id;
        const ruledLife = client!.workflow.getHandle(lifecycleWorkflowId(ruledId));
        const assessmentsOf = async () => (await ruledLife.fetchHistory()).events!.filter((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'assessSubaccount').length;
        // the third scheduled: the challenge's assessment and one periodic one have passed
        for (let i = 0; (await assessmentsOf()) < 3; i++) {
          if (i > 400) throw new Error(`${ruledId} was not assessed twice`);
          await sleep(20);
        }
        await transfer(db!.pool, { key: 'rec-rules-spend', kind: 'transfer', debitAccountId: ruledId, creditAccountId: 'bob.wallet', amount: 20 });
        const ruledOut = await ruledLife.result();
        if (ruledOut.status !== 'eliminated' || ruledOut.eliminationRule?.rule !== 'max_drawdown') throw new Error(`${ruledId} was not eliminated by drawdown: ${JSON.stringify(ruledOut)}`);
        files.push(await save('subaccount-assessed-eliminated', ruledLife));
        // a lifecycle that continues as new after two assessments (assessmentsPerRunMax 2; the default is 100):
        // its first run, promoted, assessed twice, continued as new
        const { id: longId } = await allocateSubaccount(db!.pool, { entityId: 'rec-rules', requestId: 'rec-2', limits: { cap: 10, perHour: 10 } });
        await holdCollateral(db!.pool, longId);
        await fundSubaccount(db!.pool, longId);
        await activateSubaccount(db!.pool, longId);
        const longLife = await client!.workflow.start(subaccountLifecycleWorkflow, { workflowId: lifecycleWorkflowId(longId), taskQueue: TASK_QUEUE, args: [{ id: longId, assessmentsPerRunMax: 2 }] });
        const firstRun = client!.workflow.getHandle(longLife.workflowId, longLife.firstExecutionRunId);
        for (let i = 0; !(await firstRun.describe()).status.name.startsWith('CONTINUED'); i++) {
          if (i > 400) throw new Error(`${longId} did not continue as new`);
          await sleep(20);
        }
        files.push(await save('subaccount-assessed-continued', firstRun));
        await client!.workflow.getHandle(longLife.workflowId).terminate('recorded');
        let deliveryId: string | undefined;
        for await (const w of client!.workflow.list({ query: `WorkflowType = 'webhookDeliveryWorkflow'` })) {
          deliveryId ??= w.workflowId;
        }
        if (!deliveryId) throw new Error('no webhook delivery workflow ran');
        const delivery = client!.workflow.getHandle(deliveryId);
        await delivery.result();
        files.push(await save('webhook-delivered', delivery));

        // 12. reconcilerWorkflow: rounds of reconcileHeldOpen between timers. It runs for good, so (like the
        //     billing clock) its history is saved open once it sleeps again after its third round
        const reconciler = await client!.workflow.start(reconcilerWorkflow, { workflowId: 'rec-reconciler', taskQueue: TASK_QUEUE, args: [{ intervalMs: 300 }] });
        let reconcilerHistory: temporal.api.history.v1.IHistory | undefined;
        for (let i = 0; ; i++) {
          if (i > 400) throw new Error('the reconciler did not run three rounds');
          const history = await reconciler.fetchHistory();
          const rounds = history.events?.filter((e) => e.activityTaskCompletedEventAttributes).length ?? 0;
          const tail = history.events?.slice(-2) ?? [];
          if (rounds >= 3 && tail.length === 2 && tail[0]!.workflowTaskCompletedEventAttributes && tail[1]!.timerStartedEventAttributes) {
            reconcilerHistory = history;
            break;
          }
          await sleep(50);
        }
        files.push(await save('reconciler', reconciler, reconcilerHistory));
        await reconciler.terminate('recorded');

        // 13. checkpointWorkflow: the debt ledger's daily round, asleep until the next UTC midnight.
        //     It runs for good, so its history is saved open once its first timer has started
        //     (the rounds themselves run on the time-skipping server: timeskipping.test.ts)
        const checkpoints = await client!.workflow.start(checkpointWorkflow, { workflowId: 'rec-checkpoints', taskQueue: TASK_QUEUE, args: [] });
        files.push(await save('checkpoints', checkpoints, await untilOnTimer(checkpoints)));
        await checkpoints.terminate('recorded');
      });
      await new Promise((r) => hooks.close(r));
    } finally {
      await connection.close();
    }

    // the files must replay against the code that wrote them, or the replay test would be born red
    for (const file of files) {
      await Worker.runReplayHistory({ workflowsPath: WORKFLOWS_PATH }, JSON.parse(readFileSync(file, 'utf8')));
    }
    log(`recorded and replayed ${files.length} histories into ${relative(process.cwd(), HISTORIES_DIR)}/`);
  } finally {
    await client?.connection.close();
    await db?.drop();
    await server?.stop();
  }
}

mkdirSync(HISTORIES_DIR, { recursive: true });
main().then(
  () => process.exit(0),
  (error) => {
    process.stderr.write(`record-histories failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(1);
  },
);
