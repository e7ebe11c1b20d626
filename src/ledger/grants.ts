import type { Pool, PoolClient, Queryable } from '../db/pool';
import { withTransaction } from '../db/pool';
import { compile, params, sql, type Param } from '../db/sql';
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
  jobIdTaken,
  sameJobTerms,
} from '../domain/grants';
import { lockAccounts } from './accounts';
import { appendEvent } from './events';
import { captureHoldIn, releaseHoldIn } from './holds';
import { creditStripe, grantHolds, jobsAccountOf, POOL_TOTALS, poolTotals, lockPoolStripes, reserveAcrossStripes, reserveOnOneStripe, stripeKey, type PoolHold } from './pool';
import { postTransfer } from './transfers';
import { assertPageRows } from './paging';

/**
 * The money side of grant jobs (DESIGN §5). Every function is one transaction,
 * idempotent by job id, and takes its locks in the ledger's one order
 * (src/ledger/accounts.ts): the payer's party row (the budget lock), the grant row,
 * then accounts in id order with the pool's stripes last, then the pool holds.
 *
 * The payer's row lock is what makes "read the day's usage, then reserve" exact
 * under concurrency: every write that uses or gives back budget (a reservation, a
 * settlement, a release) takes it first, so it is per payer, never global. Behind
 * it, the grants trigger takes its own per-payer-day lock before it sums the day, so
 * it refuses a day over budget even from a writer that forgot the payer lock (a
 * second writer waits for the first to commit, then sees its row).
 *
 * The pool is K stripe accounts (src/ledger/pool.ts). A reservation the pool does not
 * bind takes one stripe that holds enough: an unlocked one (SKIP LOCKED) when there is
 * one, else it waits for one locked stripe that holds enough, holding no other
 * stripe. Only a reservation the pool binds, or one no single stripe can hold, takes
 * every stripe (in id order) and spills across them. Each stripe's accounts CHECK
 * refuses it below zero.
 */
export type TierBudgets = Record<Tier, number>;

export interface GrantRow {
  job_id: string;
  payer: string;
  payer_account_id: string;
  /** The jobs account stripe this job's money goes through (src/ledger/pool.ts). */
  jobs_account_id: string;
  request_hash: string;
  work: JobRequest['work'];
  estimated_cost: number;
  decision: GrantView['decision'];
  tier: Tier;
  advisory_absorb: number;
  status: GrantStatus;
  day: string | null;
  budget: number | null;
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
  /** A session's request (migration 022): its session and request ids. */
  session_id: string | null;
  request_id: string | null;
  created_at: Date;
  reserved_at: Date | null;
  resolved_at: Date | null;
}

// `day` as text: a date column would arrive as a local-midnight Date
export const GRANT_COLUMNS = `g.*, to_char(g.day, 'YYYY-MM-DD') as day`;

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
  if (r.session_id) v.sessionId = r.session_id;
  if (r.request_id) v.requestId = r.request_id;
  if (r.close_reason) v.reason = r.close_reason;
  if (r.resolved_at) v.resolvedAt = r.resolved_at.toISOString();
  return v;
}

