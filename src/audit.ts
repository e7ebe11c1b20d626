import type { Client } from '@temporalio/client';
import type { Queryable } from './db/pool';
import { ConfigSchema } from './config';
import { LIVE_STATUSES } from './domain/entities';
import { heldOpen } from './ledger/heldOpen';
import { strandedItems } from './temporal/reconciler';

/**
 * The auditor: every invariant of DESIGN.md §2 to §5 checked over the whole database,
 * each as one SQL query that returns the offending rows. The database already
 * refuses most violations (constraints, triggers, locks); the audit proves, after
 * the fact and independently of application code, that none slipped through.
 */
export interface AuditCheck {
  name: string;
  description: string;
  ok: boolean;
  violations: number;
  /** Up to `ROWS_MAX` offending rows, for a human to start from. */
  rows: Record<string, unknown>[];
}

export interface AuditReport {
  ok: boolean;
  checkedAt: string;
  checks: AuditCheck[];
}

const ROWS_MAX = 20;

/**
 * The cap of an entity without its own: the configured default, read as the worker
 * reads it (SLUICE_SUBACCOUNT_CAP, the same rule and default as src/config.ts).
 */
const configuredSubaccountCap = (): number => ConfigSchema.shape.SLUICE_SUBACCOUNT_CAP.parse(process.env.SLUICE_SUBACCOUNT_CAP);

