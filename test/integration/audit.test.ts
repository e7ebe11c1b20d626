import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { resolve } from 'node:path';
import type { Client } from '@temporalio/client';
import type { PoolClient } from 'pg';
import { AUDIT_CHECK_NAMES, runAudit, WORKFLOWS_CHECK, type AuditReport, type AuditTemporal } from '../../src/audit';
import { loadConfig } from '../../src/config';
import { withTransaction } from '../../src/db/pool';
import { createAccount } from '../../src/ledger/accounts';
import { billTick, closeStream, openStream } from '../../src/ledger/streams';
import { captureHold, placeHold } from '../../src/ledger/holds';
import { deposit } from '../../src/ledger/transfers';
import { openGrant, payForGrant, setTier, settleGrant } from '../../src/ledger/grants';
import { closeSession, openSession, openSessionRequest } from '../../src/ledger/sessions';
import { grantOperator } from '../../src/ledger/operators';
import { refundPayment, settlePayment } from '../../src/ledger/payments';
import { activateSubaccount, allocateSubaccount, fundSubaccount, holdCollateral, registerEntity } from '../../src/ledger/entities';
import { DEFAULT_TIER_BUDGETS, utcDay } from '../../src/domain/grants';
import { streamWorkflowId } from '../../src/domain/streams';
import { connectClient } from '../../src/temporal/connection';
import { createTestDatabase, type TestDatabase } from '../support/db';

/**
 * The auditor catches what it claims to: every check it has is turned red, alone, by
 * its own corruption of a ledger that Sluice moved and that is green. A corruption is
 * what only a bug or a hand edit could do: straight SQL as the owner role, triggers
 * off where they would refuse it (session_replication_role = replica), and where a
 * CHECK or a unique index refuses it even so, the test first proves the database
 * refuses it, then drops the guard to show the auditor would still see it. Each runs
 * in a transaction that is rolled back (the auditor reads inside it), so the ledger is
 * green again for the next.
 *
 * The workflows check asks Temporal too: every open stream of this ledger has a
 * stand-in workflow running under its id (on a task queue no worker polls, so it
 * runs and does nothing). The database checks are asked without Temporal: a
 * corruption of theirs may leave money held open that no workflow runs for (forged
 * pending subaccounts have no creation saga), which the workflows check would
 * rightly report as well.
 */
let db: TestDatabase;
let client: Client;
const run = randomBytes(3).toString('hex');
/** Stream refs of this run: their workflow ids are unique on the shared test Temporal server. */
const [S1, S2, S3, S4] = ['s1', 's2', 's3', 's4'].map((s) => `audit-${run}-${s}`) as [string, string, string, string];
/** The task queue of the stand-in workflows: none polls it. */
const taskQueue = `audit-idle-${run}`;
/** Parties (and their stream) that no corruption touches. */
const BYSTANDERS = ['by1', 'by2'];
const BY_STREAM = `audit-${run}-by`;
const temporal = (): AuditTemporal => ({ client, taskQueue });
/** A running workflow under a stream's id, as its stream workflow would be (it never gets a worker). */
const standIn = (ref: string) => client.workflow.start('standIn', { workflowId: streamWorkflowId(ref), taskQueue, args: [] });
const failingIn = (report: AuditReport) => report.checks.filter((c) => !c.ok).map((c) => c.name);

/** `sluice audit` against the test database: its exit code and output. */
function cliAudit(): { code: number; out: string } {
  try {
    const out = execFileSync(process.execPath, ['--import', 'tsx', resolve(__dirname, '../../src/cli.ts'), 'audit'], {
      env: { ...process.env, DATABASE_URL: db.url, TEMPORAL_ADDRESS: process.env.SLUICE_TEST_TEMPORAL_ADDRESS, SLUICE_TASK_QUEUE: taskQueue },
      encoding: 'utf8',
    });
    return { code: 0, out };
  } catch (e) {
    const err = e as { status: number; stdout: string };
    return { code: err.status, out: err.stdout };
  }
}

/** Triggers off for the rest of the transaction: the statements that follow write what the ledger's triggers would refuse or redo. */
const triggersOff = (c: PoolClient) => c.query(`set local session_replication_role = replica`);

