import type { Pool, PoolClient, Queryable } from '../db/pool';
import { withTransaction } from '../db/pool';
import { notFound, SluiceError } from '../domain/errors';
import {
  absorbKey,
  creditKey,
  decide,
  jobRefundKey,
  paymentState,
  paymentKey,
  regrant,
  releaseReservationKey,
  reserveKey,
  settle,
  TIERS,
  type Decision,
  type GrantStatus,
  type GrantView,
  type JobRequest,
  type Tier,
} from '../domain/grants';
import { lockAccounts } from './accounts';
import { appendEvent } from './events';
import { captureHoldIn, placeHoldIn, releaseHoldIn } from './holds';
import { JOBS_ACCOUNT, POOL_ACCOUNT } from './pool';
import { postTransfer } from './transfers';
import { assertPageRows } from './paging';

/**
 * The money side of grant jobs (DESIGN §5). Every function is one transaction,
 * idempotent by job id, and takes its locks in the ledger's one order
 * (src/ledger/accounts.ts): the payer's party row (the budget lock), the grant row,
 * then accounts in id order, then the pool hold. The payer's row lock
 * is what makes "read the day's usage, then reserve" safe under concurrency. Behind
 * it, the grants trigger takes its own per-payer-day lock before it sums the day, so
 * it refuses a day over budget even from a writer that forgot the payer lock (a
 * second writer waits for the first to commit, then sees its row); the accounts CHECK
 * refuses a pool below zero.
 */
export type TierBudgets = Record<Tier, number>;

interface GrantRow {
  job_id: string;
  payer: string;
  payer_account_id: string;
  request_hash: string;
  work: JobRequest['work'];
  estimated_cost: number;
  decision: GrantView['decision'];
  tier: Tier;
  advisory_absorb: number;
  status: GrantStatus;
  day: string | null;
  budget: number | null;
  hold_id: number | null;
  reserved: number;
  absorbed: number;
  returned: number;
  paid: number;
  refunded: number;
  credited: number;
  actual_cost: number | null;
  failure: string | null;
  closed_by: string | null;
  close_reason: string | null;
  created_at: Date;
  reserved_at: Date | null;
  resolved_at: Date | null;
}

// `day` as text: a date column would arrive as a local-midnight Date
const GRANT_COLUMNS = `g.*, to_char(g.day, 'YYYY-MM-DD') as day`;

export function toGrantView(r: GrantRow): GrantView {
  const v: GrantView = {
    jobId: r.job_id,
    payer: r.payer,
    payerAccountId: r.payer_account_id,
    requestHash: r.request_hash,
    estimatedCost: r.estimated_cost,
    decision: r.decision,
    tier: r.tier,
    advisoryAbsorb: r.advisory_absorb,
    status: r.status,
    reserved: r.reserved,
    absorbed: r.absorbed,
    returned: r.returned,
    paid: r.paid,
    refunded: r.refunded,
    credited: r.credited,
    createdAt: r.created_at.toISOString(),
  };
  if (r.day) v.day = r.day;
  if (r.actual_cost !== null) v.actualCost = r.actual_cost;
  if (r.failure) v.failure = r.failure;
  if (r.closed_by) v.closedBy = r.closed_by;
  if (r.close_reason) v.reason = r.close_reason;
  if (r.resolved_at) v.resolvedAt = r.resolved_at.toISOString();
  return v;
}

export async function findGrant(db: Queryable, jobId: string, forUpdate = false): Promise<GrantRow | undefined> {
  const { rows } = await db.query<GrantRow>(`select ${GRANT_COLUMNS} from grants g where g.job_id = $1 ${forUpdate ? 'for update' : ''}`, [jobId]);
  return rows[0];
}

export async function getGrant(db: Queryable, jobId: string): Promise<GrantView> {
  const row = await findGrant(db, jobId);
  if (!row) throw notFound('job', jobId);
  return toGrantView(row);
}

/** Grants (of jobs) one page of GET /v1/grants holds at most. */
export const JOB_GRANTS_PAGE_MAX = 100;

/**
 * Grants newest first (created_at, then job id: the job id is the cursor), a
 * payer's own or (payer undefined, the admin) everyone's. An unknown cursor gives an empty page.
 */
