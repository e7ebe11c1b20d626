import client from 'prom-client';
import type { Queryable } from '../db/pool';
import { registerLedgerMetrics } from './ledgerMetrics';

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
  // the business metrics, read from the database at scrape time (ledgerMetrics.ts says why)
  if (db) registerLedgerMetrics(registry, db);
  return { registry, httpRequests, httpDuration };
}

export type Metrics = ReturnType<typeof createMetrics>;
