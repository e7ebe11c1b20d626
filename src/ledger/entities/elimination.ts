import type { Pool, PoolClient, Queryable } from '../../db/pool';
import { withTransaction } from '../../db/pool';
import { passesChallenge, sweepKey, type Subaccount } from '../../domain/entities';
import { SluiceError } from '../../domain/errors';
import { assessRules, nextHighWaterMark, type RuleBreach } from '../../domain/challengeRules';
import { bumpCounter } from '../metricCounters';
import { getAccount, lockAccounts } from '../accounts';
import { appendEvent } from '../events';
import { postTransfer } from '../transfers';
import { lockSubaccount, rulesOf, toSubaccount, type SubaccountRow } from './entities';
import { releaseCollateralIn } from './saga';

/**
 * A live subaccount's rules and its end (src/domain/challengeRules.ts,
 * workflows/entities.ts): the challenge concluded, the periodic assessments, and
 * elimination, begun (no new stream or hold on it), its streams closed by the
 * workflow, then settled (the balance swept back, the collateral released). Each
 * step that changes the subaccount is one transaction under its lock.
 */

/**
 * The streams an elimination closes: those open on the subaccount's account now, and
 * those closed since its elimination began (by an earlier attempt whose reply was
 * lost), so a retried close still reports, and wakes, every stream it closed.
 */
export async function streamsToCloseOf(db: Queryable, sub: { id: string; entityId: string; accountId: string }): Promise<string[]> {
  // when it began: its `subaccount.eliminating` event, found through the entity's events (indexed by party)
  const { rows } = await db.query<{ ref: string }>(
    `with began as (select min(created_at) as at from events where parties @> array[$3]::text[] and type = 'subaccount.eliminating' and subject = $1)
     select ref from streams, began
      where (payer_account_id = $2 or payee_account_id = $2) and (status = 'open' or closed_at >= began.at)
      order by ref`,
    [sub.id, sub.accountId, sub.entityId],
  );
  return rows.map((r) => r.ref);
}

/** The challenge rule at the end of the period: `active` if the balance held up, otherwise eliminate (the caller does). */
export function concludeChallenge(pool: Pool, id: string): Promise<{ subaccount: Subaccount; passed: boolean }> {
  return withTransaction(pool, async (client) => {
    const { sub, entity } = await lockSubaccount(client, id);
    if (sub.status !== 'challenge') return { subaccount: toSubaccount(sub), passed: sub.status === 'active' };
    const balance = (await getAccount(client, sub.account_id!)).balance;
    const passed = passesChallenge(balance, sub.funding, entity.challenge_min_bps);
    if (!passed) return { subaccount: toSubaccount(sub), passed };
    const { rows } = await client.query<SubaccountRow>(`update subaccounts set status = 'active', activated_at = now() where id = $1 returning *`, [id]);
    const s = toSubaccount(rows[0]!);
    await appendEvent(client, { type: 'subaccount.active', subject: id, payload: { ...s, challenge: { balance, funding: sub.funding } }, parties: [entity.id] });
    return { subaccount: s, passed };
  });
}

export interface Assessment {
  subaccount: Subaccount;
  /**
   * `promoted`: its challenge passed, now `active`; `kept`: active and within the rules;
   * `breached`: a rule fired (recorded on it, the caller eliminates it); `ended`: no
   * longer assessed (eliminated or being eliminated, by request or by an earlier breach).
   */
  verdict: 'promoted' | 'kept' | 'breached' | 'ended';
  breach?: RuleBreach;
  /** The entity's assessment period, for the next timer (0: none). */
  assessEveryMs: number;
}

/** The last stream tick paid or received by the account (as payer, payee or distribution member), through the account indexes. */
async function lastActivityOf(client: PoolClient, accountId: string): Promise<Date | null> {
  const { rows } = await client.query<{ at: Date | null }>(
    `select max(at) as at from (
       select max(last_billed_at) as at from streams where payer_account_id = $1
       union all select max(last_billed_at) from streams where payee_account_id = $1
       union all select max(s.last_billed_at) from stream_members m join streams s on s.ref = m.stream_ref where m.account_id = $1) t`,
    [accountId],
  );
  return rows[0]?.at ?? null;
}

