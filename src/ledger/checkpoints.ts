import type { Queryable } from '../db/pool';
import { compile, params, sql } from '../db/sql';
import { LIVE_STATUSES } from '../domain/entities';
import { notFound, SluiceError } from '../domain/errors';
import { LEDGER_POINTS_MAX, type LedgerPoint } from '../domain/checkpoints';
import { subaccountFigures } from './entities/dashboard';

/**
 * The debt ledger (DESIGN §4, migration 024): rounds of checkpoints of every live
 * subaccount's balance, held, paid and received, and the series an entity reads from
 * them.
 */

export interface CheckpointRound {
  at: string;
  /** Subaccounts checkpointed (a round already taken at `at` adds none). */
  subaccounts: number;
}

/**
 * One round at `at` for one entity's live subaccounts, or every entity's: one
 * statement over the same figures the dashboard shows. Taking the same round again
 * (a retried activity, a second request in the same millisecond) adds nothing.
 */
export async function takeCheckpoints(db: Queryable, opts: { entityId?: string; at: Date }): Promise<CheckpointRound> {
  const p = params({ entityId: opts.entityId ?? null, at: opts.at, live: LIVE_STATUSES });
  const { rowCount } = await db.query(
    compile(sql`insert into subaccount_checkpoints (subaccount_id, entity_id, at, balance, held, paid, received)
     select f.id, f.entity_id, ${p.at}, f.balance, f.held, f.paid, f.received
       from (${subaccountFigures(sql`(${p.entityId}::text is null or s.entity_id = ${p.entityId}) and s.status = any(${p.live})`)}) f
     on conflict (subaccount_id, at) do nothing`),
  );
  return { at: opts.at.toISOString(), subaccounts: rowCount ?? 0 };
}


/**
 * An entity's figures (or one subaccount's) at every `stepS` from `from` to `to`: at
 * each point, the sum over the latest round at or before it. One statement whatever
 * the number of subaccounts: a point is one backward step of the entity's index to its
 * round and one range of that round's rows, summed in the database, so memory is
 * bounded by the number of points (at most LEDGER_POINTS_MAX), never the subaccounts.
 */
export async function entityLedger(db: Queryable, entityId: string, q: { from: Date; to: Date; stepS: number; subaccount?: string }): Promise<LedgerPoint[]> {
  const points = Math.floor((q.to.getTime() - q.from.getTime()) / (q.stepS * 1000)) + 1;
  if (q.to <= q.from) throw new SluiceError('invalid_request', `from (${q.from.toISOString()}) must be before to (${q.to.toISOString()})`, { param: 'from' });
  if (points > LEDGER_POINTS_MAX) {
    throw new SluiceError('invalid_request', `${points} points from ${q.from.toISOString()} to ${q.to.toISOString()} every ${q.stepS} s: at most ${LEDGER_POINTS_MAX}, take a longer step`, { param: 'step', points, max: LEDGER_POINTS_MAX });
  }
  const { rows: entity } = await db.query('select 1 from entities where id = $1', [entityId]);
  if (!entity[0]) throw notFound('entity', entityId);
  if (q.subaccount !== undefined) {
    const { rows } = await db.query('select 1 from subaccounts where id = $1 and entity_id = $2', [q.subaccount, entityId]);
    if (!rows[0]) throw notFound('subaccount', q.subaccount);
  }
  const { rows } = await db.query<{ at: Date; round: Date | null; subaccounts: number; balance: string; held: string; paid: string; received: string }>(
    `select p.at, r.at as round,
            count(c.subaccount_id)::int as subaccounts,
            coalesce(sum(c.balance), 0) as balance, coalesce(sum(c.held), 0) as held,
            coalesce(sum(c.paid), 0) as paid, coalesce(sum(c.received), 0) as received
       from generate_series($2::timestamptz, $3::timestamptz, make_interval(secs => $4)) p(at)
       left join lateral (select max(k.at) as at from subaccount_checkpoints k where k.entity_id = $1 and k.at <= p.at) r on true
       left join subaccount_checkpoints c on c.entity_id = $1 and c.at = r.at and ($5::text is null or c.subaccount_id = $5)
      group by p.at, r.at
      order by p.at`,
    [entityId, q.from, q.to, q.stepS, q.subaccount ?? null],
  );
  return rows.map((r) => ({
    at: r.at.toISOString(),
    ...(r.round && { checkpointAt: r.round.toISOString() }),
    subaccounts: r.subaccounts,
    balance: Number(r.balance),
    held: Number(r.held),
    paid: Number(r.paid),
    received: Number(r.received),
  }));
}
