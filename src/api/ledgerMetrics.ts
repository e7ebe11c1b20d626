import client from 'prom-client';
import { poolTotals } from '../ledger/pool';
import { readCounters, type CounterMetric, type CounterValue } from '../ledger/metricCounters';
import type { Queryable } from '../db/pool';

/**
 * The business metrics, read from the database when Prometheus scrapes the API.
 *
 * Why here and not counters in the worker: ticks, compensations, webhook attempts
 * and grant decisions happen in the worker's activities, but the database is their
 * truth. Each is counted in the same transaction as the row it counts
 * (src/ledger/metricCounters.ts; triggers of migration 029 for ticks, streams, grants
 * and failed subaccounts), so the counts are exact: an activity retried after its
 * commit (a lost reply) or a worker that crashed after committing counts once, a
 * restarted worker does not reset anything, and any number of workers on one task
 * queue need no aggregation. One endpoint (the API's /metrics) serves them all; the
 * worker has no port to scrape.
 *
 * A scrape costs O(1) in the size of the ledger: two small reads, the counters (a few
 * rows per metric and label set, plus the deltas since the last fold) and the pool's
 * stripe accounts (by a partial index); never a scan of the tables the figures count.
 * test/integration/metricsCost.test.ts proves it on grown tables.
 *
 * The counters only grow, so `rate()`/`increase()` work as usual; the open-streams
 * gauge is the difference of two of them (streams that entered and left `open`).
 */

/** Tick lag buckets (seconds): a tick is due on the stream's schedule and billed when its timer fires. The ledger's tick_lag_bounds() (migration 029) has the same bounds; metricsCost.test.ts checks. */
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
const STREAM_MODES = ['escrow', 'payg'] as const;
const STREAM_KINDS = ['direct', 'distribution'] as const;

export function registerLedgerMetrics(registry: client.Registry, db: Queryable): void {
  const registers = [registry];
  // One read of the counters per scrape: the registry collects its metrics
  // concurrently, so every collector after the first joins the read in flight.
  let countersInFlight: Promise<CounterValue[]> | undefined;
  const counters = () =>
    (countersInFlight ??= readCounters(db).finally(() => {
      countersInFlight = undefined;
    }));
  /** A counter's value by labels, those named in `labels` (a missing one is 0). */
  const counted = async (metric: CounterMetric) => (await counters()).filter((r) => r.metric === metric);
  const sumOf = (rows: CounterValue[], labels: Record<string, string> = {}) =>
    rows.filter((r) => Object.entries(labels).every(([k, v]) => r.labels[k] === v)).reduce((n, r) => n + r.value, 0);

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
    help: 'Stream ticks billed (one stream_ticks row each, counted in the transaction that bills it)',
    registers,
    async collect() {
      setCounter(this, {}, sumOf(await counted('ticks_billed')));
    },
  });

  registry.registerMetric(tickLagHistogram(async () => ({ buckets: await counted('tick_lag_bucket'), micros: sumOf(await counted('tick_lag_micros')) })) as never);

  new client.Gauge({
    name: 'sluice_open_streams',
    help: 'Streams open now, by funding mode and kind',
    labelNames: ['mode', 'kind'] as const,
    registers,
    async collect() {
      const [opened, closed] = [await counted('streams_opened'), await counted('streams_closed')];
      this.reset();
      for (const mode of STREAM_MODES) {
        for (const kind of STREAM_KINDS) this.set({ mode, kind }, sumOf(opened, { mode, kind }) - sumOf(closed, { mode, kind }));
      }
    },
  });

  new client.Counter({
    name: 'sluice_saga_compensations_total',
    help: 'Compensations the subaccount creation saga ran, by compensation and by the step that failed',
    labelNames: ['compensation', 'failed_step'] as const,
    registers,
    async collect() {
      const rows = await counted('saga_compensations');
      this.reset();
      // every compensation of a step that failed, at 0 when it had nothing to undo
      for (const failedStep of new Set(rows.map((r) => r.labels.failed_step ?? 'unknown'))) {
        for (const c of SAGA_COMPENSATIONS) this.inc({ compensation: c, failed_step: failedStep }, sumOf(rows, { compensation: c, failed_step: failedStep }));
      }
    },
  });

  // the webhook log's counter (bumped with each logged attempt) read two ways
  new client.Counter({
    name: 'sluice_webhook_delivery_attempts_total',
    help: 'Webhook delivery attempts (every attempt is logged in webhook_deliveries)',
    registers,
    async collect() {
      setCounter(this, {}, sumOf(await counted('webhook_deliveries')));
    },
  });
  new client.Counter({
    name: 'sluice_webhook_delivery_failures_total',
    help: 'Webhook delivery attempts that failed (no answer, or not a 2xx); Temporal retried each with backoff',
    registers,
    async collect() {
      setCounter(this, {}, sumOf(await counted('webhook_deliveries'), { outcome: 'failed' }));
    },
  });

  const ledgerCounter = (name: string, help: string, metric: CounterMetric, labelNames: readonly string[]) =>
    new client.Counter({
      name,
      help,
      labelNames,
      registers,
      async collect() {
        const rows = await counted(metric);
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
  ledgerCounter('sluice_grant_decisions_total', 'Grant jobs decided, by mode (free, partial, gate)', 'grant_decisions', ['mode']);
}

function setCounter<T extends string>(counter: client.Counter<T>, labels: Partial<Record<T, string>>, value: number): void {
  counter.reset();
  counter.inc(labels, value);
}

/**
 * `sluice_tick_lag_seconds`: seconds between a tick's due time and its billing, as a
 * Prometheus histogram from the ledger's counters (prom-client's Histogram only
 * observes in-process, so this is a registry metric of its own). The ledger counts each
 * tick in one bucket, the first bound at or above its lag (migration 029); the
 * cumulative buckets are summed here. A small negative lag (the worker's clock a little
 * ahead of the database's) counts as 0; ticks billed before due_at existed are left out.
 */
function tickLagHistogram(read: () => Promise<{ buckets: CounterValue[]; micros: number }>) {
  const name = 'sluice_tick_lag_seconds';
  return {
    name,
    help: "Seconds between a stream tick's due time and its billing",
    type: 'histogram',
    aggregator: 'sum',
    reset() {},
    async get() {
      const { buckets, micros } = await read();
      const inBucket = (le: string) => buckets.filter((b) => b.labels.le === le).reduce((n, b) => n + b.value, 0);
      let cumulative = 0;
      const values = TICK_LAG_BUCKETS_SECONDS.map((le) => ({ metricName: `${name}_bucket`, labels: { le }, value: (cumulative += inBucket(String(le))) }));
      const count = cumulative + inBucket('+Inf');
      return {
        name,
        help: this.help,
        type: this.type,
        aggregator: this.aggregator,
        values: [
          ...values,
          { metricName: `${name}_bucket`, labels: { le: '+Inf' }, value: count },
          { metricName: `${name}_sum`, labels: {}, value: micros / 1e6 },
          { metricName: `${name}_count`, labels: {}, value: count },
        ],
      };
    },
  };
}
