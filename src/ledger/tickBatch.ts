import type { PoolClient } from '../db/pool';
import { dueTicks, planBilling, type BillingPlan, type DueStream, type DueTick, type HaltReason, type SeenAt } from '../domain/billing';
import { effectiveGraceMs, tickKey } from '../domain/streams';
import type { StreamRow } from './streams/rows';
import { awaitHeartbeatsInFlight, livenessSince, silentParties } from './streams/heartbeats';

/** A direct stream row locked for billing, with its opening in epoch milliseconds (the schedule's origin). */
export type LockedStream = StreamRow & { opened_ms: string };

export interface BatchResult {
  billed: number;
  skipped: number;
  halted: { ref: string; reason: HaltReason }[];
}

/**
 * Bills every tick of the given direct streams due by `asOfMs`, at most `rowsMax`
 * ticks, inside the caller's transaction. The caller holds the streams' row locks;
 * this locks their accounts (lowest id first, as every transfer does), reads what
 * the plan decides on, lets src/domain/billing.ts decide each tick in due order,
 * and writes the whole plan in one statement: the transfers (whose statement-level
 * trigger moves each account once), the tick rows, the skips, the events and the
 * streams' totals. A tick is keyed by the tick (`stream:<ref>:tick:<n>`, a check of
 * the database), and the database claims each key once (transfer_claims, migration
 * 031), so nothing is ever billed twice.
 */
export async function billDueIn(client: PoolClient, locked: LockedStream[], asOfMs: number, rowsMax: number): Promise<BatchResult> {
  if (locked.length === 0) return { billed: 0, skipped: 0, halted: [] };
  const accountIds = [...new Set(locked.flatMap((s) => [s.payer_account_id, s.payee_account_id!]))].sort();
  const { rows: accounts } = await client.query<{ id: string; available: string; ended: boolean }>({
    name: 'tick-batch-lock-accounts',
    text: `select a.id, a.balance - a.held as available,
                  exists (select 1 from subaccounts x where x.account_id = a.id and x.status in ('failed', 'eliminated')) as ended
             from accounts a where a.id = any($1) order by a.id for no key update of a`,
    values: [accountIds],
  });
  const ended = new Set(accounts.filter((a) => a.ended).map((a) => a.id));
  const streams: DueStream[] = locked.map((s) => ({
    ref: s.ref,
    mode: s.mode,
    payerAccountId: s.payer_account_id,
    payeeAccountId: s.payee_account_id!,
    ratePerTick: Number(s.rate_per_tick),
    maxTotal: s.max_total === null ? null : Number(s.max_total),
    paid: Number(s.paid),
    ticksBilled: s.ticks_billed,
    lastTick: s.last_tick,
    openedAtMs: Number(s.opened_ms),
    tickIntervalMs: s.tick_interval_ms,
    pausedMs: Number(s.paused_ms),
    livenessTimeoutMs: s.liveness_timeout_ms,
    // a stream opened without a grace period gets the default one (three liveness timeouts)
    graceMs: effectiveGraceMs({ livenessTimeoutMs: s.liveness_timeout_ms ?? undefined, graceMs: s.grace_ms ?? undefined }) ?? null,
    lowBalanceTicks: s.low_balance_ticks,
    lowBalanceWarned: s.low_balance_at !== null,
    refused: ended.has(s.payer_account_id) || ended.has(s.payee_account_id!),
  }));
  const due = dueTicks(streams, asOfMs, rowsMax);
  const seenAt = await heartbeatsAtDueTimes(client, locked, streams, due);
  const plan = planBilling({ streams, due, available: new Map(accounts.map((a) => [a.id, Number(a.available)])), seenAt });
  await writePlan(client, plan);
  return {
    billed: plan.ticks.length,
    skipped: plan.skips.length,
    halted: plan.streams.filter((o) => o.halted).map((o) => ({ ref: o.ref, reason: o.halted! })),
  };
}

