import { setCurrentVersion } from '../../src/temporal/deployments';
import { runAudit } from '../../src/audit';
import { CREATION_COMPENSATIONS, ELIMINATION_STEPS, SAGA_STEPS } from '../../src/domain/entities';
import { GRANT_COMPENSATIONS, GRANT_STEPS, jobWorkflowId } from '../../src/domain/grants';
import { parseFaults, type FaultStep } from '../../src/domain/faults';
import { jobsAccountTotals, poolTotals } from '../../src/ledger/pool';
import { createWorker } from '../../src/worker';
import { subaccountEliminationWorkflow } from '../../workflows/entities';
import { ADMIN_KEY, api, sameAnswer, startTestStack, type TestStack } from '../support/stack';

/**
 * Saga faults, table-driven: every step of every workflow that moves money in
 * several transactions (the subaccount creation saga, the grant job, the
 * elimination) fails in turn for good, after it committed, and once (then retried);
 * every compensation fails once and after it committed (it must be retried to
 * completion). One row per case, one body: after each, nothing leaks (the payer,
 * the pool, the entity's collateral and the subaccount hold exactly what the
 * outcome says, no hold of the case is left open, no reservation dangles, grants
 * are closed in full, failed slots keep their number) and the auditor is green.
 *
 * Streams are not here: opening (escrow hold + tick 1) and closing (last capture +
 * release) are one transaction each, with nothing to compensate.
 */
type Kind = 'always' | 'after' | 1;
type Workflow = 'creation' | 'grant' | 'elimination';
/** What a case ends as: the workflow's outcome; the balances and holds follow from it. */
type Outcome =
  | { creation: 'active' }
  | { creation: 'failed'; failedStep: string; compensated: string[] }
  | { creation: 'refused' } // nothing allocated: the request may be sent again
  | { grant: 'settled' | 'failed' | 'cancelled' | 'refused' }
  | { elimination: 'eliminated' | 'refused' } // refused: nothing began
  // begun, then refused for good: the subaccount stays `eliminating`, still holding its own, until the elimination is re-sent
  | { elimination: 'stuck_before_close' | 'stuck_before_settle' };
interface Row {
  workflow: Workflow;
  step: FaultStep;
  fault: Kind;
  expect: Outcome;
}

const ALL_UNDONE = ['unfund', 'release_collateral', 'mark_failed'];
const failedAt = (failedStep: string, compensated: string[]): Outcome => ({ creation: 'failed', failedStep, compensated });

