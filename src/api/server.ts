import { adminKeyRefusal, databaseUrl, metricsTokenRefusal, type Config } from '../config';
import { createPool } from '../db/pool';
import { runtimeRoleRefusal } from '../db/roles';
import { createLogger } from '../logger';
import { connectClient } from '../temporal/connection';
import { buildApp } from './app';

/** Runs the HTTP API until SIGINT/SIGTERM, then closes it, the Temporal client and the pool. */
export async function runApi(config: Config): Promise<void> {
  // before anything is opened: the process exits 1 with this message (src/cli.ts)
  const refusal =
    adminKeyRefusal({ adminKey: config.SLUICE_ADMIN_KEY, apiHost: config.SLUICE_API_HOST, devMode: config.SLUICE_DEV_MODE }) ??
    metricsTokenRefusal({ metricsToken: config.SLUICE_METRICS_TOKEN, apiHost: config.SLUICE_API_HOST, devMode: config.SLUICE_DEV_MODE });
  if (refusal) throw new Error(refusal);
  const logger = createLogger(config.LOG_LEVEL, 'sluice-api');
  const pool = createPool(databaseUrl(config));
  const roleRefusal = await runtimeRoleRefusal(pool, config.SLUICE_DEV_MODE);
  if (roleRefusal) {
    await pool.end();
    throw new Error(roleRefusal);
  }
  const temporal = await connectClient(config.TEMPORAL_ADDRESS, config.TEMPORAL_NAMESPACE);
  const app = await buildApp({
    pool,
    temporal,
    taskQueue: config.SLUICE_TASK_QUEUE,
    adminKey: config.SLUICE_ADMIN_KEY,
    metricsToken: config.SLUICE_METRICS_TOKEN,
    bodyLimitBytes: config.SLUICE_BODY_LIMIT_BYTES,
    logger,
    budgets: config.SLUICE_TIER_BUDGETS,
    jobPaymentTimeoutMs: config.SLUICE_JOB_PAYMENT_TIMEOUT_MS,
    pricePerUnit: config.SLUICE_PRICE_PER_UNIT,
    streamQuotas: config.SLUICE_TIER_STREAM_QUOTAS,
    writeRate: { max: config.SLUICE_WRITE_RATE_MAX, windowMs: config.SLUICE_WRITE_RATE_WINDOW_MS },
    readRate: { max: config.SLUICE_READ_RATE_MAX, windowMs: config.SLUICE_READ_RATE_WINDOW_MS },
    trustProxy: config.SLUICE_TRUST_PROXY,
    subaccountLimits: { cap: config.SLUICE_SUBACCOUNT_CAP, perHour: config.SLUICE_SUBACCOUNT_CREATIONS_PER_HOUR },
    temporalUiUrl: config.SLUICE_TEMPORAL_UI_URL ?? `http://127.0.0.1:${config.TEMPORAL_UI_PORT}`,
    namespace: config.TEMPORAL_NAMESPACE,
    billingShards: config.SLUICE_BILLING_SHARDS,
    waitMs: config.SLUICE_API_WAIT_MS,
    requestTimeoutMs: config.SLUICE_REQUEST_TIMEOUT_MS,
    keepAliveTimeoutMs: config.SLUICE_KEEP_ALIVE_TIMEOUT_MS,
  });
  await app.listen({ host: config.SLUICE_API_HOST, port: config.SLUICE_API_PORT });
  await new Promise<void>((resolve) => {
    for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => resolve());
    // started by the launcher: leave with it, never outlive it as an orphan
    process.once('disconnect', () => resolve());
  });
  await app.close();
  await temporal.connection.close();
  await pool.end();
}