export async function listGrants(db: Queryable, q: { payer?: string; after?: string; limit: number }): Promise<GrantView[]> {
  const { rows } = await db.query<GrantRow>(
    `select ${GRANT_COLUMNS} from grants g
      where ($1::text is null or g.payer = $1)
        and ($2::text is null or (g.created_at, g.job_id) < (select c.created_at, c.job_id from grants c where c.job_id = $2))
      order by g.created_at desc, g.job_id desc
      limit $3`,
    [q.payer ?? null, q.after ?? null, assertPageRows(q.limit, JOB_GRANTS_PAGE_MAX, 'grant')],
  );
  return rows.map(toGrantView);
}

export async function tierOf(db: Queryable, party: string): Promise<Tier> {
  const { rows } = await db.query<{ tier: Tier }>('select tier from payer_tiers where party_id = $1', [party]);
  return rows[0]?.tier ?? 'new';
}

export async function setTier(db: Queryable, party: string, tier: Tier): Promise<{ party: string; tier: Tier }> {
  if (!TIERS.includes(tier)) throw new SluiceError('invalid_request', `unknown tier ${tier}`);
  try {
    await db.query(
      `insert into payer_tiers (party_id, tier) values ($1, $2) on conflict (party_id) do update set tier = excluded.tier, updated_at = now()`,
      [party, tier],
    );
  } catch (error) {
    if ((error as { code?: string }).code === '23503') throw notFound('party', party);
    throw error;
  }
  return { party, tier };
}

/** What a payer has used of its budget on a UTC day: what its grants of that day reserved and did not give back. */
export async function usageOn(db: Queryable, payer: string, day: string): Promise<number> {
  const { rows } = await db.query<{ used: number }>(
    'select coalesce(sum(reserved - returned), 0)::bigint as used from grants where payer = $1 and day = $2::date',
    [payer, day],
  );
  return rows[0]!.used;
}

export interface Budget {
  tier: Tier;
  daily: number;
  used: number;
  remaining: number;
}

export async function budgetOn(db: Queryable, payer: string, day: string, budgets: TierBudgets): Promise<Budget> {
  const tier = await tierOf(db, payer);
  const used = await usageOn(db, payer, day);
  return { tier, daily: budgets[tier], used, remaining: Math.max(0, budgets[tier] - used) };
}

/** The decision a payer would get now, without reserving anything (GET /v1/estimate). An unknown payer is 404, not tier `new`. */
export async function previewDecision(db: Queryable, input: { payer: string; estimatedCost: number; day: string; budgets: TierBudgets }) {
  const { rowCount } = await db.query('select 1 from parties where id = $1', [input.payer]);
  if (!rowCount) throw notFound('party', input.payer);
  const budget = await budgetOn(db, input.payer, input.day, input.budgets);
  const { rows } = await db.query<{ balance: number; held: number }>('select balance, held from accounts where id = $1', [POOL_ACCOUNT]);
  const pool = { balance: rows[0]!.balance, held: rows[0]!.held, available: rows[0]!.balance - rows[0]!.held };
  const decision = decide({ estimatedCostUnits: input.estimatedCost, budgetRemainingUnits: budget.remaining, poolAvailableUnits: pool.available });
  return { decision, budget, pool };
}

/** The payer's budget lock: its party row, taken before the grant row and the accounts (the lock order, accounts.ts). */
async function lockBudget(client: PoolClient, payer: string): Promise<void> {
  const { rowCount } = await client.query('select 1 from parties where id = $1 for no key update', [payer]);
  if (!rowCount) throw notFound('party', payer);
}

/**
 * With the payer's budget lock held, takes the pool's account lock (and `alsoLock`'s)
 * in account order, and only then reads the day's usage: budget given back (settle,
 * release) commits under the pool's lock, so a usage read before it could miss a
 * return and grant less than the payer is owed (never more).
 */
async function lockPoolAndReadBudget(client: PoolClient, payer: string, day: string, budgets: TierBudgets, alsoLock: string[] = []) {
  const accounts = await lockAccounts(client, [POOL_ACCOUNT, ...alsoLock]);
  const budget = await budgetOn(client, payer, day, budgets);
  return { budget, accounts, poolAvailable: accounts.get(POOL_ACCOUNT)!.available };
}