/** The table. A compensation row also fails the last step for good (activate, the work), so every compensation runs. */
const ROWS: Row[] = [
  // the creation saga: allocate → hold_collateral → fund → activate (each a few retries, then compensate)
  { workflow: 'creation', step: 'allocate', fault: 'always', expect: { creation: 'refused' } },
  { workflow: 'creation', step: 'allocate', fault: 'after', expect: failedAt('allocate', ['mark_failed']) },
  { workflow: 'creation', step: 'allocate', fault: 1, expect: { creation: 'active' } },
  { workflow: 'creation', step: 'hold_collateral', fault: 'always', expect: failedAt('hold_collateral', ['mark_failed']) },
  { workflow: 'creation', step: 'hold_collateral', fault: 'after', expect: failedAt('hold_collateral', ['release_collateral', 'mark_failed']) },
  { workflow: 'creation', step: 'hold_collateral', fault: 1, expect: { creation: 'active' } },
  { workflow: 'creation', step: 'fund', fault: 'always', expect: failedAt('fund', ['release_collateral', 'mark_failed']) },
  { workflow: 'creation', step: 'fund', fault: 'after', expect: failedAt('fund', ALL_UNDONE) },
  { workflow: 'creation', step: 'fund', fault: 1, expect: { creation: 'active' } },
  { workflow: 'creation', step: 'activate', fault: 'always', expect: failedAt('activate', ALL_UNDONE) },
  { workflow: 'creation', step: 'activate', fault: 'after', expect: failedAt('activate', ALL_UNDONE) },
  { workflow: 'creation', step: 'activate', fault: 1, expect: { creation: 'active' } },
  // its compensations (activate fails for good): retried until they commit, each reported once
  { workflow: 'creation', step: 'unfund', fault: 1, expect: failedAt('activate', ALL_UNDONE) },
  { workflow: 'creation', step: 'unfund', fault: 'after', expect: failedAt('activate', ALL_UNDONE) },
  { workflow: 'creation', step: 'release_collateral', fault: 1, expect: failedAt('activate', ALL_UNDONE) },
  { workflow: 'creation', step: 'release_collateral', fault: 'after', expect: failedAt('activate', ALL_UNDONE) },
  { workflow: 'creation', step: 'mark_failed', fault: 1, expect: failedAt('activate', ALL_UNDONE) },
  { workflow: 'creation', step: 'mark_failed', fault: 'after', expect: failedAt('activate', ALL_UNDONE) },
  // the grant job (partial: 50 reserved from the pool, 30 paid): open → pay → work → settle;
  // the ledger steps are retried until they commit, so `after` is a lost reply and `always` a refusal
  { workflow: 'grant', step: 'open_grant', fault: 'always', expect: { grant: 'refused' } },
  { workflow: 'grant', step: 'open_grant', fault: 'after', expect: { grant: 'settled' } },
  { workflow: 'grant', step: 'open_grant', fault: 1, expect: { grant: 'settled' } },
  { workflow: 'grant', step: 'pay', fault: 'always', expect: { grant: 'cancelled' } }, // refused; the payment timeout cancels it
  { workflow: 'grant', step: 'pay', fault: 'after', expect: { grant: 'settled' } },
  { workflow: 'grant', step: 'pay', fault: 1, expect: { grant: 'settled' } },
  { workflow: 'grant', step: 'work', fault: 'always', expect: { grant: 'failed' } },
  { workflow: 'grant', step: 'work', fault: 'after', expect: { grant: 'settled' } }, // the work runs again
  { workflow: 'grant', step: 'work', fault: 1, expect: { grant: 'settled' } },
  { workflow: 'grant', step: 'settle', fault: 'always', expect: { grant: 'failed' } },
  { workflow: 'grant', step: 'settle', fault: 'after', expect: { grant: 'settled' } },
  { workflow: 'grant', step: 'settle', fault: 1, expect: { grant: 'settled' } },
  // its compensations (the work fails for good)
  { workflow: 'grant', step: 'refund_payment', fault: 1, expect: { grant: 'failed' } },
  { workflow: 'grant', step: 'refund_payment', fault: 'after', expect: { grant: 'failed' } },
  { workflow: 'grant', step: 'release_reservation', fault: 1, expect: { grant: 'failed' } },
  { workflow: 'grant', step: 'release_reservation', fault: 'after', expect: { grant: 'failed' } },
  { workflow: 'grant', step: 'close_grant', fault: 1, expect: { grant: 'failed' } },
  { workflow: 'grant', step: 'close_grant', fault: 'after', expect: { grant: 'failed' } },
  // the elimination of a subaccount paying a stream: begin → close its streams → settle (sweep, release, eliminated)
  { workflow: 'elimination', step: 'begin_elimination', fault: 'always', expect: { elimination: 'refused' } },
  { workflow: 'elimination', step: 'begin_elimination', fault: 'after', expect: { elimination: 'eliminated' } },
  { workflow: 'elimination', step: 'begin_elimination', fault: 1, expect: { elimination: 'eliminated' } },
  { workflow: 'elimination', step: 'close_streams', fault: 'always', expect: { elimination: 'stuck_before_close' } },
  { workflow: 'elimination', step: 'close_streams', fault: 'after', expect: { elimination: 'eliminated' } },
  { workflow: 'elimination', step: 'close_streams', fault: 1, expect: { elimination: 'eliminated' } },
  { workflow: 'elimination', step: 'settle_elimination', fault: 'always', expect: { elimination: 'stuck_before_settle' } },
  { workflow: 'elimination', step: 'settle_elimination', fault: 'after', expect: { elimination: 'eliminated' } },
  { workflow: 'elimination', step: 'settle_elimination', fault: 1, expect: { elimination: 'eliminated' } },
];