const CHECKS: Array<{ name: string; description: string; sql: string; params?: () => unknown[] }> = [
  {
    name: 'conservation.sum_zero',
    description: 'the balances of each currency sum to zero (the world account, the sum of its stripes, is the other side)',
    sql: `select currency, sum(balance)::bigint as total from accounts group by currency having sum(balance) <> 0`,
  },
  {
    name: 'conservation.balance_is_sum_of_transfers',
    description:
      'every balance equals its credits minus its debits (each transfer debits what it credits): its live transfers plus the totals its archived months carried forward',
    sql: `select a.id, a.balance, coalesce(c.s, 0) - coalesce(d.s, 0) as from_transfers
            from accounts a
            left join (select credit_account_id as id, sum(amount) as s from transfer_totals group by 1) c on c.id = a.id
            left join (select debit_account_id as id, sum(amount) as s from transfer_totals group by 1) d on d.id = a.id
           where a.balance <> coalesce(c.s, 0) - coalesce(d.s, 0)`,
  },
  {
    name: 'conservation.available_not_negative',
    description: "no account but the world's stripe accounts has available < 0",
    sql: `select id, balance, held from accounts where kind <> 'world' and balance - held < 0`,
  },
  {
    name: 'holds.within_amount',
    description: 'captured + released never exceeds the hold',
    sql: `select id, amount, captured, released from holds where captured + released > amount`,
  },
  {
    name: 'holds.held_matches_open_holds',
    description: "each account's held equals what remains on its open holds",
    sql: `select a.id, a.held, coalesce(h.remaining, 0) as open_holds
            from accounts a
            left join (select account_id, sum(amount - captured - released) as remaining from holds where status = 'open' group by 1) h on h.account_id = a.id
           where a.held <> coalesce(h.remaining, 0)`,
  },
  {
    name: 'streams.paid_is_sum_of_ticks',
    description: "every stream's paid total equals the sum of its ticks and of its tick transfers (a distribution's: its split transfers)",
    sql: `select s.ref, s.paid, coalesce(t.s, 0) as ticks_total, coalesce(x.s, 0) as transfers_total
            from streams s
            left join (select stream_ref, sum(amount) as s from stream_tick_totals group by 1) t on t.stream_ref = s.ref
            left join (select stream_ref, sum(amount) as s from transfer_totals where kind in ('stream_tick', 'stream_split') group by 1) x on x.stream_ref = s.ref
           where s.paid <> coalesce(t.s, 0) or s.paid <> coalesce(x.s, 0)`,
  },
  {
    name: 'streams.tick_billed_once',
    description:
      'each tick number of a stream is billed at most once (a distribution: each member at most once per tick), and none again after its month was archived',
    // an archived month was proven before it left (sluice retention audits first); what it carried forward is its last tick
    sql: `select stream_ref, tick, null as member, count(*) as times from transfers where kind = 'stream_tick' group by 1, 2 having count(*) > 1
          union all
          select stream_ref, tick, credit_account_id, count(*) from transfers where kind = 'stream_split' group by 1, 2, 3 having count(*) > 1
          union all
          select k.stream_ref, k.tick, null, 2 from stream_ticks k join stream_ticks_carried c on c.stream_ref = k.stream_ref where k.tick <= c.last_tick`,
  },
  {
    name: 'streams.split_matches_members',
    description: "a distribution's members received, each, the sum of its split transfers, and all together what the stream paid",
    sql: `select m.stream_ref, m.account_id, m.received, coalesce(x.s, 0) as transfers_total
            from stream_members m
            left join (select stream_ref, credit_account_id, sum(amount) as s from transfer_totals where kind = 'stream_split' group by 1, 2) x
              on x.stream_ref = m.stream_ref and x.credit_account_id = m.account_id
           where m.received <> coalesce(x.s, 0)
          union all
          select s.ref, null, s.paid, coalesce(sum(m.received), 0)
            from streams s left join stream_members m on m.stream_ref = s.ref
           where s.kind = 'distribution' group by s.ref, s.paid having s.paid <> coalesce(sum(m.received), 0)`,
  },
  {
    name: 'streams.no_drain_after_close',
    description: 'no stream debit is later than the close of its stream',
    sql: `select t.id as transfer, t.stream_ref, t.tick, t.created_at, s.closed_at
            from transfers t join streams s on s.ref = t.stream_ref
           where t.kind in ('stream_tick', 'stream_split') and s.closed_at is not null and t.created_at > s.closed_at`,
  },
  {
    name: 'streams.no_overbill_on_partition',
    description: 'no tick was billed when a party had been silent for the liveness timeout at the time the tick came due (however late it was billed)',
    // ticks billed before due_at was recorded are judged at their billing time, as they were billed
    sql: `select k.stream_ref, k.tick, k.due_at, k.billed_at, k.payer_seen_at, k.payee_seen_at, s.liveness_timeout_ms
            from stream_ticks k join streams s on s.ref = k.stream_ref
           where s.liveness_timeout_ms is not null
             and coalesce(k.due_at, k.billed_at) - least(k.payer_seen_at, k.payee_seen_at) >= s.liveness_timeout_ms * interval '1 millisecond'`,
  },
  {
    name: 'streams.paid_within_cap',
    description: 'paid never exceeds maxTotal',
    sql: `select ref, paid, max_total from streams where paid > max_total`,
  },
  {
    name: 'operators.within_daily_limit',
    description: "no operator's streams committed more in a day than its limit",
    sql: `select payer, operator, day, spent, daily_limit from operator_spend where spent > daily_limit`,
  },
  {
    name: 'streams.escrow_matches_cap',
    description: "an escrow stream's hold is its maxTotal (top-ups grow both), and it has captured exactly what the stream paid",
    sql: `select s.ref, s.max_total, s.paid, h.amount as held, h.captured
            from streams s join holds h on h.id = s.hold_id
           where s.mode = 'escrow' and (h.amount <> s.max_total or h.captured <> s.paid)`,
  },
  {
    name: 'streams.escrow_settled',
    description: 'a closed escrow stream has no open hold left',
    sql: `select s.ref, s.hold_id, h.status from streams s join holds h on h.id = s.hold_id where s.status <> 'open' and h.status = 'open'`,
  },
  {
    name: 'payments.refunds_within_paid',
    description: 'refunds never exceed the payment, and the refunded total is the sum of the refunds',
    sql: `select p.ref, p.amount, p.refunded, coalesce(r.s, 0) as refunds_total
            from payments p left join (select payment_ref, sum(amount) as s from refunds group by 1) r on r.payment_ref = p.ref
           where p.refunded > p.amount or p.refunded <> coalesce(r.s, 0)`,
  },
  {
    name: 'grants.within_daily_budget',
    description: "no payer's grants of a UTC day used more than that day's budget (as each reservation saw it), counting in reservation order",
    sql: `select job_id, payer, day, used_so_far, budget from (
            select job_id, payer, day, budget,
                   sum(reserved - returned) over (partition by payer, day order by reserved_at, job_id) as used_so_far
              from grants where day is not null and reserved > 0) g
           where used_so_far > budget`,
  },
  {
    name: 'grants.reservation_matches_hold',
    description:
      "a grant's reservation is its pool holds (one per stripe it took from): they sum to it, all on pool stripes, absorbed = captured, returned = released, settled or closed grants leave no open hold",
    sql: `select g.job_id, g.status, g.reserved, g.absorbed, g.returned, h.holds, h.amount, h.captured, h.released, h.open, h.off_pool
            from grants g
            left join (select gh.job_id, count(*) as holds, sum(h.amount) as amount, sum(h.captured) as captured, sum(h.released) as released,
                              count(*) filter (where h.status = 'open') as open, count(*) filter (where a.kind <> 'pool') as off_pool
                         from grant_holds gh join holds h on h.id = gh.hold_id join accounts a on a.id = h.account_id
                        group by gh.job_id) h on h.job_id = g.job_id
           where (g.reserved > 0) <> (h.job_id is not null)
              or (h.job_id is not null and (h.amount <> g.reserved or h.off_pool > 0
                  or (g.status <> 'reserved' and (h.open > 0 or h.captured <> g.absorbed or h.released <> g.returned))))`,
  },
  {
    name: 'grants.money_matches_transfers',
    description:
      "each job's transfers are what its grant says: payment = paid, refunds = refunded, absorbed captured from the pool, credit = 10% of what was kept, all through the grant's own jobs account stripe",
    sql: `select g.job_id, g.jobs_account_id, g.paid, g.refunded, g.absorbed, g.credited, t.payment, t.refund, t.absorb, t.credit, t.elsewhere
            from grants g
            left join (select t.job_id,
                              coalesce(sum(t.amount) filter (where t.kind = 'job_payment'), 0) as payment,
                              coalesce(sum(t.amount) filter (where t.kind = 'job_refund'), 0) as refund,
                              coalesce(sum(t.amount) filter (where t.kind = 'job_absorb'), 0) as absorb,
                              coalesce(sum(t.amount) filter (where t.kind = 'pool_credit'), 0) as credit,
                              count(*) filter (where case when t.kind in ('job_payment', 'job_absorb') then t.credit_account_id
                                                          else t.debit_account_id end <> j.jobs_account_id) as elsewhere
                         from transfer_totals t join grants j on j.job_id = t.job_id group by 1) t on t.job_id = g.job_id
           where g.paid <> coalesce(t.payment, 0) or g.refunded <> coalesce(t.refund, 0) or g.absorbed <> coalesce(t.absorb, 0)
              or g.credited <> coalesce(t.credit, 0) or coalesce(t.elsewhere, 0) > 0
              or (g.status = 'settled' and g.credited <> (g.paid - g.refunded) / 10)`,
  },
  {
    name: 'grants.pool_conservation',
    description:
      'each pool stripe, and so the pool (their sum), holds its deposits plus its credits minus what it absorbed, moved by nothing else; it absorbed no more than it was given',
    sql: `select a.id, a.balance, coalesce(t.deposits, 0) as deposits, coalesce(t.credits, 0) as credits, coalesce(t.absorbed, 0) as absorbed,
                 coalesce(t.other, 0) as other_transfers
            from accounts a
            left join (select account_id,
                              sum(amount) filter (where kind = 'deposit' and credit) as deposits,
                              sum(amount) filter (where kind = 'pool_credit' and credit) as credits,
                              sum(amount) filter (where kind = 'job_absorb' and not credit) as absorbed,
                              count(*) filter (where not ((kind in ('deposit', 'pool_credit') and credit) or (kind = 'job_absorb' and not credit))) as other
                         from (select credit_account_id as account_id, kind, amount, true as credit from transfer_totals
                               union all
                               select debit_account_id, kind, amount, false from transfer_totals) m
                        where account_id in (select id from accounts where kind = 'pool')
                        group by account_id) t on t.account_id = a.id
           where a.kind = 'pool'
             and (a.balance <> coalesce(t.deposits, 0) + coalesce(t.credits, 0) - coalesce(t.absorbed, 0) or coalesce(t.other, 0) > 0)`,
  },
  {
    name: 'sessions.conservation',
    description:
      "each session's balance is what funded it minus what its requests were debited (paid − refunded) minus what its close refunded, never negative, holding nothing; its funding and closing refund are its transfers",
    sql: `select s.session_id, s.status, a.balance, a.held, s.funded, coalesce(g.debited, 0) as debited, s.refunded,
                 coalesce(t.fund, 0) as fund_transfers, coalesce(t.refund, 0) as refund_transfers
            from sessions s
            join accounts a on a.id = s.account_id
            left join (select session_id, sum(paid - refunded) as debited from grants where session_id is not null group by 1) g on g.session_id = s.session_id
            left join (select case when kind = 'session_fund' then credit_account_id else debit_account_id end as account_id,
                              sum(amount) filter (where kind = 'session_fund') as fund,
                              sum(amount) filter (where kind = 'session_refund') as refund
                         from transfer_totals where kind in ('session_fund', 'session_refund') group by 1) t on t.account_id = s.account_id
           where a.balance <> s.funded - coalesce(g.debited, 0) - s.refunded or a.balance < 0 or a.held <> 0
              or coalesce(t.fund, 0) <> s.funded or coalesce(t.refund, 0) <> s.refunded`,
  },
  {
    name: 'sessions.closed_released',
    description: "a closed session has every request resolved, none of its requests' pool reservations open, and nothing left in its balance",
    sql: `select s.session_id, a.balance,
                 count(distinct g.job_id) filter (where g.status in ('awaiting_payment', 'reserved')) as running,
                 count(h.id) filter (where h.status = 'open') as open_holds
            from sessions s
            join accounts a on a.id = s.account_id
            left join grants g on g.session_id = s.session_id
            left join grant_holds gh on gh.job_id = g.job_id
            left join holds h on h.id = gh.hold_id
           where s.status = 'closed'
           group by s.session_id, a.balance
          having a.balance <> 0 or count(distinct g.job_id) filter (where g.status in ('awaiting_payment', 'reserved')) > 0 or count(h.id) filter (where h.status = 'open') > 0`,
  },
  {
    name: 'subaccounts.collateral_held_while_live',
    description: 'a live subaccount (challenge or active) has its collateral hold open on its entity; a failed or eliminated one has none open',
    sql: `select s.id, s.status, h.id as hold, h.status as hold_status, h.account_id, e.main_account_id
            from subaccounts s join entities e on e.id = s.entity_id left join holds h on h.id = s.hold_id
           where (s.status in ('challenge', 'active') and (h.id is null or h.status <> 'open' or h.account_id <> e.main_account_id or h.amount <> e.collateral))
              or (s.status in ('failed', 'eliminated') and h.status = 'open')`,
  },
  {
    name: 'subaccounts.within_cap_and_sequence',
    description:
      "no entity has more live subaccounts than its cap (its own, else SLUICE_SUBACCOUNT_CAP), its numbers are below its next number, and each subaccount's account is owned by its entity",
    // live: the statuses allocation counts against the cap (LIVE_STATUSES)
    sql: `select e.id as entity, null as id, null::int as seq, e.next_seq, null as owner_id, l.live, coalesce(e.subaccount_cap, $1::int) as cap
            from entities e
            join (select entity_id, count(*)::int as live from subaccounts where status = any($2::text[]) group by 1) l on l.entity_id = e.id
           where l.live > coalesce(e.subaccount_cap, $1::int)
          union all
          select s.entity_id, s.id, s.seq, e.next_seq, a.owner_id, null, null
            from subaccounts s join entities e on e.id = s.entity_id left join accounts a on a.id = s.account_id
           where s.seq >= e.next_seq or (a.id is not null and (a.owner_id <> s.entity_id or a.kind <> 'subaccount'))`,
    params: () => [configuredSubaccountCap(), LIVE_STATUSES],
  },
  {
    name: 'subaccounts.ended_empty',
    description: 'a failed or eliminated subaccount holds no money: its funding went back to the entity',
    sql: `select s.id, s.status, a.balance, a.held from subaccounts s join accounts a on a.id = s.account_id
           where s.status in ('failed', 'eliminated') and (a.balance <> 0 or a.held <> 0)`,
  },
];

