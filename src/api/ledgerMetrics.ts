import client from 'prom-client';
import { poolTotals } from '../ledger/pool';
import { readCounters, type CounterMetric } from '../ledger/metricCounters';
import type { Queryable } from '../db/pool';

/**
 * The business metrics, read from the database when Prometheus scrapes the API.
 *
 * Why here and not counters in the worker: ticks, compensations, webhook attempts
 * and grant decisions happen in the worker's activities, but the database is their
 * truth. Every one of them is an append-only row committed in the same transaction
 * as the money it describes, so counting rows is exact: an activity retried after
 * its commit (a lost reply) or a worker that crashed after committing counts once,
 * a restarted worker does not reset anything, and any number of workers on one task
 * queue need no aggregation. One endpoint (the API's /metrics) serves them all; the
 * worker has no port to scrape. The cost is a few aggregate queries per scrape,
 * measured in the notes; each reads an indexed or bounded set except the tick
 * table, which is scanned once for the tick count and lag histogram.
 *
 * Counters read this way are still counters: the rows they count are never deleted,
 * so each value only grows, and `rate()`/`increase()` work as usual.
 */

/** Tick lag buckets (seconds): a tick is due on the stream's schedule and billed when its timer fires. */
export const TICK_LAG_BUCKETS_SECONDS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];

/** The names this module exposes (the dashboard test checks every panel's metric against them). */
export const LEDGER_METRIC_NAMES = [
  'sluice_pool_units',
  'sluice_ticks_billed_total',
  'sluice_tick_lag_seconds',
  'sluice_open_streams',
  'sluice_saga_compensations_total',
  'sluice_webhook_delivery_attempts_total',
  'sluice_webhook_delivery_failures_total',
  'sluice_grant_decisions_total',
  'sluice_subaccount_creations_total',
  'sluice_subaccount_eliminations_total',
  'sluice_webhook_deliveries_total',
] as const;

const SAGA_COMPENSATIONS = ['release_collateral', 'unfund', 'mark_failed'] as const;