/**
 * The rules (src/domain/challengeRules.ts) on a live subaccount, under its lock: at
 * the end of its challenge (`challenge`: promoted when they hold) and then on each
 * periodic assessment (`active`). The high-water mark takes in the balance seen now
 * (at least the funding); a rule that fires is recorded on it with its figures, for
 * its elimination to report (a later assessment that passes clears it). `atMs` is the
 * workflow's clock, so a timer that fires late still measures idleness from its time.
 */
export function assessSubaccount(pool: Pool, id: string, atMs: number): Promise<Assessment> {
  return withTransaction(pool, async (client) => {
    const { sub, entity } = await lockSubaccount(client, id);
    const assessEveryMs = entity.assess_every_ms;
    if (sub.status !== 'challenge' && sub.status !== 'active') return { subaccount: toSubaccount(sub), verdict: 'ended', assessEveryMs };
    const balance = (await getAccount(client, sub.account_id!)).balance;
    const highWaterMark = nextHighWaterMark(sub.high_water_mark, balance, sub.funding);
    const lastActivity = await lastActivityOf(client, sub.account_id!);
    const lastActivityAtMs = Math.max(sub.created_at.getTime(), lastActivity?.getTime() ?? 0);
    const breach = assessRules(rulesOf(entity), { fundingUnits: sub.funding, balanceUnits: balance, highWaterMarkUnits: highWaterMark, lastActivityAtMs, atMs });
    const promote = !breach && sub.status === 'challenge';
    const { rows } = await client.query<SubaccountRow>(
      `update subaccounts set high_water_mark = $2, assessed_at = now(), elimination_rule = $3,
              status = case when $4 then 'active' else status end, activated_at = case when $4 then now() else activated_at end
        where id = $1 returning *`,
      [id, highWaterMark, breach ?? null, promote],
    );
    const s = toSubaccount(rows[0]!);
    if (promote) await appendEvent(client, { type: 'subaccount.active', subject: id, payload: { ...s, challenge: { balance, funding: sub.funding } }, parties: [entity.id] });
    if (breach) await appendEvent(client, { type: 'subaccount.rule_breached', subject: id, payload: { subaccount: id, ...breach }, parties: [entity.id] });
    return { subaccount: s, verdict: breach ? 'breached' : promote ? 'promoted' : 'kept', ...(breach && { breach }), assessEveryMs };
  });
}

/**
 * Elimination begins: under the subaccount's lock and its account's, it becomes
 * `eliminating`, after which the database refuses any new stream or hold on it, so
 * the streams closed next are all there will be. Refused while it holds anything
 * but its streams' escrow (a job's reservation, a hold of its own): those resolve
 * or are released first, so the subaccount can end empty.
 */
export function beginElimination(pool: Pool, id: string): Promise<Subaccount> {
  return withTransaction(pool, async (client) => {
    const { sub, entity } = await lockSubaccount(client, id);
    if (sub.status === 'eliminating' || sub.status === 'eliminated') return toSubaccount(sub);
    if (sub.status !== 'active' && sub.status !== 'challenge') {
      throw new SluiceError('invalid_request', `subaccount ${id} is ${sub.status}; only a live subaccount can be eliminated`, { status: sub.status });
    }
    await lockAccounts(client, [sub.account_id!]);
    const { rows: holds } = await client.query<{ id: number }>(
      `select id from holds where account_id = $1 and status = 'open' and not reference ? 'stream' order by id`,
      [sub.account_id],
    );
    if (holds.length > 0) {
      throw new SluiceError('holds_open', `subaccount ${id} has open holds (${holds.map((h) => h.id).join(', ')}); release them or let them resolve before eliminating it`, {
        holds: holds.map((h) => h.id),
      });
    }
    const { rows } = await client.query<SubaccountRow>(`update subaccounts set status = 'eliminating' where id = $1 returning *`, [id]);
    const s = toSubaccount(rows[0]!);
    await appendEvent(client, { type: 'subaccount.eliminating', subject: id, payload: { ...s }, parties: [entity.id] });
    return s;
  });
}