/** The check that needs Temporal: money held open for a workflow that is not running. */
export const WORKFLOWS_CHECK = 'workflows.running_for_held_money';

/**
 * The name of every check runAudit can report, the one that needs Temporal too. Each
 * has its own corruption in test/integration/audit.test.ts, which must turn it (and
 * only it) red; that test fails if a name here has none.
 */
export const AUDIT_CHECK_NAMES: readonly string[] = [...CHECKS.map((c) => c.name), WORKFLOWS_CHECK];

/** The Temporal the workflows run on: with it, the audit also checks that every money held open has a running workflow. */
export interface AuditTemporal {
  client: Client;
  taskQueue: string;
}

export async function runAudit(db: Queryable, temporal?: AuditTemporal | { unreachable: string }): Promise<AuditReport> {
  const checks: AuditCheck[] = [];
  for (const check of CHECKS) {
    const params = check.params?.() ?? [];
    const { rows } = await db.query(`select * from (${check.sql}) v limit ${ROWS_MAX + 1}`, params);
    const { rows: count } = await db.query<{ n: number }>(`select count(*)::int as n from (${check.sql}) v`, params);
    const violations = count[0]!.n;
    checks.push({ name: check.name, description: check.description, ok: violations === 0, violations, rows: rows.slice(0, ROWS_MAX) });
  }
  if (temporal) checks.push(await workflowsCheck(db, temporal));
  return { ok: checks.every((c) => c.ok), checkedAt: new Date().toISOString(), checks };
}

