import type { Pool, Queryable } from '../db/pool';
import { withTransaction } from '../db/pool';
import { notFound, SluiceError } from '../domain/errors';
import { decide, paymentKey } from '../domain/grants';
import { assertUnits } from '../domain/money';
import {
  SESSION_REQUESTS_MAX,
  sessionAccountId,
  sessionFundKey,
  sessionJobId,
  sessionRefundKey,
  sameRequestTerms,
  type SessionOpening,
  type SessionRequestTerms,
  type SessionTotals,
  type SessionView,
} from '../domain/sessions';
import { lockAccounts } from './accounts';
import { appendEvent } from './events';
import { cancelGrantInLedger, decideAndReserve, GRANT_COLUMNS, lockBudget, readBudget, toGrantView, type GrantRow, type TierBudgets } from './grants';
import { jobsAccountOf } from './pool';
import { postTransfer } from './transfers';

/**
 * The money side of sessions (DESIGN §5). A session's balance is an account of its
 * own (`session:<id>`, kind `session`, owned by Sluice), so "never negative" is the
 * accounts CHECK and each movement is a keyed transfer in one transaction:
 *
 *   open      payer's account → session account  (session_fund, `session:<id>:fund`)
 *   request   decide on the estimate, reserve the free part on the pool and in the
 *             payer's budget (the grants' own decideAndReserve), and pay the charged
 *             part: session account → the jobs account (job_payment)
 *   settle    the grants' settleGrant: absorb ≤ the reservation, the rest returned to
 *             the pool, what the payer overpaid back to the session (job_refund), 10%
 *             of what it kept to the pool
 *   fail      the grants' compensations: refund the payment to the session, release
 *             the reservation, close the grant `failed`
 *   close     session account → payer's account, what remains (session_refund)
 *
 * A request is a grant (its job id `session:<session>:<request>`), so the pool, the
 * daily budget it shares with the payer's jobs, the grants trigger and the auditor's
 * grant checks all hold for it unchanged. Lock order (accounts.ts): the payer's party
 * row (the budget), the session row, the grant, the accounts, the pool's stripes.
 */
interface SessionRow {
  session_id: string;
  payer: string;
  payer_account_id: string;
  account_id: string;
  status: 'open' | 'closed';
  funded: number;
  refunded: number;
  created_at: Date;
  closed_at: Date | null;
}

async function findSession(db: Queryable, sessionId: string, lock = false): Promise<SessionRow | undefined> {
  const { rows } = await db.query<SessionRow>(`select * from sessions where session_id = $1 ${lock ? 'for no key update' : ''}`, [sessionId]);
  return rows[0];
}

/** The terms that make a session: the same session id with other terms is another session, never this one. */
export const sameOpening = (s: Pick<SessionView, 'payer' | 'payerAccountId' | 'funded'>, o: SessionOpening) =>
  s.payer === o.payer && s.payerAccountId === o.payerAccountId && s.funded === o.amountUnits;

/** A session id taken by other terms is a conflict (409), never that session. */
export const sessionIdTaken = (sessionId: string) => new SluiceError('ref_conflict', `session id ${sessionId} is already used by another session`, { sessionId });

/** A request id sent again with other terms (sameRequestTerms) is a conflict (409), never that request. */
export const requestTermsTaken = (sessionId: string, requestId: string) =>
  new SluiceError('ref_conflict', `request ${requestId} of session ${sessionId} was sent with other terms`, { sessionId, requestId });

export const sessionClosed = (sessionId: string) =>
  new SluiceError('invalid_state', `session ${sessionId} is closed: it takes no requests`, { sessionId, status: 'closed' });

/**
 * Opens a session, in one transaction: its account, its row, and the funding from
 * the payer's account. Opening it again returns it; the same id with other terms is
 * a conflict; a payer short of the amount gets `insufficient_funds` and nothing exists.
 */
export function openSession(pool: Pool, o: SessionOpening): Promise<SessionView> {
  assertUnits(o.amountUnits, 'amountUnits');
  return withTransaction(pool, async (client) => {
    const existing = await findSession(client, o.sessionId);
    if (existing) {
      const view = await sessionView(client, o.sessionId);
      if (!sameOpening(view, o)) throw sessionIdTaken(o.sessionId);
      return view;
    }
    const accountId = sessionAccountId(o.sessionId);
    try {
      await client.query(`insert into accounts (id, owner_id, kind, currency) select $1, 'sluice', 'session', currency from accounts where id = $2`, [accountId, o.payerAccountId]);
      await client.query(`insert into sessions (session_id, payer, payer_account_id, account_id, status, funded) values ($1, $2, $3, $4, 'open', $5)`, [
        o.sessionId,
        o.payer,
        o.payerAccountId,
        accountId,
        o.amountUnits,
      ]);
    } catch (error) {
      // a concurrent open of the same id committed first: it answers
      if ((error as { code?: string }).code === '23505') throw sessionIdTaken(o.sessionId);
      throw error;
    }
    await postTransfer(client, { key: sessionFundKey(o.sessionId), kind: 'session_fund', debitAccountId: o.payerAccountId, creditAccountId: accountId, amount: o.amountUnits, memo: `session ${o.sessionId}` });
    const view = await sessionView(client, o.sessionId);
    await appendEvent(client, { type: 'session.opened', subject: o.sessionId, payload: { ...view }, parties: [o.payer] });
    return view;
  });
}