/** Locks the grant row, then the accounts a step on it will move (the lock order, accounts.ts). */
async function lockGrant(client: PoolClient, jobId: string, accountsOf: (g: GrantRow) => string[]): Promise<GrantRow> {
  const g = await findGrant(client, jobId, true);
  if (!g) throw notFound('job', jobId);
  await lockAccounts(client, accountsOf(g));
  return g;
}

/** Places the pool reservation (a hold on the pool account) for a grant. */
async function reserve(client: PoolClient, jobId: string, amount: number): Promise<number | null> {
  if (amount === 0) return null;
  const hold = await placeHoldIn(client, { key: reserveKey(jobId), accountId: POOL_ACCOUNT, amount, reference: { job: jobId } });
  return hold.id;
}

const sameJob = (row: GrantRow, r: JobRequest) =>
  row.payer === r.payer && row.payer_account_id === r.payerAccountId && row.estimated_cost === r.estimatedCost && row.request_hash === r.requestHash;

/**
 * Decides a job and records its grant, in one transaction. `free`: reserves at
 * once, the pool hold and the day's budget together. `partial`/`gate`: records
 * the advisory decision and reserves nothing until the payment. Opening the same
 * job again returns its grant; the same job id with other terms is a conflict.
 */
export function openGrant(pool: Pool, input: { request: JobRequest; day: string; budgets: TierBudgets }): Promise<GrantView> {
  const r = input.request;
  return withTransaction(pool, async (client) => {
    await lockBudget(client, r.payer);
    const existing = await findGrant(client, r.jobId, true);
    if (existing) {
      if (!sameJob(existing, r)) throw new SluiceError('ref_conflict', `job id ${r.jobId} is already used by another job`, { jobId: r.jobId });
      return toGrantView(existing);
    }
    const { budget, poolAvailable } = await lockPoolAndReadBudget(client, r.payer, input.day, input.budgets);
    const d: Decision = decide({ estimatedCostUnits: r.estimatedCost, budgetRemainingUnits: budget.remaining, poolAvailableUnits: poolAvailable });
    const free = d.mode === 'free';
    const holdId = free ? await reserve(client, r.jobId, d.absorbUnits) : null;
    const { rows } = await client.query<GrantRow>(
      `insert into grants as g (job_id, payer, payer_account_id, request_hash, work, estimated_cost, decision, tier, advisory_absorb,
                           status, day, budget, hold_id, reserved, reserved_at)
       values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::date, $12, $13, $14, case when $10 = 'reserved' then now() end)
       returning ${GRANT_COLUMNS}`,
      [r.jobId, r.payer, r.payerAccountId, r.requestHash, JSON.stringify(r.work), r.estimatedCost, d.mode, budget.tier, d.absorbUnits,
       free ? 'reserved' : 'awaiting_payment', free ? input.day : null, free ? budget.daily : null, holdId, free ? d.absorbUnits : 0],
    );
    const grant = toGrantView(rows[0]!);
    await appendEvent(client, { type: 'job.decided', subject: r.jobId, payload: { ...grant }, parties: [r.payer] });
    return grant;
  });
}

/**
 * The payment of a `partial` or `gate` job, in one transaction: re-grants what is
 * left now (never more than the advisory absorb), reserves it on the pool and in the
 * budget, and takes the rest (estimate − grant) from the payer's account. Paying
 * again returns the grant and moves nothing. A payer that cannot pay gets
 * `insufficient_funds` and the job keeps waiting.
 */
