import client from 'prom-client';
import type { Queryable } from '../db/pool';
import { POOL_ACCOUNT } from '../ledger/pool';

/** One registry per app instance (tests build many apps in one process). */
export function createMetrics(db?: Queryable) {
  const registry = new client.Registry();
  client.collectDefaultMetrics({ register: registry, prefix: 'sluice_' });
  const httpRequests = new client.Counter({
    name: 'sluice_http_requests_total',
    help: 'HTTP requests by route and status',
    labelNames: ['method', 'route', 'status'] as const,
    registers: [registry],
  });
  const httpDuration = new client.Histogram({
    name: 'sluice_http_request_duration_seconds',
    help: 'HTTP request duration by route',
    labelNames: ['method', 'route'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [registry],
  });
  if (db) {
    // read at scrape time: the pool moves in the worker's transactions, not in this process
    new client.Gauge({
      name: 'sluice_pool_units',
      help: 'The free-tier pool account: balance, held (open reservations) and available, in minor units',
      labelNames: ['state'] as const,
      registers: [registry],
      async collect() {
        const { rows } = await db.query<{ balance: number; held: number }>('select balance, held from accounts where id = $1', [POOL_ACCOUNT]);
        if (!rows[0]) return; // not migrated yet
        const { balance, held } = rows[0];
        this.set({ state: 'balance' }, balance);
        this.set({ state: 'held' }, held);
        this.set({ state: 'available' }, balance - held);
      },
    });
  }
  return { registry, httpRequests, httpDuration };
}

export type Metrics = ReturnType<typeof createMetrics>;