/** A transfer of kind 'transfer' written with the triggers off, its two balances moved by hand as the trigger would. */
async function rawTransfer(c: PoolClient, t: { key: string; from: string; to: string; amount: number }) {
  await triggersOff(c);
  await c.query(`insert into transfers (idempotency_key, kind, debit_account_id, credit_account_id, amount) values ($1, 'transfer', $2, $3, $4)`, [t.key, t.from, t.to, t.amount]);
  await c.query(`update accounts set balance = balance + case id when $2 then $3::bigint else -$3::bigint end where id in ($1, $2)`, [t.from, t.to, t.amount]);
}

/** The configured default cap of an entity without its own (what the worker allocates against). */
const CAP_DEFAULT = loadConfig().SLUICE_SUBACCOUNT_CAP;

/** `n` live (pending) subaccounts for `entity` from number `from` on, its next number past them: only the count can be wrong. */
async function pendingSlots(c: PoolClient, entity: string, from: number, n: number) {
  await c.query(
    `insert into subaccounts (id, entity_id, seq, request_id, status, funding)
     select $1 || '/' || g, $1, g, 'forged-' || g, 'pending', 0 from generate_series($2::int, $2::int + $3::int - 1) g`,
    [entity, from, n],
  );
  await c.query(`update entities set next_seq = $2 where id = $1`, [entity, from + n]);
}

interface Corruption {
  /** The check this corruption, alone, must turn red. */
  check: string;
  /** What was done to the books, in words (the test's name). */
  what: string;
  /**
   * Where the database itself refuses the corruption (a CHECK, a unique index): the
   * statements that drop that guard. The corruption is first run with the guard in
   * place and must fail with `refusedWith` (a SQLSTATE); then the guard goes and it runs.
   */
  guard?: { drop: string[]; refusedWith: string };
  /** The corruption, in the transaction that is rolled back after the audit (and may reach outside the database). */
  corrupt: (c: PoolClient) => Promise<unknown>;
  /** Undoes what the rollback cannot (a corruption outside the database). */
  restore?: () => Promise<unknown>;
  /** A check that needs Temporal: the auditor is asked with it (and so every other check must stay green too). */
  temporal?: boolean;
}

/**
 * One row per way to break each check; every check of the auditor needs at least one
 * (the first test below compares the names), so a new check comes with its corruption.
 */