/** Every step of every workflow, from the domain: a new step without its rows fails the completeness test. */
const STEPS: Array<{ workflow: Workflow; steps: readonly FaultStep[]; kinds: Kind[] }> = [
  { workflow: 'creation', steps: SAGA_STEPS, kinds: ['always', 'after', 1] },
  { workflow: 'creation', steps: CREATION_COMPENSATIONS, kinds: ['after', 1] },
  { workflow: 'grant', steps: GRANT_STEPS, kinds: ['always', 'after', 1] },
  { workflow: 'grant', steps: GRANT_COMPENSATIONS, kinds: ['after', 1] },
  { workflow: 'elimination', steps: ELIMINATION_STEPS, kinds: ['always', 'after', 1] },
];
const isCompensation = (step: FaultStep) => (CREATION_COMPENSATIONS as readonly string[]).includes(step) || (GRANT_COMPENSATIONS as readonly string[]).includes(step);

/** Each row's own subject (an entity, a job id), so its fault touches nothing else. */
const subjectOf = (row: Row) => `${row.workflow[0]}-${row.step.replace(/_/g, '-')}-${row.fault}`;
const faultsOf = (row: Row) => {
  const s = subjectOf(row);
  const own = `${row.step}@${s}=${row.fault}`;
  if (!isCompensation(row.step)) return [own];
  return [own, row.workflow === 'creation' ? `activate@${s}=always` : `work@${s}=always`];
};

const COLLATERAL = 100;
const FUNDING = 50;
const MAIN_FUNDS = 10_000;
/** The partial job every grant row runs: tier established (50 a day), estimated and costing 80: 50 absorbed, 30 paid, 3 credited. */
const JOB = { estimatedCost: 80, reserved: 50, paid: 30, credited: 3 };
/** The elimination's stream: tick 1 (2) billed at open, the rest of the escrow (18) held. */
const STREAM = { ratePerTick: 2, maxTotal: 20 };

let stack: TestStack;
/** A second worker on the same database and server, with no fault: an elimination refused for good is re-sent there. */
let clean: Awaited<ReturnType<typeof createWorker>> & { taskQueue: string; running: Promise<void> };
let admin: ReturnType<typeof api>;
const keys: Record<string, string> = {};
const as = (party: string) => api(stack.app, keys[party]);
const enc = encodeURIComponent;
const account = async (id: string) => {
  const { rows } = await stack.db.pool.query<{ balance: number; held: number }>(`select balance::int, held::int from accounts where id = $1`, [id]);
  return rows[0];
};
/** Holds still open that this case placed: a subaccount's collateral and escrow, a job's pool reservation. */
const openHolds = async (reference: Record<string, string>) =>
  (await stack.db.pool.query(`select id, account_id, amount - captured - released as remaining, reference from holds where status = 'open' and reference @> $1`, [reference])).rows;

async function entity(id: string) {
  const res = await admin.post('/v1/entities', { id, name: id, collateral: COLLATERAL, funding: FUNDING, webhookUrls: [] });
  expect(res.status).toBe(201);
  keys[id] = res.body.apiKey;
  expect((await admin.post('/v1/deposits', { accountId: `${id}.main`, amount: MAIN_FUNDS }, `fund-${id}`)).status).toBe(201);
}

async function party(id: string, funds: number, tier?: string) {
  const res = await admin.post('/v1/parties', { id, name: id });
  expect(res.status).toBe(201);
  keys[id] = res.body.apiKey;
  expect((await as(id).post('/v1/accounts', { id: `${id}.w` })).status).toBe(201);
  if (funds) expect((await admin.post('/v1/deposits', { accountId: `${id}.w`, amount: funds }, `fund-${id}`)).status).toBe(201);
  if (tier) expect((await admin.post(`/v1/parties/${id}/tier`, { tier })).status).toBe(200);
}