export function payForGrant(pool: Pool, input: { jobId: string; day: string; budgets: TierBudgets }): Promise<GrantView> {
  return withTransaction(pool, async (client) => {
    const found = await findGrant(client, input.jobId);
    if (!found) throw notFound('job', input.jobId);
    await lockBudget(client, found.payer);
    const g = (await findGrant(client, input.jobId, true))!;
    const state = paymentState(g);
    if (state === 'paid') return toGrantView(g);
    if (state === 'refused') throw noPayment(toGrantView(g));
    const { budget, poolAvailable } = await lockPoolAndReadBudget(client, g.payer, input.day, input.budgets, [g.payer_account_id, JOBS_ACCOUNT]);
    const d = regrant({
      estimatedCostUnits: g.estimated_cost,
      advisoryAbsorbUnits: g.advisory_absorb,
      budgetRemainingUnits: budget.remaining,
      poolAvailableUnits: poolAvailable,
    });
    if (d.chargeUnits > 0) {
      await postTransfer(client, { key: paymentKey(g.job_id), kind: 'job_payment', debitAccountId: g.payer_account_id, creditAccountId: JOBS_ACCOUNT, amount: d.chargeUnits, jobId: g.job_id });
    }
    const holdId = await reserve(client, g.job_id, d.absorbUnits);
    const { rows } = await client.query<GrantRow>(
      `update grants g set status = 'reserved', day = $2::date, budget = $3, hold_id = $4, reserved = $5, paid = $6, reserved_at = now()
        where job_id = $1 returning ${GRANT_COLUMNS}`,
      [g.job_id, input.day, budget.daily, holdId, d.absorbUnits, d.chargeUnits],
    );
    const grant = toGrantView(rows[0]!);
    await appendEvent(client, { type: 'job.paid', subject: g.job_id, payload: { ...grant }, parties: [g.payer] });
    return grant;
  });
}

/** The answer to a payment for a job that takes none. */
export const noPayment = (g: GrantView) =>
  new SluiceError('job_conflict', `job ${g.jobId} is ${g.decision === 'free' ? 'free' : g.status}: it takes no payment`, { jobId: g.jobId, status: g.status });

/**
 * Settles a job against its actual cost (domain settle()): captures what the pool
 * absorbs, releases the rest of the reservation (back to pool and budget), refunds
 * what the payer paid beyond its share, credits 10% of its share to the pool.
 */
export function settleGrant(pool: Pool, input: { jobId: string; actualCost: number }): Promise<GrantView> {
  return withTransaction(pool, async (client) => {
    const g = await lockGrant(client, input.jobId, (found) => [POOL_ACCOUNT, JOBS_ACCOUNT, found.payer_account_id]);
    if (g.status === 'settled') return toGrantView(g);
    if (g.status !== 'reserved') throw new SluiceError('job_conflict', `job ${g.job_id} is ${g.status}; it cannot settle`, { jobId: g.job_id, status: g.status });
    const s = settle({ reservedUnits: g.reserved, paidUnits: g.paid, actualCostUnits: input.actualCost });
    if (g.hold_id !== null) {
      if (s.absorbed > 0) await captureHoldIn(client, { key: absorbKey(g.job_id), holdId: g.hold_id, amount: s.absorbed, toAccountId: JOBS_ACCOUNT, kind: 'job_absorb', jobId: g.job_id });
      if (s.returned > 0) await releaseHoldIn(client, { key: releaseReservationKey(g.job_id), holdId: g.hold_id });
    }
    if (s.refund > 0) {
      await postTransfer(client, { key: jobRefundKey(g.job_id), kind: 'job_refund', debitAccountId: JOBS_ACCOUNT, creditAccountId: g.payer_account_id, amount: s.refund, jobId: g.job_id });
    }
    if (s.credited > 0) {
      await postTransfer(client, { key: creditKey(g.job_id), kind: 'pool_credit', debitAccountId: JOBS_ACCOUNT, creditAccountId: POOL_ACCOUNT, amount: s.credited, jobId: g.job_id });
    }
    const { rows } = await client.query<GrantRow>(
      `update grants g set status = 'settled', absorbed = $2, returned = $3, refunded = $4, credited = $5, actual_cost = $6, resolved_at = now()
        where job_id = $1 returning ${GRANT_COLUMNS}`,
      [g.job_id, s.absorbed, s.returned, s.refund, s.credited, input.actualCost],
    );
    const grant = toGrantView(rows[0]!);
    await appendEvent(client, { type: 'job.settled', subject: g.job_id, payload: { ...grant, overrun: s.overrun }, parties: [g.payer] });
    return grant;
  });
}