const CORRUPTIONS: Corruption[] = [
  {
    check: 'conservation.sum_zero',
    what: 'an account with money moved to another currency (each currency no longer sums to zero)',
    corrupt: async (c) => {
      await triggersOff(c);
      await c.query(`update accounts set currency = 'EUR' where id = 'q.w'`);
    },
  },
  {
    check: 'conservation.balance_is_sum_of_transfers',
    what: 'five units moved between two balances with no transfer (the sum is still zero)',
    corrupt: async (c) => {
      await triggersOff(c);
      await c.query(`update accounts set balance = balance + case id when 'q.w' then 5 else -5 end where id in ('p.w', 'q.w')`);
    },
  },
  {
    check: 'conservation.available_not_negative',
    what: 'a transfer that spends money the payer holds (balances still follow transfers)',
    guard: { drop: [`alter table accounts drop constraint available_not_negative`], refusedWith: '23514' },
    corrupt: (c) =>
      c.query(
        `insert into transfers (idempotency_key, kind, debit_account_id, credit_account_id, amount)
         select 'overdraw', 'transfer', 'p.w', 'q.w', balance - held + 1 from accounts where id = 'p.w'`,
      ),
  },
  {
    check: 'holds.within_amount',
    what: 'a hold released for more than it had left (its account no longer holding it)',
    guard: { drop: [`alter table holds drop constraint hold_resolves_at_most_once`], refusedWith: '23514' },
    corrupt: async (c) => {
      await triggersOff(c);
      await c.query(`update accounts a set held = a.held - (h.amount - h.captured - h.released) from holds h where h.idempotency_key = 'h' and a.id = h.account_id`);
      await c.query(`update holds set released = amount - captured + 1, status = 'released', resolved_at = now() where idempotency_key = 'h'`);
    },
  },
  {
    check: 'holds.held_matches_open_holds',
    what: "an account's held raised with no hold behind it",
    corrupt: async (c) => {
      await triggersOff(c);
      await c.query(`update accounts set held = held + 1 where id = 'p.w'`);
    },
  },
  {
    check: 'streams.paid_is_sum_of_ticks',
    what: "a stream's paid total raised with no tick behind it (still within its cap)",
    corrupt: (c) => c.query(`update streams set paid = paid + 1 where ref = '${S2}'`),
  },
  {
    check: 'streams.tick_billed_once',
    what: "a stream's tick 1 billed a second time, its paid total and tick row following (the books otherwise agree)",
    guard: { drop: [`alter table transfers disable trigger transfers_claimed`], refusedWith: '23505' },
    corrupt: async (c) => {
      // triggers on: the second transfer moves the balances as a real one would
      await c.query(
        `insert into transfers (idempotency_key, kind, debit_account_id, credit_account_id, amount, stream_ref, tick)
         values ('stream:${S2}:tick:1', 'stream_tick', 'p.w', 'q.w', 10, '${S2}', 1)`,
      );
      await triggersOff(c);
      await c.query(`update stream_ticks set amount = amount + 10 where stream_ref = '${S2}' and tick = 1`);
      await c.query(`update streams set paid = paid + 10 where ref = '${S2}'`);
    },
  },
  {
    check: 'streams.split_matches_members',
    what: 'a distribution member credited one unit more than its split transfers',
    corrupt: (c) => c.query(`update stream_members set received = received + 1 where stream_ref = '${S3}' and account_id = 'q.w'`),
  },
  {
    check: 'streams.no_drain_after_close',
    what: 'a stream whose close is earlier than its ticks (a tick committed after the close)',
    corrupt: (c) =>
      c.query(`update streams set closed_at = (select min(created_at) from transfers where stream_ref = '${S1}') - interval '1 second' where ref = '${S1}'`),
  },
  {
    check: 'streams.no_overbill_on_partition',
    what: 'a tick billed while the payee had been silent for twice the liveness timeout',
    corrupt: async (c) => {
      await triggersOff(c);
      await c.query(`update stream_ticks set payee_seen_at = coalesce(due_at, billed_at) - interval '2 minutes' where stream_ref = '${S1}' and tick = 1`);
    },
  },
  {
    check: 'streams.paid_within_cap',
    what: 'a payg stream whose cap was lowered below what it paid',
    guard: { drop: [`alter table streams drop constraint stream_paid_within_cap`], refusedWith: '23514' },
    corrupt: (c) => c.query(`update streams set max_total = paid - 1 where ref = '${S2}'`),
  },
  {
    check: 'operators.within_daily_limit',
    what: "an operator's streams committing more in a day than its limit",
    guard: { drop: [`alter table operator_spend drop constraint operator_daily_limit`], refusedWith: '23514' },
    corrupt: (c) => c.query(`update operator_spend set spent = daily_limit + 1 where payer = 'p' and operator = 'op'`),
  },
  {
    check: 'streams.escrow_matches_cap',
    what: "an escrow stream's cap raised without its hold (a top-up half done)",
    corrupt: (c) => c.query(`update streams set max_total = max_total + 7 where ref = '${S1}'`),
  },
  {
    check: 'streams.escrow_settled',
    what: 'an escrow stream marked closed without releasing its escrow',
    corrupt: (c) => c.query(`update streams set status = 'closed', closed_at = clock_timestamp(), close_reason = 'cancelled', closed_by = 'p' where ref = '${S4}'`),
  },
  {
    check: 'payments.refunds_within_paid',
    what: "a payment's refunded total raised with no refund behind it",
    corrupt: (c) => c.query(`update payments set refunded = refunded + 1 where ref = 'pay1'`),
  },
  {
    check: 'grants.within_daily_budget',
    what: "a day's grants using more than the budget they were reserved against",
    corrupt: async (c) => {
      await triggersOff(c);
      await c.query(`update grants set budget = 10 where job_id = 'g1'`);
    },
  },
  {
    check: 'grants.reservation_matches_hold',
    what: "a grant's pool hold capturing one unit less than the grant absorbed",
    corrupt: async (c) => {
      await triggersOff(c);
      await c.query(`update holds set captured = captured - 1, released = released + 1 where id = (select hold_id from grant_holds where job_id = 'g1')`);
    },
  },
  {
    check: 'grants.money_matches_transfers',
    what: 'a job whose grant says it was paid 14 and refunded 2 where its transfers say 15 and 3',
    corrupt: (c) => c.query(`update grants set paid = paid - 1, refunded = refunded - 1 where job_id = 'g2'`),
  },
  {
    check: 'grants.money_matches_transfers',
    what: "a job whose money went through another jobs account stripe than its grant's",
    corrupt: (c) => c.query(`update grants set jobs_account_id = case jobs_account_id when 'sluice.jobs' then 'sluice.jobs.1' else 'sluice.jobs' end where job_id = 'g2'`),
  },
  {
    check: 'grants.pool_conservation',
    what: 'the pool paying 25 out by a transfer that is neither an absorption nor a credit',
    corrupt: (c) => rawTransfer(c, { key: 'pool-leak', from: 'sluice.pool', to: 'q.w', amount: 25 }),
  },
  {
    check: 'grants.pool_conservation',
    what: "one pool stripe paying 25 to another: the pool's sum unchanged, each stripe's books broken",
    corrupt: (c) => rawTransfer(c, { key: 'stripe-shuffle', from: 'sluice.pool', to: 'sluice.pool.1', amount: 25 }),
  },
  {
    check: 'subaccounts.collateral_held_while_live',
    what: "a live subaccount whose collateral hold was released (its entity's held following)",
    corrupt: async (c) => {
      await triggersOff(c);
      await c.query(`update accounts set held = held - 100 where id = 'ent.main'`);
      await c.query(`update holds set released = amount, status = 'released', resolved_at = now() where idempotency_key = 'sub:ent/1:collateral'`);
    },
  },
  {
    check: 'subaccounts.within_cap_and_sequence',
    what: 'an entity with a cap of 1 holding 2 live subaccounts (numbered in sequence)',
    corrupt: async (c) => {
      await triggersOff(c);
      await pendingSlots(c, 'ent', 2, 1);
    },
  },
  {
    check: 'subaccounts.within_cap_and_sequence',
    what: `an entity without its own cap holding one live subaccount more than the configured one (${CAP_DEFAULT})`,
    corrupt: async (c) => {
      await triggersOff(c);
      await pendingSlots(c, 'ent2', 1, CAP_DEFAULT + 1);
    },
  },
  {
    check: 'subaccounts.within_cap_and_sequence',
    what: "an entity's next number reset below the numbers it gave out",
    corrupt: (c) => c.query(`update entities set next_seq = 1 where id = 'ent'`),
  },
  {
    check: WORKFLOWS_CHECK,
    what: 'a closed stream reopened in the ledger, no workflow ever running for it',
    temporal: true,
    corrupt: (c) => c.query(`update streams set status = 'open', closed_at = null, close_reason = null, closed_by = null where ref = '${S1}'`),
  },
  {
    check: WORKFLOWS_CHECK,
    what: "an open stream's workflow terminated from outside, the ledger still holding it open",
    temporal: true,
    corrupt: () => client.workflow.getHandle(streamWorkflowId(S2)).terminate('the audit test strands its stream'),
    restore: () => standIn(S2),
  },
  {
    check: 'subaccounts.ended_empty',
    what: 'a subaccount eliminated with its funding still in its account (its collateral released)',
    corrupt: async (c) => {
      await triggersOff(c);
      await c.query(`update accounts set held = held - 100 where id = 'ent.main'`);
      await c.query(`update holds set released = amount, status = 'released', resolved_at = now() where idempotency_key = 'sub:ent/1:collateral'`);
      await c.query(`update subaccounts set status = 'eliminated', ended_at = now() where id = 'ent/1'`);
    },
  },
  {
    check: 'sessions.conservation',
    what: 'a closed session whose row says it was funded 1 more than its funding transfer and its balance account show',
    guard: { refusedWith: '23514', drop: ['alter table sessions disable trigger sessions_close_resolved'] },
    corrupt: (c) => c.query(`update sessions set funded = funded + 1 where session_id = 'sess1'`),
  },
  {
    check: 'sessions.closed_released',
    what: 'a closed session with one of its requests still running',
    corrupt: (c) => c.query(`update grants set status = 'reserved', resolved_at = null where job_id = 'session:sess1:q2'`),
  },
];