beforeAll(async () => {
  stack = await startTestStack({ faults: parseFaults(ROWS.flatMap(faultsOf).join(',')) });
  admin = api(stack.app, ADMIN_KEY);
  await party('shop', 0);
  const taskQueue = `${stack.taskQueue}-clean`;
  const w = await createWorker({ pool: stack.db.pool, address: process.env.SLUICE_TEST_TEMPORAL_ADDRESS!, namespace: 'default', taskQueue, workflowBundlePath: process.env.SLUICE_TEST_WORKFLOW_BUNDLE!, dailyCheckpoints: false });
  clean = { ...w, taskQueue, running: w.worker.run() };
  // a version of a deployment of its own (every worker is one): current before the tests start workflows on it
  await setCurrentVersion(stack.client, w.version!);
});
afterAll(async () => {
  clean.worker.shutdown();
  await clean.running;
  await clean.connection.close();
  await stack.stop();
});

/** The creation saga: one subaccount for a fresh entity. */
async function creation(id: string, expected: Extract<Outcome, { creation: unknown }>) {
  await entity(id);
  const res = await as(id).post(`/v1/entities/${id}/subaccounts`, { requestId: 'r' });
  const sub = `${id}/1`;
  const slot = (await stack.db.pool.query(`select status, failed_step from subaccounts where entity_id = $1`, [id])).rows;
  const nextSeq = (await as(id).get(`/v1/entities/${id}`)).body.nextSeq;
  if (expected.creation === 'active') {
    expect(res.status).toBe(201);
    expect(res.body.subaccount).toMatchObject({ id: sub, status: 'active' });
    expect(await account(`${id}.main`)).toEqual({ balance: MAIN_FUNDS - FUNDING, held: COLLATERAL });
    expect(await account(sub)).toEqual({ balance: FUNDING, held: 0 });
    expect((await openHolds({ subaccount: sub })).map((h) => h.remaining)).toEqual([COLLATERAL]);
    expect(slot).toEqual([{ status: 'active', failed_step: null }]);
    return;
  }
  // failed or refused: the entity is whole, nothing is held for the subaccount, its account (if any) is empty
  expect(await account(`${id}.main`)).toEqual({ balance: MAIN_FUNDS, held: 0 });
  expect(await openHolds({ subaccount: sub })).toEqual([]);
  if (expected.creation === 'refused') {
    expect(res.status).toBe(422);
    expect(res.body.error).toMatchObject({ code: 'creation_failed', details: { failedStep: 'allocate', subaccount: null } });
    expect(slot).toEqual([]);
    expect(nextSeq).toBe(1); // no number burned
    return;
  }
  expect(res.status).toBe(422);
  expect(res.body.error).toMatchObject({ code: 'creation_failed', details: { failedStep: expected.failedStep, compensated: expected.compensated, subaccount: { id: sub, status: 'failed' } } });
  expect(slot).toEqual([{ status: 'failed', failed_step: expected.failedStep }]);
  expect(nextSeq).toBe(2); // its number stays burned
  // its account exists once funded, and is then emptied
  expect(await account(sub)).toEqual(expected.compensated.includes('unfund') ? { balance: 0, held: 0 } : undefined);
  // the same request answers the same failure
  expect(sameAnswer(await as(id).post(`/v1/entities/${id}/subaccounts`, { requestId: 'r' }))).toEqual(sameAnswer(res));
}