/**
 * A request to a session, decided and reserved before its work runs, in one
 * transaction: decide() on the estimate with the payer's budget and the pool, the
 * free part reserved (pool hold + budget, as a job's), the charged part paid from the
 * session's balance. A charged part the balance cannot pay refuses the request
 * (`insufficient_funds`) and the transaction reserves nothing; so does a closed
 * session (`invalid_state`). Sending the same request again returns its grant; the
 * same request id with other terms is a conflict.
 */
export function openSessionRequest(pool: Pool, input: { sessionId: string; terms: SessionRequestTerms; day: string; budgets: TierBudgets }): Promise<ReturnType<typeof toGrantView>> {
  const { sessionId, terms } = input;
  assertUnits(terms.estimatedCost, 'estimatedCost');
  const jobId = sessionJobId(sessionId, terms.requestId);
  return withTransaction(pool, async (client) => {
    const found = await findSession(client, sessionId);
    if (!found) throw notFound('session', sessionId);
    await lockBudget(client, found.payer);
    const s = (await findSession(client, sessionId, true))!;
    const { existing, budget, poolAvailable, poolStripes } = await readBudget(client, { payer: s.payer, jobId, day: input.day, budgets: input.budgets });
    if (existing) {
      if (existing.session_id !== sessionId || existing.request_id !== terms.requestId) throw new SluiceError('ref_conflict', `job id ${jobId} is already used by a job`, { jobId });
      if (!sameRequestTerms({ estimatedCost: existing.estimated_cost, requestHash: existing.request_hash }, terms)) throw requestTermsTaken(sessionId, terms.requestId);
      return toGrantView(existing);
    }
    if (s.status !== 'open') throw sessionClosed(sessionId);
    const { rows: counted } = await client.query<{ n: number }>(`select count(*)::int as n from grants where session_id = $1`, [sessionId]);
    if (counted[0]!.n >= SESSION_REQUESTS_MAX) {
      throw new SluiceError('limit_exceeded', `session ${sessionId} has taken its ${SESSION_REQUESTS_MAX} requests: open another`, { sessionId, limit: SESSION_REQUESTS_MAX });
    }
    const jobsAccountId = jobsAccountOf(jobId, poolStripes);
    // the accounts before the stripes (the lock order): the session's balance is read under its lock
    const accounts = await lockAccounts(client, [s.account_id, jobsAccountId]);
    const { decision: d } = await decideAndReserve(
      client,
      jobId,
      poolAvailable,
      (available) => decide({ estimatedCostUnits: terms.estimatedCost, budgetRemainingUnits: budget.remaining, poolAvailableUnits: available }),
      () => true,
    );
    const left = accounts.get(s.account_id)!.available;
    if (d.chargeUnits > left) {
      // thrown before anything commits: the reservation above is rolled back with it
      throw new SluiceError(
        'insufficient_funds',
        `session ${sessionId} has ${left} left; request ${terms.requestId} would charge ${d.chargeUnits} (estimate ${terms.estimatedCost}, ${d.absorbUnits} free)`,
        { sessionId, requestId: terms.requestId, available: left, required: d.chargeUnits, account: s.account_id },
      );
    }
    const { rows } = await client.query<GrantRow>(
      `insert into grants as g (job_id, payer, payer_account_id, request_hash, work, estimated_cost, decision, tier, advisory_absorb,
                                status, day, budget, reserved, reserved_at, jobs_account_id, paid, session_id, request_id)
       values ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'reserved', $10::date, $11, $9, clock_timestamp(), $12, $13, $14, $15)
       returning ${GRANT_COLUMNS}`,
      [jobId, s.payer, s.account_id, terms.requestHash, JSON.stringify(terms.work), terms.estimatedCost, d.mode, budget.tier, d.absorbUnits,
       input.day, budget.daily, jobsAccountId, d.chargeUnits, sessionId, terms.requestId],
    );
    if (d.chargeUnits > 0) {
      await postTransfer(client, { key: paymentKey(jobId), kind: 'job_payment', debitAccountId: s.account_id, creditAccountId: jobsAccountId, amount: d.chargeUnits, jobId }, accounts);
    }
    const grant = toGrantView(rows[0]!);
    await appendEvent(client, { type: 'session.request_reserved', subject: sessionId, payload: { ...grant }, parties: [s.payer] });
    return grant;
  });
}

/**
 * Closes a session, in one transaction: what remains of its balance goes back to the
 * payer's account. Only with every request resolved (its workflow waits for them;
 * the sessions trigger refuses it otherwise). Closing again returns the session.
 */