/** Runs `fn` in a transaction that is always rolled back. */
async function rolledBack<T>(fn: (c: PoolClient) => Promise<T>): Promise<T> {
  const c = await db.pool.connect();
  try {
    await c.query('begin');
    return await fn(c);
  } finally {
    await c.query('rollback');
    c.release();
  }
}

beforeAll(async () => {
  if (!process.env.SLUICE_TEST_TEMPORAL_ADDRESS) throw new Error('the jest globalSetup did not start Temporal');
  client = await connectClient(process.env.SLUICE_TEST_TEMPORAL_ADDRESS, 'default');
  db = await createTestDatabase();
  await db.pool.query(`insert into parties (id, name) values ('p', 'payer'), ('q', 'payee'), ('r', 'member'), ('op', 'operator')`);
  for (const [id, ownerId] of [['p.w', 'p'], ['q.w', 'q'], ['r.w', 'r']]) await createAccount(db.pool, { id: id!, ownerId: ownerId!, kind: 'user' });
  await deposit(db.pool, { key: 'd', accountId: 'p.w', amount: 10_000 });
  const hold = await placeHold(db.pool, { key: 'h', accountId: 'p.w', amount: 100 });
  await captureHold(db.pool, { key: 'hc', holdId: hold.id, amount: 40, toAccountId: 'q.w' });
  // s1: escrow, a liveness timeout, two ticks, closed; s2: payg, open; s3: a distribution to q and r, open;
  // s4: escrow, opened by p's operator, open
  const stream = { payer: 'p', payee: 'q', payerAccountId: 'p.w', payeeAccountId: 'q.w', ratePerTick: 10, maxTotal: 1000, tickIntervalMs: 1000 };
  await openStream(db.pool, { ...stream, ref: S1, mode: 'escrow', livenessTimeoutMs: 60_000 });
  await billTick(db.pool, S1, 2);
  await closeStream(db.pool, { ref: S1, reason: 'cancelled', closedBy: 'p' });
  await openStream(db.pool, { ...stream, ref: S2, mode: 'payg' });
  const members = [
    { accountId: 'q.w', party: 'q', weight: 1 },
    { accountId: 'r.w', party: 'r', weight: 2 },
  ];
  await openStream(db.pool, { payer: 'p', payerAccountId: 'p.w', members, ratePerTick: 9, maxTotal: 90, tickIntervalMs: 1000, ref: S3, mode: 'escrow' });
  await billTick(db.pool, S3, 2);
  await withTransaction(db.pool, (c) => grantOperator(c, { payer: 'p', operator: 'op', scopes: ['open'], dailyLimit: 500 }));
  await openStream(db.pool, { ...stream, ref: S4, mode: 'escrow', maxTotal: 200, openedBy: 'op' });
  // a payment of 50, 20 of it refunded
  await settlePayment(db.pool, { ref: 'pay1', payerAccountId: 'p.w', payeeAccountId: 'q.w', amount: 50 });
  await refundPayment(db.pool, { ref: 'pay1', refundKey: 'r1', amount: 20 });
  // a free job of 30 that cost 20, and a gate job paid 15 that cost 12
  await setTier(db.pool, 'p', 'trusted');
  const job = { payer: 'p', payerAccountId: 'p.w', requestHash: 'h', work: { description: 'audit' }, paymentTimeoutMs: 60_000 };
  const day = utcDay(Date.now());
  await openGrant(db.pool, { request: { ...job, jobId: 'g1', estimatedCost: 30 }, day, budgets: DEFAULT_TIER_BUDGETS });
  await settleGrant(db.pool, { jobId: 'g1', actualCost: 20 });
  await openGrant(db.pool, { request: { ...job, jobId: 'g2', estimatedCost: 15 }, day, budgets: { ...DEFAULT_TIER_BUDGETS, trusted: 0 } });
  await payForGrant(db.pool, { jobId: 'g2', day, budgets: { ...DEFAULT_TIER_BUDGETS, trusted: 0 } });
  await settleGrant(db.pool, { jobId: 'g2', actualCost: 12 });
  // a session of 100, closed: a free request of 10 that cost 8, a gated one charged 20 that cost 15; 85 refunded
  await openSession(db.pool, { sessionId: 'sess1', payer: 'p', payerAccountId: 'p.w', amountUnits: 100 });
  const sessionTerms = (requestId: string, estimatedCost: number) => ({ requestId, estimatedCost, requestHash: requestId, work: { description: 'audit' } });
  await openSessionRequest(db.pool, { sessionId: 'sess1', terms: sessionTerms('q1', 10), day, budgets: DEFAULT_TIER_BUDGETS });
  await settleGrant(db.pool, { jobId: 'session:sess1:q1', actualCost: 8 });
  await openSessionRequest(db.pool, { sessionId: 'sess1', terms: sessionTerms('q2', 20), day, budgets: { ...DEFAULT_TIER_BUDGETS, trusted: 0 } });
  await settleGrant(db.pool, { jobId: 'session:sess1:q2', actualCost: 15 });
  await closeSession(db.pool, 'sess1');
  // an entity with a cap of its own (1) and one active subaccount (collateral 100 held, funded 50);
  // another on the configured cap, with none yet
  await registerEntity(db.pool, { id: 'ent', name: 'ent', collateral: 100, funding: 50, webhookUrls: [], subaccountCap: 1 });
  await deposit(db.pool, { key: 'd-ent', accountId: 'ent.main', amount: 1000 });
  const { id: sub } = await allocateSubaccount(db.pool, { entityId: 'ent', requestId: 'r1', limits: { cap: 5, perHour: 5 } });
  await holdCollateral(db.pool, sub);
  await fundSubaccount(db.pool, sub);
  await activateSubaccount(db.pool, sub);
  await registerEntity(db.pool, { id: 'ent2', name: 'ent2', collateral: 100, funding: 50, webhookUrls: [] });
  // bystanders: two parties with a deposit, a hold captured in part, a closed stream and a
  // payment between them, related to no corruption below: no red check may name them
  for (const id of BYSTANDERS) {
    await db.pool.query(`insert into parties (id, name) values ($1, 'bystander')`, [id]);
    await createAccount(db.pool, { id: `${id}.w`, ownerId: id, kind: 'user' });
  }
  await deposit(db.pool, { key: 'd-by', accountId: 'by1.w', amount: 500 });
  const byHold = await placeHold(db.pool, { key: 'h-by', accountId: 'by1.w', amount: 50 });
  await captureHold(db.pool, { key: 'hc-by', holdId: byHold.id, amount: 20, toAccountId: 'by2.w' });
  await openStream(db.pool, { payer: 'by1', payee: 'by2', payerAccountId: 'by1.w', payeeAccountId: 'by2.w', ratePerTick: 5, maxTotal: 100, tickIntervalMs: 1000, ref: BY_STREAM, mode: 'escrow' });
  await billTick(db.pool, BY_STREAM, 2);
  await closeStream(db.pool, { ref: BY_STREAM, reason: 'cancelled', closedBy: 'by2' });
  await settlePayment(db.pool, { ref: `pay-${BY_STREAM}`, payerAccountId: 'by1.w', payeeAccountId: 'by2.w', amount: 30 });
  // the open streams' workflows, as the stream workflows would be running
  for (const ref of [S2, S3, S4]) await standIn(ref);
});
afterAll(async () => {
  await Promise.all([S2, S3, S4].map((ref) => client?.workflow.getHandle(streamWorkflowId(ref)).terminate('audit test over').catch(() => undefined)));
  await client?.connection.close();
  await db?.drop();
});

