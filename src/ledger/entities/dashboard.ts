import type { Queryable } from '../../db/pool';
import { compile, params, sql, type Sql } from '../../db/sql';
import { SUBACCOUNT_STATUSES, type SubaccountStatus } from '../../domain/entities';
import { notFound } from '../../domain/errors';
import { pageRows } from '../paging';

/**
 * Read models of an entity's subaccounts: each one's figures, which the debt ledger's
 * checkpoints (src/ledger/checkpoints.ts) also take, and the dashboard over them.
 */

/**
 * Each subaccount's figures as the dashboard and the debt ledger both read them, in one
 * place: its balance and held (its account's), its open streams either way, what it has
 * paid (as a stream's payer) and received (as a payee). `where` selects the subaccounts,
 * a condition on `s` with its own parameters (composed by name, src/db/sql.ts).
 */
export const subaccountFigures = (where: Sql) => sql`
  select s.id, s.entity_id, s.seq, s.status, s.account_id, s.hold_id,
         coalesce(a.balance, 0) as balance, coalesce(a.held, 0) as held,
         coalesce(o.open, 0) + coalesce(i.open, 0) as open_streams, coalesce(o.paid, 0) as paid, coalesce(i.paid, 0) as received
    from subaccounts s
    left join accounts a on a.id = s.account_id
    left join lateral (select count(*) filter (where x.status = 'open') as open, sum(x.paid) as paid
                         from streams x where x.payer_account_id = s.account_id) o on s.account_id is not null
    left join lateral (select count(*) filter (where x.status = 'open') as open, sum(x.paid) as paid
                         from streams x where x.payee_account_id = s.account_id) i on s.account_id is not null
   where ${where}`;

/** The most subaccount rows one dashboard read returns: the live cap's default. */
export const DASHBOARD_ROWS_MAX = 500;

export interface DashboardRow {
  id: string;
  seq: number;
  status: SubaccountStatus;
  accountId?: string;
  balance: number;
  held: number;
  openStreams: number;
  paid: number;
  received: number;
}

export interface Dashboard {
  entity: string;
  /** Subaccounts by status, all of them. */
  statusCounts: Record<SubaccountStatus, number>;
  /** Sums over all the entity's subaccounts, and its main account with the collateral held on it. */
  totals: { balance: number; held: number; openStreams: number; paid: number; received: number; mainBalance: number; mainHeld: number; collateralHeld: number };
  /** Per subaccount, by number, after `after`, at most `limit` (≤ DASHBOARD_ROWS_MAX). */
  subaccounts: DashboardRow[];
  /** The `after` of the next page, when there is one. */
  nextAfter?: number;
}

/**
 * The entity dashboard in one query: a row per subaccount (balance, held, open
 * streams, paid out and received by its streams), the status counts and the totals
 * over all of them, and the main account with the collateral it holds. Each
 * subaccount's streams are found through the (account, status) indexes, as payer
 * and as payee separately, each an index-only scan.
 */
export async function entityDashboard(db: Queryable, entityId: string, opts: { after?: number; limit?: number } = {}): Promise<Dashboard> {
  const limit = pageRows(opts.limit, DASHBOARD_ROWS_MAX);
  const p = params({ entityId, after: opts.after ?? 0, limit });
  const { rows } = await db.query(
    compile(sql`with subs as (${subaccountFigures(sql`s.entity_id = ${p.entityId}`)}),
     page as (select * from subs where seq > ${p.after} order by seq limit ${p.limit} + 1)
     select (select jsonb_agg(jsonb_build_object('id', id, 'seq', seq, 'status', status, 'accountId', account_id, 'balance', balance,
                                                 'held', held, 'openStreams', open_streams, 'paid', paid, 'received', received) order by seq)
               from page) as rows,
            (select jsonb_object_agg(status, n) from (select status, count(*) as n from subs group by status) c) as counts,
            (select jsonb_build_object('balance', coalesce(sum(balance), 0), 'held', coalesce(sum(held), 0), 'openStreams', coalesce(sum(open_streams), 0),
                                       'paid', coalesce(sum(paid), 0), 'received', coalesce(sum(received), 0),
                                       'collateralHeld', coalesce(sum(h.amount - h.captured - h.released) filter (where h.status = 'open'), 0))
               from subs left join holds h on h.id = subs.hold_id) as totals,
            m.balance as main_balance, m.held as main_held
       from entities e join accounts m on m.id = e.main_account_id
      where e.id = ${p.entityId}`),
  );
  const r = rows[0];
  if (!r) throw notFound('entity', entityId);
  const page: DashboardRow[] = (r.rows ?? []).map(({ accountId, ...row }: DashboardRow & { accountId: string | null }) => ({ ...row, ...(accountId && { accountId }) }));
  const more = page.length > limit;
  const subaccounts = more ? page.slice(0, limit) : page;
  const statusCounts = Object.fromEntries(SUBACCOUNT_STATUSES.map((st) => [st, Number(r.counts?.[st] ?? 0)])) as Record<SubaccountStatus, number>;
  return {
    entity: entityId,
    statusCounts,
    totals: { ...r.totals, mainBalance: r.main_balance, mainHeld: r.main_held },
    subaccounts,
    ...(more && { nextAfter: subaccounts[subaccounts.length - 1]!.seq }),
  };
}