/**
 * When each party of a liveness-checked stream was last seen at each due tick: its
 * latest heartbeat at or before the due time (party_heartbeat_log), or the stream's
 * opening or latest resume, whichever is later. One round trip for the whole batch;
 * two more when a tick would be skipped (the wait for heartbeats in flight, a second read).
 */
async function heartbeatsAtDueTimes(client: PoolClient, locked: LockedStream[], streams: DueStream[], dueAll: DueTick[]): Promise<SeenAt> {
  const watched = new Set(streams.filter((s) => s.livenessTimeoutMs !== null).map((s) => s.ref));
  const seen = new Map<string, { payerMs: number; payeeMs: number }>();
  const keyOf = (ref: string, tick: number) => `${ref}\u0000${tick}`;
  if (watched.size === 0) return () => ({ payerMs: 0, payeeMs: 0 });
  const rowOf = new Map(locked.map((s) => [s.ref, s]));
  const due = dueAll.filter((d) => watched.has(d.ref));
  const read = () => client.query<{ ref: string; tick: number; payer_ms: string; payee_ms: string }>({
    name: 'tick-batch-heartbeats',
    text: `select d.ref, d.tick,
                  epoch_ms(greatest(d.since, (select max(h.seen_at) from party_heartbeat_log h where h.party_id = d.payer and h.seen_at <= d.due_at))) as payer_ms,
                  epoch_ms(greatest(d.since, (select max(h.seen_at) from party_heartbeat_log h where h.party_id = d.payee and h.seen_at <= d.due_at))) as payee_ms
             from (select ref, tick, payer, payee, since, to_timestamp(due_ms / 1000.0) as due_at
                     from unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::timestamptz[], $6::bigint[]) as u(ref, tick, payer, payee, since, due_ms)) d`,
    values: [
      due.map((d) => d.ref),
      due.map((d) => d.tick),
      due.map((d) => rowOf.get(d.ref)!.payer),
      due.map((d) => rowOf.get(d.ref)!.payee),
      due.map((d) => livenessSince(rowOf.get(d.ref)!)),
      due.map((d) => d.dueAtMs),
    ],
  });
  const remember = (rows: { ref: string; tick: number; payer_ms: string; payee_ms: string }[]) => {
    for (const r of rows) seen.set(keyOf(r.ref, r.tick), { payerMs: Number(r.payer_ms), payeeMs: Number(r.payee_ms) });
  };
  remember((await read()).rows);
  // ticks about to be skipped: wait for their parties' heartbeats still committing, then read again
  const silent = due.flatMap((d) => {
    const at = seen.get(keyOf(d.ref, d.tick))!;
    return silentParties(rowOf.get(d.ref)!, d.dueAtMs, at.payerMs, at.payeeMs);
  });
  if (silent.length > 0) {
    await awaitHeartbeatsInFlight(client, silent);
    remember((await read()).rows);
  }
  return (ref, tick) => seen.get(keyOf(ref, tick))!;
}

const msToTimestamp = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