export function registerLedgerMetrics(registry: client.Registry, db: Queryable): void {
  const registers = [registry];
  new client.Gauge({
    name: 'sluice_pool_units',
    help: 'The free-tier pool (the sum of its stripe accounts): balance, held (open reservations) and available, in minor units',
    labelNames: ['state'] as const,
    registers,
    async collect() {
      const pool = await poolTotals(db);
      if (!pool.stripes) return; // not migrated yet
      this.set({ state: 'balance' }, pool.balance);
      this.set({ state: 'held' }, pool.held);
      this.set({ state: 'available' }, pool.available);
    },
  });

  new client.Counter({
    name: 'sluice_ticks_billed_total',
    help: 'Stream ticks billed (one stream_ticks row each, committed with its money)',
    registers,
    async collect() {
      const { rows } = await db.query<{ n: number }>('select count(*)::bigint as n from stream_ticks');
      setCounter(this, {}, rows[0]!.n);
    },
  });

  registry.registerMetric(tickLagHistogram(db) as never);

  new client.Gauge({
    name: 'sluice_open_streams',
    help: 'Streams open now, by funding mode and kind',
    labelNames: ['mode', 'kind'] as const,
    registers,
    async collect() {
      const { rows } = await db.query<{ mode: string; kind: string; n: number }>(
        `select m.mode, k.kind, count(s.ref)::bigint as n
           from (values ('escrow'), ('payg')) m(mode) cross join (values ('direct'), ('distribution')) k(kind)
           left join streams s on s.status = 'open' and s.mode = m.mode and s.kind = k.kind
          group by 1, 2`,
      );
      this.reset();
      for (const r of rows) this.set({ mode: r.mode, kind: r.kind }, r.n);
    },
  });

  new client.Counter({
    name: 'sluice_saga_compensations_total',
    help: 'Compensations the subaccount creation saga ran, by compensation and by the step that failed',
    labelNames: ['compensation', 'failed_step'] as const,
    registers,
    async collect() {
      // a failed slot's compensations each leave their mark: its collateral hold
      // released, its unfund transfer (keyed, domain/entities.ts unfundKey), its status
      const { rows } = await db.query<{ failed_step: string; release_collateral: number; unfund: number; mark_failed: number }>(
        `select coalesce(s.failed_step, 'unknown') as failed_step,
                count(*) filter (where h.status = 'released')::bigint as release_collateral,
                count(t.id)::bigint as unfund,
                count(*)::bigint as mark_failed
           from subaccounts s
           left join holds h on h.id = s.hold_id
           left join transfers t on t.idempotency_key = 'sub:' || s.id || ':unfund'
          where s.status = 'failed'
          group by 1`,
      );
      this.reset();
      for (const r of rows) for (const c of SAGA_COMPENSATIONS) this.inc({ compensation: c, failed_step: r.failed_step }, r[c]);
    },
  });

  // both webhook counters come from one query per scrape: the registry collects its
  // metrics concurrently, so the second caller joins the first's query in flight
  let deliveriesInFlight: Promise<{ attempts: number; failures: number }> | undefined;
  const deliveries = () =>
    (deliveriesInFlight ??= db
      .query<{ attempts: number; failures: number }>('select count(*)::bigint as attempts, count(*) filter (where not ok)::bigint as failures from webhook_deliveries')
      .then(({ rows }) => rows[0]!)
      .finally(() => {
        deliveriesInFlight = undefined;
      }));
  new client.Counter({
    name: 'sluice_webhook_delivery_attempts_total',
    help: 'Webhook delivery attempts (every attempt is logged in webhook_deliveries)',
    registers,
    async collect() {
      setCounter(this, {}, (await deliveries()).attempts);
    },
  });
  new client.Counter({
    name: 'sluice_webhook_delivery_failures_total',
    help: 'Webhook delivery attempts that failed (no answer, or not a 2xx); Temporal retried each with backoff',
    registers,
    async collect() {
      setCounter(this, {}, (await deliveries()).failures);
    },
  });

  // the counters kept in the ledger (metric_counters, migration 025): one small read per
  // scrape for all three, a few rows whatever the volume, joined like the webhook pair
  let countersInFlight: ReturnType<typeof readCounters> | undefined;
  const counters = () =>
    (countersInFlight ??= readCounters(db).finally(() => {
      countersInFlight = undefined;
    }));
  const ledgerCounter = (name: string, help: string, metric: CounterMetric, labelNames: readonly string[]) =>
    new client.Counter({
      name,
      help,
      labelNames,
      registers,
      async collect() {
        const rows = (await counters()).filter((r) => r.metric === metric);
        this.reset();
        for (const r of rows) this.inc(Object.fromEntries(labelNames.map((l) => [l, r.labels[l] ?? ''])), r.value);
      },
    });
  ledgerCounter('sluice_subaccount_creations_total', 'Subaccount creations concluded, by outcome (active, challenge, failed)', 'subaccount_creations', ['outcome']);
  ledgerCounter(
    'sluice_subaccount_eliminations_total',
    'Subaccounts eliminated, by reason (rule, request) and the rule that fired (min_balance, max_drawdown, inactivity; none by request)',
    'subaccount_eliminations',
    ['reason', 'rule'],
  );
  ledgerCounter('sluice_webhook_deliveries_total', 'Webhook delivery attempts, by outcome (delivered, failed)', 'webhook_deliveries', ['outcome']);

  new client.Counter({
    name: 'sluice_grant_decisions_total',
    help: 'Grant jobs decided, by mode (free, partial, gate)',
    labelNames: ['mode'] as const,
    registers,
    async collect() {
      const { rows } = await db.query<{ mode: string; n: number }>(
        `select m.mode, count(g.job_id)::bigint as n from (values ('free'), ('partial'), ('gate')) m(mode) left join grants g on g.decision = m.mode group by 1`,
      );
      this.reset();
      for (const r of rows) this.inc({ mode: r.mode }, r.n);
    },
  });
}

function setCounter<T extends string>(counter: client.Counter<T>, labels: Partial<Record<T, string>>, value: number): void {
  counter.reset();
  counter.inc(labels, value);
}

/**
 * `sluice_tick_lag_seconds`: seconds between a tick's due time and its billing, as a
 * Prometheus histogram computed from the tick rows (prom-client's Histogram only
 * observes in-process, so this is a registry metric of its own). A small negative lag
 * (the worker's clock a little ahead of the database's) counts as 0; ticks billed
 * before due_at existed are left out.
 */
function tickLagHistogram(db: Queryable) {
  const name = 'sluice_tick_lag_seconds';
  return {
    name,
    help: "Seconds between a stream tick's due time and its billing",
    type: 'histogram',
    aggregator: 'sum',
    reset() {},
    async get() {
      const filters = TICK_LAG_BUCKETS_SECONDS.map((_, i) => `count(*) filter (where lag <= $${i + 1})::bigint as b${i}`).join(', ');
      const { rows } = await db.query<Record<string, number>>(
        `select ${filters}, count(*)::bigint as n, coalesce(sum(lag), 0)::float8 as total
           from (select greatest(0, extract(epoch from billed_at - due_at))::float8 as lag from stream_ticks where due_at is not null) l`,
        TICK_LAG_BUCKETS_SECONDS,
      );
      const r = rows[0]!;
      return {
        name,
        help: this.help,
        type: this.type,
        aggregator: this.aggregator,
        values: [
          ...TICK_LAG_BUCKETS_SECONDS.map((le, i) => ({ metricName: `${name}_bucket`, labels: { le }, value: r[`b${i}`]! })),
          { metricName: `${name}_bucket`, labels: { le: '+Inf' }, value: r.n! },
          { metricName: `${name}_sum`, labels: {}, value: r.total! },
          { metricName: `${name}_count`, labels: {}, value: r.n! },
        ],
      };
    },
  };
}