describe('the auditor', () => {
  test('every check of the auditor has a corruption below, and the ledger they start from is one Sluice moved through every kind of row they read', async () => {
    expect([...new Set(CORRUPTIONS.map((c) => c.check))].sort()).toEqual([...AUDIT_CHECK_NAMES].sort());
    // what runAudit reports, asked with Temporal, is what AUDIT_CHECK_NAMES lists
    const report = await runAudit(db.pool, temporal());
    expect(report.checks.map((c) => c.name).sort()).toEqual([...AUDIT_CHECK_NAMES].sort());
    // the rows each corruption needs are there, as Sluice wrote them
    const counts = (
      await db.pool.query(`select (select count(*) from stream_members where stream_ref = '${S3}' and received > 0)::int as paid_members,
                                  (select count(*) from operator_spend where spent > 0)::int as operator_days,
                                  (select count(*) from refunds)::int as refunds,
                                  (select count(*) from streams where mode = 'escrow' and status = 'open')::int as open_escrows,
                                  (select count(*) from stream_ticks where stream_ref = '${S1}')::int as s1_ticks`)
    ).rows[0];
    expect(counts).toEqual({ paid_members: 2, operator_days: 1, refunds: 1, open_escrows: 2, s1_ticks: 2 });
  });

  test('a ledger moved only by Sluice passes every check, through the function and through `sluice audit`', async () => {
    const report = await runAudit(db.pool, temporal());
    expect(report.checks).toHaveLength(AUDIT_CHECK_NAMES.length);
    expect(report.checks.filter((c) => !c.ok)).toEqual([]);
    expect(report.ok).toBe(true);
    const cli = cliAudit();
    expect(cli.code).toBe(0);
    // it names the database it audited (the test's own) before its verdict
    expect(cli.out.split('\n')[0]).toBe(`auditing ${db.url} (DATABASE_URL, else the local default)`);
    expect(cli.out).toContain('audit: PASS');
  });

  test.each(CORRUPTIONS.map((c) => [c.check, c.what, c] as const))('%s turns red, alone, on %s', async (check, _what, corruption) => {
    const report = await rolledBack(async (c) => {
      if (corruption.guard) {
        // the database refuses it first, triggers on or off
        await c.query('savepoint guarded');
        await expect(corruption.corrupt(c)).rejects.toMatchObject({ code: corruption.guard.refusedWith });
        await c.query('rollback to savepoint guarded');
        for (const ddl of corruption.guard.drop) await c.query(ddl);
      }
      try {
        await corruption.corrupt(c);
        return await runAudit(c, corruption.temporal ? temporal() : undefined);
      } finally {
        await corruption.restore?.();
      }
    });
    expect(failingIn(report)).toEqual([check]);
    expect(report.ok).toBe(false);
    const red = report.checks.find((c) => c.name === check)!;
    expect(red.violations).toBeGreaterThan(0);
    expect(red.rows.length).toBeGreaterThan(0);
    // the rows it names are the violation's: never a bystander's account, stream or payment
    expect(JSON.stringify(red.rows)).not.toMatch(new RegExp(`\\b(${[...BYSTANDERS, BY_STREAM].join('|')})\\b`));
    // rolled back (and restored): green again for the next corruption
    expect(failingIn(await runAudit(db.pool, temporal()))).toEqual([]);
  });

  test('the cap counts live subaccounts: exactly the configured cap is green, and an ended subaccount frees its slot', async () => {
    const report = await rolledBack(async (c) => {
      await triggersOff(c);
      await pendingSlots(c, 'ent2', 1, CAP_DEFAULT + 1);
      expect(failingIn(await runAudit(c))).toEqual(['subaccounts.within_cap_and_sequence']);
      // one of them failed (as a compensated saga leaves it): at the cap, not past it
      await c.query(`update subaccounts set status = 'failed', ended_at = now() where id = 'ent2/1'`);
      return runAudit(c);
    });
    expect(failingIn(report)).toEqual([]);
  });

  test('`sluice audit` exits 1 on a corrupted ledger, naming the check and the rows', async () => {
    const committed = async (sql: string) => {
      const c = await db.pool.connect();
      try {
        await c.query('begin');
        await triggersOff(c);
        await c.query(sql);
        await c.query('commit');
      } finally {
        c.release();
      }
    };
    await committed(`update accounts set held = held + 1 where id = 'p.w'`);
    try {
      const cli = cliAudit();
      expect(cli.code).toBe(1);
      expect(cli.out).toMatch(/FAIL holds\.held_matches_open_holds/);
      expect(cli.out).toContain('"id":"p.w"');
      expect(cli.out).toContain('audit: FAIL');
    } finally {
      await committed(`update accounts set held = held - 1 where id = 'p.w'`);
    }
    const after = cliAudit();
    expect(after.code).toBe(0);
    // it asked Temporal too
    expect(after.out).toContain(`ok   ${WORKFLOWS_CHECK}`);
  });
});