/** The plan in one statement: a round trip for any number of ticks. */
async function writePlan(client: PoolClient, plan: BillingPlan): Promise<void> {
  if (plan.ticks.length === 0 && plan.skips.length === 0 && !plan.streams.some((o) => o.halted)) return;
  const moved = plan.streams;
  const t = plan.ticks;
  await client.query({
    name: 'tick-batch-write',
    text: `/* sluice:tick-batch */ with p as (
             select p.*, s.mode, s.hold_id, s.payer, s.payee, s.payer_account_id, s.payee_account_id,
                    da.owner_id as debit_owner, ca.owner_id as credit_owner
               from unnest($1::text[], $2::int[], $3::bigint[], $4::bigint[], $5::timestamptz[], $6::timestamptz[], $7::timestamptz[], $8::text[])
                      as p(ref, tick, amount, paid, due_at, payer_seen_at, payee_seen_at, key)
               join streams s on s.ref = p.ref
               join accounts da on da.id = s.payer_account_id
               join accounts ca on ca.id = s.payee_account_id),
           t as (
             insert into transfers (idempotency_key, kind, debit_account_id, credit_account_id, amount, hold_id, stream_ref, tick)
             select key, 'stream_tick', payer_account_id, payee_account_id, amount, case when mode = 'escrow' then hold_id end, ref, tick from p
             returning id, stream_ref, tick, created_at),
           pt as (select p.*, t.id as transfer_id, t.created_at from p join t on t.stream_ref = p.ref and t.tick = p.tick),
           k as (
             insert into stream_ticks (stream_ref, tick, amount, transfer_id, payer_seen_at, payee_seen_at, due_at, billed_at)
             select ref, tick, amount, transfer_id, payer_seen_at, payee_seen_at, due_at, created_at from pt),
           skipped as (
             insert into stream_skips (stream_ref, tick, reason, silent_ms)
             select ref, tick, 'partition', silent_ms from unnest($9::text[], $10::int[], $11::bigint[]) as k(ref, tick, silent_ms)
             on conflict do nothing),
           o as (select * from unnest($12::text[], $13::int[], $14::bigint[], $15::int[], $16::text[], $17::jsonb[], $18::int[])
                      as o(ref, billed, amount, last_tick, halted, low_balance, low_balance_tick)),
           u as (
             update streams s
                set paid = s.paid + o.amount, ticks_billed = s.ticks_billed + o.billed, last_tick = greatest(s.last_tick, o.last_tick),
                    last_billed_at = case when o.billed > 0 then now() else s.last_billed_at end,
                    halted_reason = coalesce(o.halted, s.halted_reason),
                    low_balance_at = case when o.low_balance is not null then now() else s.low_balance_at end
               from o where s.ref = o.ref)
           -- the events in the order billing each tick alone would append them: per tick its
           -- transfer.posted, its stream.tick, then a stream.low_balance it set off
           insert into events (type, subject, payload, parties)
           select type, subject, payload, parties from (
             select due_at, ref, tick, 0 as k, 'transfer.posted' as type, transfer_id::text as subject,
                    jsonb_strip_nulls(jsonb_build_object('key', key, 'kind', 'stream_tick', 'debitAccountId', payer_account_id,
                      'creditAccountId', payee_account_id, 'amount', amount, 'holdId', case when mode = 'escrow' then hold_id end,
                      'streamRef', ref, 'tick', tick, 'id', transfer_id,
                      'createdAt', to_char(created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))) as payload,
                    array(select distinct x from unnest(array[debit_owner, credit_owner]) x) as parties
               from pt
             union all
             select due_at, ref, tick, 1, 'stream.tick', ref, jsonb_build_object('ref', ref, 'tick', tick, 'amount', amount, 'paid', paid, 'transfer', transfer_id),
                    array(select distinct x from unnest(array[payer, payee]) x)
               from pt
             union all
             select pt.due_at, o.ref, o.low_balance_tick, 2, 'stream.low_balance', o.ref, o.low_balance || jsonb_build_object('ref', o.ref),
                    array(select distinct x from unnest(array[pt.payer, pt.payee]) x)
               from o join pt on pt.ref = o.ref and pt.tick = o.low_balance_tick
              where o.low_balance is not null) e
            order by due_at, ref, tick, k`,
    values: [
      t.map((x) => x.ref),
      t.map((x) => x.tick),
      t.map((x) => x.amount),
      t.map((x) => x.paid),
      t.map((x) => msToTimestamp(x.dueAtMs)),
      t.map((x) => msToTimestamp(x.payerSeenMs)),
      t.map((x) => msToTimestamp(x.payeeSeenMs)),
      t.map((x) => tickKey(x.ref, x.tick)),
      plan.skips.map((x) => x.ref),
      plan.skips.map((x) => x.tick),
      plan.skips.map((x) => x.silentMs),
      moved.map((o) => o.ref),
      moved.map((o) => o.billed),
      moved.map((o) => o.amount),
      moved.map((o) => o.lastTick),
      moved.map((o) => o.halted ?? null),
      moved.map((o) => (o.lowBalance ? JSON.stringify(o.lowBalance.payload) : null)),
      moved.map((o) => o.lowBalance?.atTick ?? null),
    ],
  });
}