/** Compensation: releases a job's pool reservation, which gives the budget back. Idempotent; a no-op before reserving. */
export function releaseGrantReservation(pool: Pool, jobId: string): Promise<GrantView> {
  return withTransaction(pool, async (client) => {
    const g = await lockGrant(client, jobId, () => [POOL_ACCOUNT]);
    if (g.status !== 'reserved' || g.reserved - g.absorbed - g.returned === 0) return toGrantView(g);
    if (g.hold_id !== null) await releaseHoldIn(client, { key: releaseReservationKey(jobId), holdId: g.hold_id });
    const { rows } = await client.query<GrantRow>(`update grants g set returned = reserved - absorbed where job_id = $1 returning ${GRANT_COLUMNS}`, [jobId]);
    await appendEvent(client, { type: 'job.reservation_released', subject: jobId, payload: { jobId, returned: rows[0]!.returned }, parties: [g.payer] });
    return toGrantView(rows[0]!);
  });
}

/** Compensation: refunds what the payer paid for a job that did not run. Idempotent; a no-op when nothing was paid. */
export function refundGrantPayment(pool: Pool, jobId: string): Promise<GrantView> {
  return withTransaction(pool, async (client) => {
    const g = await lockGrant(client, jobId, (found) => [JOBS_ACCOUNT, found.payer_account_id]);
    const due = g.paid - g.refunded;
    if (g.status === 'settled' || due === 0) return toGrantView(g);
    await postTransfer(client, { key: jobRefundKey(jobId), kind: 'job_refund', debitAccountId: JOBS_ACCOUNT, creditAccountId: g.payer_account_id, amount: due, jobId });
    const { rows } = await client.query<GrantRow>(`update grants g set refunded = paid where job_id = $1 returning ${GRANT_COLUMNS}`, [jobId]);
    await appendEvent(client, { type: 'job.refunded', subject: jobId, payload: { jobId, refunded: due }, parties: [g.payer] });
    return toGrantView(rows[0]!);
  });
}

/**
 * Ends a job that will not settle: `cancelled` (no payment in time, or a cancel) or
 * `failed` (the work failed). Only once its compensations ran: nothing of the
 * reservation left and the payment refunded in full. The WHERE below refuses
 * anything else, and the grants CHECKs (grant_resolved_in_full, grant_closed_refunded)
 * refuse it even to code that skips this function.
 */
export interface CloseGrant {
  jobId: string;
  status: 'cancelled' | 'failed';
  failure: string;
  /** Who ended it (the payer, admin, system or operator) and why (runs before these were recorded left them out). */
  closedBy?: string;
  reason?: string;
}

export function closeGrant(pool: Pool, input: CloseGrant): Promise<GrantView> {
  return withTransaction(pool, async (client) => {
    const g = await findGrant(client, input.jobId, true);
    if (!g) throw notFound('job', input.jobId);
    if (g.status === 'settled' || g.status === 'cancelled' || g.status === 'failed') return toGrantView(g);
    const { rows } = await client.query<GrantRow>(
      `update grants g set status = $2, failure = $3, closed_by = $4, close_reason = $5, resolved_at = now()
        where job_id = $1 and status in ('awaiting_payment', 'reserved') and absorbed = 0 and returned = reserved and refunded = paid
        returning ${GRANT_COLUMNS}`,
      [input.jobId, input.status, input.failure, input.closedBy ?? null, input.reason ?? null],
    );
    if (!rows[0]) {
      throw new SluiceError('job_conflict', `job ${g.job_id} still holds ${g.reserved - g.returned} of the pool and ${g.paid - g.refunded} of its payment: compensate before closing`, {
        jobId: g.job_id,
        status: g.status,
      });
    }
    const grant = toGrantView(rows[0]);
    await appendEvent(client, { type: `job.${input.status}`, subject: input.jobId, payload: { ...grant }, parties: [g.payer] });
    return grant;
  });
}

/**
 * A job whose workflow is gone (terminated, failed, lost), cancelled in the ledger as
 * its own compensations would: the payment refunded, the reservation released (the
 * budget given back), then closed `cancelled`. Each step is idempotent, so a retry,
 * or a race with a workflow compensating the same job, ends it once.
 */
export async function cancelGrantInLedger(pool: Pool, input: Omit<CloseGrant, 'status'>): Promise<GrantView> {
  await refundGrantPayment(pool, input.jobId);
  await releaseGrantReservation(pool, input.jobId);
  return closeGrant(pool, { ...input, status: 'cancelled' });
}