export function closeSession(pool: Pool, sessionId: string): Promise<SessionView> {
  return withTransaction(pool, async (client) => {
    const s = await findSession(client, sessionId, true);
    if (!s) throw notFound('session', sessionId);
    if (s.status === 'closed') return sessionView(client, sessionId);
    const { rows: running } = await client.query<{ n: number }>(`select count(*)::int as n from grants where session_id = $1 and status in ('awaiting_payment', 'reserved')`, [sessionId]);
    if (running[0]!.n > 0) throw new SluiceError('invalid_state', `session ${sessionId} still runs ${running[0]!.n} requests`, { sessionId, running: running[0]!.n });
    const accounts = await lockAccounts(client, [s.account_id, s.payer_account_id]);
    const remaining = accounts.get(s.account_id)!.balance;
    if (remaining > 0) {
      await postTransfer(client, { key: sessionRefundKey(sessionId), kind: 'session_refund', debitAccountId: s.account_id, creditAccountId: s.payer_account_id, amount: remaining, memo: `session ${sessionId} closed` }, accounts);
    }
    await client.query(`update sessions set status = 'closed', refunded = $2, closed_at = now() where session_id = $1`, [sessionId, remaining]);
    const view = await sessionView(client, sessionId);
    await appendEvent(client, { type: 'session.closed', subject: sessionId, payload: { ...view }, parties: [s.payer] });
    return view;
  });
}

/** The session's totals over its requests (their grants), as one row. */
const TOTALS_SQL = `select count(*)::int as requests,
          count(*) filter (where status in ('awaiting_payment', 'reserved'))::int as running,
          count(*) filter (where status = 'settled')::int as settled,
          count(*) filter (where status in ('failed', 'cancelled'))::int as failed,
          coalesce(sum(estimated_cost), 0)::bigint as estimated,
          coalesce(sum(absorbed), 0)::bigint as absorbed,
          coalesce(sum(paid - refunded), 0)::bigint as debited,
          coalesce(sum(credited), 0)::bigint as credited,
          coalesce(sum(actual_cost) filter (where status = 'settled'), 0)::bigint as "actualCost"
     from grants where session_id = $1`;

/** A session, its balance and totals; with `withRequests`, its requests oldest first (at most SESSION_REQUESTS_MAX). */
export async function sessionView(db: Queryable, sessionId: string, withRequests = false): Promise<SessionView> {
  const s = await findSession(db, sessionId);
  if (!s) throw notFound('session', sessionId);
  const [{ rows: balances }, { rows: totals }] = await Promise.all([
    db.query<{ balance: number }>('select balance from accounts where id = $1', [s.account_id]),
    db.query<SessionTotals>(TOTALS_SQL, [sessionId]),
  ]);
  const t = totals[0]!;
  const view: SessionView = {
    sessionId: s.session_id,
    payer: s.payer,
    payerAccountId: s.payer_account_id,
    accountId: s.account_id,
    status: s.status,
    funded: s.funded,
    balance: balances[0]!.balance,
    debited: t.debited,
    refunded: s.refunded,
    totals: t,
    createdAt: s.created_at.toISOString(),
  };
  if (s.closed_at) view.closedAt = s.closed_at.toISOString();
  if (withRequests) {
    const { rows } = await db.query<GrantRow>(
      `select ${GRANT_COLUMNS} from grants g where g.session_id = $1 order by g.created_at, g.job_id limit $2`,
      [sessionId, SESSION_REQUESTS_MAX],
    );
    view.requests = rows.map(toGrantView);
  }
  return view;
}

/** A request of a session, if it was taken (its grant). */
export async function findSessionRequest(db: Queryable, sessionId: string, requestId: string) {
  const { rows } = await db.query<GrantRow>(`select ${GRANT_COLUMNS} from grants g where g.session_id = $1 and g.request_id = $2`, [sessionId, requestId]);
  return rows[0] && toGrantView(rows[0]);
}

/** The session's payer, or undefined (for the API's access check without the whole view). */
export async function sessionPayer(db: Queryable, sessionId: string): Promise<string | undefined> {
  return (await findSession(db, sessionId))?.payer;
}

/**
 * A session whose workflow is gone (terminated, lost), settled in the ledger as its
 * workflow would have: each request still running compensated (payment back to the
 * session, reservation released, closed `cancelled`), then the session closed with
 * its balance refunded. Each step is idempotent.
 */
export async function closeSessionInLedger(pool: Pool, input: { sessionId: string; failure: string; closedBy: string; reason: string }): Promise<SessionView> {
  const { rows } = await pool.query<{ job_id: string }>(`select job_id from grants where session_id = $1 and status in ('awaiting_payment', 'reserved')`, [input.sessionId]);
  for (const { job_id } of rows) await cancelGrantInLedger(pool, { jobId: job_id, failure: input.failure, closedBy: input.closedBy, reason: input.reason });
  return closeSession(pool, input.sessionId);
}