/** The grant job: one partial job for a fresh payer, paid, worked, settled or compensated. */
async function grant(jobId: string, expected: Extract<Outcome, { grant: unknown }>) {
  await party(jobId, 1000, 'established');
  // the pool is the sum of its stripes
  const poolNow = async () => {
    const { balance, held } = await poolTotals(stack.db.pool);
    return { balance, held };
  };
  const before = { pool: await poolNow(), jobs: await jobsAccountTotals(stack.db.pool) }; // over the stripes
  const timeoutMs = expected.grant === 'cancelled' ? 1000 : 60_000;
  const opened = await as(jobId).post('/v1/jobs', { jobId, accountId: `${jobId}.w`, estimatedCost: JOB.estimatedCost, paymentTimeoutMs: timeoutMs, work: { description: 'table', simulate: { actualCost: JOB.estimatedCost } } });
  const handle = stack.client.workflow.getHandle(jobWorkflowId(jobId));
  const grantRow = async () => (await stack.db.pool.query(`select status, reserved, absorbed, returned, paid, refunded, credited from grants where job_id = $1`, [jobId])).rows[0];
  if (expected.grant === 'refused') {
    expect(opened.status).toBe(500);
    await expect(handle.result()).rejects.toThrow();
    expect(await grantRow()).toBeUndefined();
  } else {
    expect(opened.status).toBe(201);
    expect(opened.body).toMatchObject({ decision: 'partial', status: 'awaiting_payment' });
    const paid = await as(jobId).post(`/v1/jobs/${jobId}/payment`);
    if (expected.grant === 'cancelled') expect(paid.status).toBe(500);
    else expect(paid.body).toMatchObject({ status: 'reserved', reserved: JOB.reserved, paid: JOB.paid });
    expect(await handle.result()).toMatchObject({ status: expected.grant });
    const settled = expected.grant === 'settled';
    const paidNow = expected.grant === 'cancelled' ? 0 : JOB.paid;
    const reserved = expected.grant === 'cancelled' ? 0 : JOB.reserved;
    expect(await grantRow()).toEqual({
      status: expected.grant,
      reserved,
      absorbed: settled ? JOB.reserved : 0,
      returned: settled ? 0 : reserved,
      paid: paidNow,
      refunded: settled ? 0 : paidNow,
      credited: settled ? JOB.credited : 0,
    });
    // each money movement once, whatever was retried
    const moves = await stack.db.pool.query(`select kind, count(*)::int as n from transfers where job_id = $1 group by kind order by kind`, [jobId]);
    expect(moves.rows).toEqual(
      settled
        ? [{ kind: 'job_absorb', n: 1 }, { kind: 'job_payment', n: 1 }, { kind: 'pool_credit', n: 1 }]
        : paidNow
          ? [{ kind: 'job_payment', n: 1 }, { kind: 'job_refund', n: 1 }]
          : [],
    );
  }
  const settled = expected.grant === 'settled';
  expect(await account(`${jobId}.w`)).toEqual({ balance: 1000 - (settled ? JOB.paid : 0), held: 0 });
  expect(await poolNow()).toEqual({ balance: before.pool.balance - (settled ? JOB.reserved - JOB.credited : 0), held: before.pool.held });
  expect(await jobsAccountTotals(stack.db.pool)).toEqual({ balance: before.jobs.balance + (settled ? JOB.estimatedCost - JOB.credited : 0), held: 0 });
  expect(await openHolds({ job: jobId })).toEqual([]);
}