/**
 * Money the ledger holds open (an open stream, an unsettled job, a subaccount being
 * created or eliminated) whose workflow is not running: nothing will settle it but
 * the reconciler. An item seen stranded is read again after Temporal answered, so
 * one whose workflow settled it in between is not counted. Temporal unreachable
 * fails the check: it could not be made.
 */
async function workflowsCheck(db: Queryable, temporal: AuditTemporal | { unreachable: string }): Promise<AuditCheck> {
  const description = 'everything the ledger holds open for a workflow (open streams, unsettled jobs, subaccounts being created or eliminated) has that workflow running';
  try {
    if ('unreachable' in temporal) throw new Error(temporal.unreachable);
    const { stranded } = await strandedItems({ pool: db, temporal: temporal.client, taskQueue: temporal.taskQueue });
    const still = (await heldOpen(db)).map((h) => h.workflowId);
    const rows = stranded.filter((s) => still.includes(s.workflowId)).map((s) => ({ kind: s.kind, id: s.id, workflow_id: s.workflowId, workflow_status: s.workflowStatus ?? 'not found' }));
    return { name: WORKFLOWS_CHECK, description, ok: rows.length === 0, violations: rows.length, rows: rows.slice(0, ROWS_MAX) };
  } catch (error) {
    return { name: WORKFLOWS_CHECK, description, ok: false, violations: 1, rows: [{ error: `Temporal could not be asked: ${error instanceof Error ? error.message : String(error)}` }] };
  }
}

export function formatAudit(report: AuditReport): string {
  const lines = report.checks.map((c) => `${c.ok ? 'ok  ' : 'FAIL'} ${c.name.padEnd(40)} ${c.ok ? '' : `${c.violations} violation(s)`}`);
  for (const c of report.checks.filter((x) => !x.ok)) {
    lines.push(`\n${c.name}: ${c.description}`);
    for (const r of c.rows) lines.push(`  ${JSON.stringify(r)}`);
  }
  lines.push(`\naudit: ${report.ok ? 'PASS' : 'FAIL'} (${report.checks.length} checks)`);
  return lines.join('\n');
}