export interface Settlement {
  subaccount: Subaccount;
  swept: number;
  collateralReleased: boolean;
  /** Streams still open on it (opened while elimination began): close them and settle again. */
  openStreams: string[];
}

/** What an elimination settled, read back from the books (a retry after it committed answers the same). */
async function settledBefore(client: PoolClient, sub: SubaccountRow): Promise<Settlement> {
  const { rows } = await client.query<{ swept: number | null; released: boolean }>(
    `select (select amount from transfers where idempotency_key = $1) as swept,
            coalesce((select status = 'released' from holds where id = $2), false) as released`,
    [sweepKey(sub.id), sub.hold_id],
  );
  return { subaccount: toSubaccount(sub), swept: rows[0]!.swept ?? 0, collateralReleased: rows[0]!.released, openStreams: [] };
}

/**
 * The money side of elimination, once its streams are closed: sweeps the whole
 * balance back to the entity, releases the collateral, marks it `eliminated` (a slot
 * freed, the history kept), under the subaccount's and the accounts' locks. A stream
 * that opened on it while elimination began is reported instead, to be closed first.
 */
export function settleElimination(pool: Pool, input: { id: string; reason: string }): Promise<Settlement> {
  return withTransaction(pool, async (client) => {
    const { sub, entity } = await lockSubaccount(client, input.id);
    if (sub.status === 'eliminated') return settledBefore(client, sub);
    if (sub.status !== 'eliminating') {
      throw new SluiceError('invalid_request', `subaccount ${input.id} is ${sub.status}; its elimination has not begun`, { status: sub.status });
    }
    const accounts = await lockAccounts(client, [sub.account_id!, entity.main_account_id]);
    const openStreams = await openStreamsOf(client, sub.account_id!);
    if (openStreams.length > 0) return { subaccount: toSubaccount(sub), swept: 0, collateralReleased: false, openStreams };
    const account = accounts.get(sub.account_id!)!;
    // beginElimination refused other holds and no new one can be placed since: with the
    // streams closed nothing is held, so the whole balance moves
    if (account.held !== 0) throw new Error(`subaccount ${input.id} still holds ${account.held} with its streams closed`);
    const swept = account.balance;
    if (swept > 0) {
      await postTransfer(
        client,
        { key: sweepKey(input.id), kind: 'subaccount_sweep', debitAccountId: sub.account_id!, creditAccountId: entity.main_account_id, amount: swept, subaccountId: input.id },
        accounts,
      );
    }
    const collateralReleased = await releaseCollateralIn(client, sub);
    const { rows } = await client.query<SubaccountRow>(`update subaccounts set status = 'eliminated', failure = $2, ended_at = now() where id = $1 returning *`, [input.id, input.reason]);
    const s = toSubaccount(rows[0]!);
    await appendEvent(client, { type: 'subaccount.eliminated', subject: input.id, payload: { ...s, swept, collateralReleased }, parties: [entity.id] });
    // by rule (the one the assessment recorded) or by request
    await bumpCounter(client, 'subaccount_eliminations', sub.elimination_rule ? { reason: 'rule', rule: sub.elimination_rule.rule } : { reason: 'request', rule: 'none' });
    return { subaccount: s, swept, collateralReleased, openStreams: [] };
  });
}

/** Open streams paid from or to the account (elimination closes them). */
export async function openStreamsOf(db: Queryable, accountId: string): Promise<string[]> {
  const { rows } = await db.query<{ ref: string }>(
    `select ref from streams where payer_account_id = $1 and status = 'open'
     union select ref from streams where payee_account_id = $1 and status = 'open' order by ref`,
    [accountId],
  );
  return rows.map((r) => r.ref);
}