export async function findGrant(db: Queryable, jobId: string, forUpdate = false): Promise<GrantRow | undefined> {
  const { rows } = await db.query<GrantRow>({
    name: forUpdate ? 'grant-find-for-update' : 'grant-find',
    text: `select ${GRANT_COLUMNS} from grants g where g.job_id = $1 ${forUpdate ? 'for update' : ''}`,
    values: [jobId],
  });
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

// A payer's budget, each reading written once: its tier (`new` until set), and its
// usage on a UTC day, what its grants of the day reserved and did not give back (as
// the grants trigger counts it).
const payerTier = (payer: Param) => sql`coalesce((select tier from payer_tiers where party_id = ${payer}), 'new')`;
const dayUsage = (payer: Param, day: Param) => sql`(select coalesce(sum(reserved - returned), 0)::bigint from grants where payer = ${payer} and day = ${day}::date)`;

export async function tierOf(db: Queryable, party: string): Promise<Tier> {
  const p = params({ party });
  const { rows } = await db.query<{ tier: Tier }>(compile(sql`select ${payerTier(p.party)} as tier`));
  return rows[0]!.tier;
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
  const p = params({ payer, day });
  const { rows } = await db.query<{ used: number }>(compile(sql`select ${dayUsage(p.payer, p.day)} as used`));
  return rows[0]!.used;
}

export interface Budget {
  tier: Tier;
  daily: number;
  used: number;
  remaining: number;
}

export const budgetOf = (tier: Tier, used: number, budgets: TierBudgets): Budget => ({ tier, daily: budgets[tier], used, remaining: Math.max(0, budgets[tier] - used) });

export async function budgetOn(db: Queryable, payer: string, day: string, budgets: TierBudgets): Promise<Budget> {
  const p = params({ payer, day });
  const { rows } = await db.query<{ tier: Tier; used: number }>(compile(sql`select ${payerTier(p.payer)} as tier, ${dayUsage(p.payer, p.day)} as used`));
  return budgetOf(rows[0]!.tier, rows[0]!.used, budgets);
}

/** The decision a payer would get now, without reserving anything (GET /v1/estimate). An unknown payer is 404, not tier `new`. */
export async function previewDecision(db: Queryable, input: { payer: string; estimatedCost: number; day: string; budgets: TierBudgets }) {
  const { rowCount } = await db.query('select 1 from parties where id = $1', [input.payer]);
  if (!rowCount) throw notFound('party', input.payer);
  const budget = await budgetOn(db, input.payer, input.day, input.budgets);
  const pool = await poolTotals(db);
  const decision = decide({ estimatedCostUnits: input.estimatedCost, budgetRemainingUnits: budget.remaining, poolAvailableUnits: pool.available });
  return { decision, budget, pool };
}

/** The reservation's read under the payer's lock (readBudget): the grant, the budget and the pool, in one statement. */
const readBudgetSql = (v: { payer: Param; day: Param; jobId: Param }) =>
  sql`select ${payerTier(v.payer)} as tier, ${dayUsage(v.payer, v.day)} as used,
                  (select to_jsonb(g) || jsonb_build_object('day', to_char(g.day, 'YYYY-MM-DD')) from grants g where g.job_id = ${v.jobId}) as grant,
                  p.balance - p.held as pool_available, p.stripes as pool_stripes
             from (${POOL_TOTALS}) p`;

/**
 * The statements of a reservation's transaction, by name: the code below runs them,
 * and bench:pool replays them from pgbench's C client to measure what they cost
 * without this process (bench/pool.ts), binding their parameters by number: readBudget's
 * are $1 the payer, $2 the day, $3 the job (the order they first appear in its text).
 */
export const GRANT_SQL = {
  lockBudget: 'select 1 from parties where id = $1 for no key update',
  readBudget: compile(readBudgetSql(params({ payer: null, day: null, jobId: null }))).text,
  insert: `insert into grants as g (job_id, payer, payer_account_id, request_hash, work, estimated_cost, decision, tier, advisory_absorb,
                           status, day, budget, reserved, reserved_at, jobs_account_id)
       values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::date, $12, $13, case when $10 = 'reserved' then clock_timestamp() end, $14)
       returning ${GRANT_COLUMNS}`,
} as const;

/** The payer's budget lock: its party row, taken before the grant row and the accounts (the lock order, accounts.ts). */
export async function lockBudget(client: PoolClient, payer: string): Promise<void> {
  const { rowCount } = await client.query({ name: 'grant-lock-budget', text: GRANT_SQL.lockBudget, values: [payer] });
  if (!rowCount) throw notFound('party', payer);
}

/**
 * With the payer's budget lock held, in one statement: the job's grant if it exists,
 * the payer's tier and the day's usage, and what the pool's stripes hold now. A
 * separate statement from the lock: under READ COMMITTED a statement that waited for
 * the lock would still read with the snapshot it took before waiting.
 */
export async function readBudget(client: PoolClient, input: { payer: string; jobId: string; day: string; budgets: TierBudgets }) {
  const { rows } = await client.query<{ grant: GrantRow | null; tier: Tier; used: number; pool_available: number; pool_stripes: number }>({
    name: 'grant-read-budget',
    ...compile(readBudgetSql(params({ payer: input.payer, day: input.day, jobId: input.jobId }))),
  });
  const r = rows[0]!;
  return { existing: r.grant ? grantFromJson(r.grant) : undefined, budget: budgetOf(r.tier, r.used, input.budgets), poolAvailable: r.pool_available, poolStripes: r.pool_stripes };
}

/** A grant row read as jsonb: its timestamps come back as text. */
const grantFromJson = (j: GrantRow): GrantRow => ({
  ...j,
  created_at: new Date(j.created_at),
  reserved_at: j.reserved_at && new Date(j.reserved_at),
  resolved_at: j.resolved_at && new Date(j.resolved_at),
});

/**
 * Decides with what the pool holds and reserves what the decision absorbs, exactly:
 * `decideWith(poolAvailable)` is the domain's decision (decide or regrant) for a pool
 * holding that much; `reserves(d)`: whether this decision places its hold now (a free
 * job at creation, any job at payment).
 *
 * The first decision is taken on the stripes' sum as this transaction's snapshot saw
 * it. A decision that reserves and that the pool does not bind (it absorbs what it
 * would from a bottomless pool) is placed on one stripe that holds it all
 * (reserveOnOneStripe): an unlocked one in the common case, which waits for no other
 * reservation; when every stripe that holds it is locked, the first of them in the
 * job's order, waited for while holding no other stripe. A decision the pool binds,
 * or one no single stripe can hold (the pool fragmented, the snapshot out of date, or
 * the stripe waited for drained meanwhile), takes every stripe, is made again on
 * their exact sum and spills across them, so a grant cut short by the pool always
 * takes exactly what the pool had left (one that finds nothing to take decides on
 * that exact sum and frees the stripes).
 * A decision that reserves nothing (the advisory of a partial or gate job) is the one
 * made on the snapshot: a consistent state of the pool, and no money moves on it.
 */
export async function decideAndReserve(
  client: PoolClient,
  jobId: string,
  snapshotAvailable: number,
  decideWith: (poolAvailable: number) => Decision,
  reserves: (d: Decision) => boolean,
): Promise<{ decision: Decision; holds: PoolHold[] }> {
  const first = decideWith(snapshotAvailable);
  if (!reserves(first)) return { decision: first, holds: [] };
  const poolBinds = first.absorbUnits < decideWith(Number.MAX_SAFE_INTEGER).absorbUnits;
  if (!poolBinds) {
    if (first.absorbUnits === 0) return { decision: first, holds: [] };
    const one = await reserveOnOneStripe(client, { jobId, key: reserveKey(jobId), amount: first.absorbUnits });
    if (one) return { decision: first, holds: [one] };
  }
  // in a savepoint: a decision that reserves nothing lets the stripes go at once, so a
  // dry pool does not keep every payment queued behind this transaction's commit
  await client.query('savepoint pool_stripes');
  const stripes = await lockPoolStripes(client);
  const decision = decideWith(stripes.reduce((sum, s) => sum + s.available, 0));
  if (!reserves(decision) || decision.absorbUnits === 0) {
    await client.query('rollback to savepoint pool_stripes');
    return { decision, holds: [] };
  }
  return { decision, holds: await reserveAcrossStripes(client, { jobId, key: reserveKey(jobId), amount: decision.absorbUnits }, stripes) };
}

/**
 * Locks the payer's budget (a settlement or release gives budget back), the grant
 * row, then the accounts a step on it will move, the stripes of its pool holds among
 * them when `withHolds` (the lock order, accounts.ts).
 */
async function lockGrant(client: PoolClient, jobId: string, accountsOf: (g: GrantRow) => string[], withHolds: boolean) {
  const found = await findGrant(client, jobId);
  if (!found) throw notFound('job', jobId);
  await lockBudget(client, found.payer);
  const g = (await findGrant(client, jobId, true))!;
  const holds = withHolds ? await grantHolds(client, jobId) : [];
  await lockAccounts(client, [...accountsOf(g), ...holds.map((h) => h.accountId)]);
  return { g, holds };
}

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
    const { existing, budget, poolAvailable, poolStripes } = await readBudget(client, { payer: r.payer, jobId: r.jobId, day: input.day, budgets: input.budgets });
    if (existing) {
      if (!sameJobTerms(toGrantView(existing), r)) throw jobIdTaken(r.jobId);
      return toGrantView(existing);
    }
    const { decision: d } = await decideAndReserve(
      client,
      r.jobId,
      poolAvailable,
      (available) => decide({ estimatedCostUnits: r.estimatedCost, budgetRemainingUnits: budget.remaining, poolAvailableUnits: available }),
      (decision) => decision.mode === 'free',
    );
    const free = d.mode === 'free';
    // reserved_at is the clock under the payer's lock: one payer's reservations in commit order
    const { rows } = await client.query<GrantRow>({
      name: 'grant-insert',
      text: GRANT_SQL.insert,
      values: [r.jobId, r.payer, r.payerAccountId, r.requestHash, JSON.stringify(r.work), r.estimatedCost, d.mode, budget.tier, d.absorbUnits,
       free ? 'reserved' : 'awaiting_payment', free ? input.day : null, free ? budget.daily : null, free ? d.absorbUnits : 0, jobsAccountOf(r.jobId, poolStripes)],
    });
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
    const accounts = await lockAccounts(client, [g.payer_account_id, g.jobs_account_id]);
    const { budget, poolAvailable } = await readBudget(client, { payer: g.payer, jobId: g.job_id, day: input.day, budgets: input.budgets });
    const { decision: d } = await decideAndReserve(
      client,
      g.job_id,
      poolAvailable,
      (available) =>
        regrant({ estimatedCostUnits: g.estimated_cost, advisoryAbsorbUnits: g.advisory_absorb, budgetRemainingUnits: budget.remaining, poolAvailableUnits: available }),
      () => true,
    );
    if (d.chargeUnits > 0) {
      await postTransfer(client, { key: paymentKey(g.job_id), kind: 'job_payment', debitAccountId: g.payer_account_id, creditAccountId: g.jobs_account_id, amount: d.chargeUnits, jobId: g.job_id }, accounts);
    }
    const { rows } = await client.query<GrantRow>({
      name: 'grant-paid',
      text: `update grants g set status = 'reserved', day = $2::date, budget = $3, reserved = $4, paid = $5, reserved_at = clock_timestamp()
        where job_id = $1 returning ${GRANT_COLUMNS}`,
      values: [g.job_id, input.day, budget.daily, d.absorbUnits, d.chargeUnits],
    });
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
    const { g, holds } = await lockGrant(client, input.jobId, (found) => [found.jobs_account_id, found.payer_account_id], true);
    if (g.status === 'settled') return toGrantView(g);
    if (g.status !== 'reserved') throw new SluiceError('job_conflict', `job ${g.job_id} is ${g.status}; it cannot settle`, { jobId: g.job_id, status: g.status });
    const s = settle({ reservedUnits: g.reserved, paidUnits: g.paid, actualCostUnits: input.actualCost });
    // the pool absorbs from its holds in order; what each does not absorb goes back to its stripe
    let absorb = s.absorbed;
    for (const [n, hold] of holds.entries()) {
      const take = Math.min(absorb, hold.amount);
      absorb -= take;
      if (take > 0) await captureHoldIn(client, { key: stripeKey(absorbKey(g.job_id), n), holdId: hold.id, amount: take, toAccountId: g.jobs_account_id, kind: 'job_absorb', jobId: g.job_id });
      if (take < hold.amount) await releaseHoldIn(client, { key: stripeKey(releaseReservationKey(g.job_id), n), holdId: hold.id });
    }
    if (s.refund > 0) {
      await postTransfer(client, { key: jobRefundKey(g.job_id), kind: 'job_refund', debitAccountId: g.jobs_account_id, creditAccountId: g.payer_account_id, amount: s.refund, jobId: g.job_id });
    }
    if (s.credited > 0) {
      // to a stripe this job already holds, else any unlocked one: credits spread with the reservations
      const stripe = holds[0]?.accountId ?? (await creditStripe(client, g.job_id));
      await postTransfer(client, { key: creditKey(g.job_id), kind: 'pool_credit', debitAccountId: g.jobs_account_id, creditAccountId: stripe, amount: s.credited, jobId: g.job_id });
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
    const { g, holds } = await lockGrant(client, jobId, () => [], true);
    if (g.status !== 'reserved' || g.reserved - g.absorbed - g.returned === 0) return toGrantView(g);
    for (const [n, hold] of holds.entries()) {
      if (hold.status === 'open') await releaseHoldIn(client, { key: stripeKey(releaseReservationKey(jobId), n), holdId: hold.id });
    }
    const { rows } = await client.query<GrantRow>(`update grants g set returned = reserved - absorbed where job_id = $1 returning ${GRANT_COLUMNS}`, [jobId]);
    await appendEvent(client, { type: 'job.reservation_released', subject: jobId, payload: { jobId, returned: rows[0]!.returned }, parties: [g.payer] });
    return toGrantView(rows[0]!);
  });
}

/** Compensation: refunds what the payer paid for a job that did not run. Idempotent; a no-op when nothing was paid. */
export function refundGrantPayment(pool: Pool, jobId: string): Promise<GrantView> {
  return withTransaction(pool, async (client) => {
    const { g } = await lockGrant(client, jobId, (found) => [found.jobs_account_id, found.payer_account_id], false);
    const due = g.paid - g.refunded;
    if (g.status === 'settled' || due === 0) return toGrantView(g);
    await postTransfer(client, { key: jobRefundKey(jobId), kind: 'job_refund', debitAccountId: g.jobs_account_id, creditAccountId: g.payer_account_id, amount: due, jobId });
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