/** The elimination of a fresh entity's subaccount that pays a stream. */
async function elimination(id: string, expected: Extract<Outcome, { elimination: unknown }>) {
  await entity(id);
  const sub = `${id}/1`;
  expect((await as(id).post(`/v1/entities/${id}/subaccounts`, {})).status).toBe(201);
  const ref = `${id}-s`;
  const stream = await as(id).post('/v1/streams', { ref, fromAccountId: sub, toAccountId: 'shop.w', ...STREAM, tickIntervalMs: 600_000 });
  expect(stream.status).toBe(201);
  const res = await as(id).post(`/v1/subaccounts/${enc(sub)}/eliminate`, { reason: 'table' });
  const status = (await stack.db.pool.query(`select status from subaccounts where id = $1`, [sub])).rows[0].status;
  const streamStatus = async () => (await stack.db.pool.query(`select status from streams where ref = $1`, [ref])).rows[0].status;
  const left = FUNDING - STREAM.ratePerTick;
  if (expected.elimination === 'eliminated') {
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ subaccount: { id: sub, status: 'eliminated' }, swept: left, collateralReleased: true, streams: [expect.objectContaining({ ref, totalPaid: STREAM.ratePerTick })] });
    expect(status).toBe('eliminated');
    expect(await account(sub)).toEqual({ balance: 0, held: 0 });
    expect(await account(`${id}.main`)).toEqual({ balance: MAIN_FUNDS - FUNDING + left, held: 0 });
    expect(await openHolds({ subaccount: sub })).toEqual([]);
    expect(await openHolds({ stream: ref })).toEqual([]);
    expect(await streamStatus()).toBe('closed');
    return;
  }
  // failed on the way: nothing moved but what the steps before it committed, the subaccount still holds its own
  expect(res.status).toBe(500);
  expect(status).toBe(expected.elimination === 'refused' ? 'active' : 'eliminating');
  expect(await account(`${id}.main`)).toEqual({ balance: MAIN_FUNDS - FUNDING, held: COLLATERAL });
  expect((await openHolds({ subaccount: sub })).map((h) => h.remaining)).toEqual([COLLATERAL]);
  const closedAlready = expected.elimination === 'stuck_before_settle';
  expect(await streamStatus()).toBe(closedAlready ? 'closed' : 'open');
  expect(await account(sub)).toEqual({ balance: left, held: closedAlready ? 0 : STREAM.maxTotal - STREAM.ratePerTick });
  if (expected.elimination === 'refused') {
    // nothing began: the payer closes its stream, the escrow comes back
    expect((await as(id).post(`/v1/streams/${ref}/cancel`, {})).status).toBe(200);
    expect(await account(sub)).toEqual({ balance: left, held: 0 });
    return;
  }
  // begun and stuck: re-sent (here to a worker without the fault), it resumes and ends eliminated, everything swept
  const resumed = await stack.client.workflow.execute(subaccountEliminationWorkflow, {
    workflowId: `${id}-resent`,
    taskQueue: clean.taskQueue,
    args: [{ id: sub, reason: 'table', by: id }],
  });
  expect(resumed).toMatchObject({ subaccount: { status: 'eliminated' }, swept: left, collateralReleased: true });
  expect(resumed.streams.map((r) => r.ref)).toEqual([ref]);
  expect(await account(sub)).toEqual({ balance: 0, held: 0 });
  expect(await account(`${id}.main`)).toEqual({ balance: MAIN_FUNDS - FUNDING + left, held: 0 });
  expect(await openHolds({ subaccount: sub })).toEqual([]);
  expect(await openHolds({ stream: ref })).toEqual([]);
  expect(await streamStatus()).toBe('closed');
}

describe('saga faults', () => {
  test('the table has a row for every step and compensation of every workflow, for each kind of fault', () => {
    const have = new Set(ROWS.map((r) => `${r.workflow}:${r.step}:${r.fault}`));
    const want = STEPS.flatMap(({ workflow, steps, kinds }) => steps.flatMap((step) => kinds.map((k) => `${workflow}:${step}:${k}`)));
    expect(want.filter((w) => !have.has(w))).toEqual([]);
    expect(ROWS).toHaveLength(want.length);
  });

  test.each(ROWS.map((row) => [`${row.workflow} ${row.step} ${row.fault}`, row] as const))('%s', async (_name, row) => {
    const subject = subjectOf(row);
    const e = row.expect;
    if ('creation' in e) await creation(subject, e);
    else if ('grant' in e) await grant(subject, e);
    else await elimination(subject, e);
    expect((await runAudit(stack.db.pool)).checks.filter((c) => !c.ok)).toEqual([]);
  }, 60_000);
});
