import { z } from 'zod';
import { parseTierBudgets, POOL_SEED_UNITS_DEFAULT, POOL_STRIPES_DEFAULT, PRICE_PER_UNIT_DEFAULT } from './domain/grants';
import { CREATIONS_PER_HOUR_DEFAULT, SUBACCOUNT_CAP_DEFAULT } from './domain/entities';
import { parseFaults } from './domain/faults';
import { parseTierStreamQuotas } from './domain/streamQuotas';
import { BILLING_ROWS_MAX_DEFAULT, BILLING_SHARDS_DEFAULT } from './domain/billing';
import { API_WAIT_MS_DEFAULT, BODY_LIMIT_BYTES_DEFAULT, LOCAL_DATABASE_URL, READ_RATE_MAX_DEFAULT, READ_RATE_WINDOW_MS_DEFAULT, READONLY_ROLE_DEFAULT, RECONCILE_INTERVAL_MS_DEFAULT, RUNTIME_ROLE_DEFAULT, WORLD_STRIPES_DEFAULT, WRITE_RATE_MAX_DEFAULT, WRITE_RATE_WINDOW_MS_DEFAULT } from './domain/settings';


/**
 * Every setting Sluice reads from the environment, validated once at start-up.
 * A bad value stops the process with a message naming the variable, instead of
 * surfacing later as a confusing runtime error.
 */
const port = z.coerce.number().int().min(0).max(65535);

/** The admin key a fresh checkout runs with: known to everyone, so refused outside development (adminKeyRefusal). */
export const DEV_ADMIN_KEY = 'sluice-dev-admin-key';
/** How long a whole request (headers and body) may take to arrive before it is answered 408. */
export const REQUEST_TIMEOUT_MS_DEFAULT = 30_000;
/** How long an idle keep-alive connection is kept open: above the 60 s idle timeout of common load balancers, so they close first. */
export const KEEP_ALIVE_TIMEOUT_MS_DEFAULT = 72_000;

/** A setting written as text and read by `parse`, whose error message is the setting's issue. */
const parsedText = <T>(parse: (text: string) => T) =>
  z.string().default('').transform((text, ctx) => {
    try {
      return parse(text);
    } catch (error) {
      ctx.addIssue({ code: 'custom', message: (error as Error).message });
      return z.NEVER;
    }
  });

/** A PostgreSQL role name the migrations may create. */
const role = z.string().regex(/^[a-z_][a-z0-9_]*$/);

export const ConfigSchema = z.object({
  /**
   * PostgreSQL, as the API and the worker connect: as the runtime role (SLUICE_RUNTIME_ROLE), never a superuser
   * or the tables' owner (runtimeRoleRefusal). Unset: the launcher tries 127.0.0.1:5432, then an embedded server.
   */
  DATABASE_URL: z.string().url().optional(),
  /** PostgreSQL as the owner, for `sluice migrate` (default DATABASE_URL): the migrations create the tables and grant the roles. */
  SLUICE_MIGRATION_DATABASE_URL: z.string().url().optional(),
  /** The role the API and the worker run as (created and granted by the migrations, src/db/roles.ts). */
  SLUICE_RUNTIME_ROLE: role.default(RUNTIME_ROLE_DEFAULT),
  /** The runtime role's password, set by the migrations (a server with password auth); unset: left as it is. */
  SLUICE_RUNTIME_PASSWORD: z.string().min(8).optional(),
  /** Read-only role used by tail readers and dashboards (created by the migrations; never reads a secret). */
  SLUICE_READONLY_ROLE: role.default(READONLY_ROLE_DEFAULT),
  TEMPORAL_ADDRESS: z.string().min(1).default('127.0.0.1:7233'),
  TEMPORAL_NAMESPACE: z.string().min(1).default('default'),
  TEMPORAL_UI_PORT: port.default(8233),
  /** The Temporal Web UI as a browser reaches it, for the console's links (default http://127.0.0.1:<TEMPORAL_UI_PORT>). */
  SLUICE_TEMPORAL_UI_URL: z.string().url().optional(),
  SLUICE_TASK_QUEUE: z.string().min(1).default('sluice'),
  /** The worker's Temporal Worker Deployment (worker versioning, src/temporal/deployments.ts): every worker of the task queue names the same one. */
  SLUICE_WORKER_DEPLOYMENT: z.string().min(1).max(200).regex(/^[^:]+$/, 'no colon: Temporal writes a version as <deployment>:<build id>').default('sluice'),
  /**
   * This worker's build id within the deployment. Unset (the default and the advice): derived from the code, the package
   * version and a hash of the workflow bundle (workflowBuildId), so replicas of one image agree and a change to any
   * workflow is a new version; one set by hand must change whenever the workflows do, or new code joins an old version.
   */
  SLUICE_WORKER_BUILD_ID: z.string().min(1).max(200).optional(),
  SLUICE_API_HOST: z.string().min(1).default('127.0.0.1'),
  SLUICE_API_PORT: port.default(3000),
  /** The admin key (pool, deposits, parties). The dev default is for local use only. */
  SLUICE_ADMIN_KEY: z.string().min(16).default(DEV_ADMIN_KEY),
  /**
   * The token Prometheus sends to read /metrics (`Authorization: Bearer <token>`). Unset, /metrics is open, which
   * only a loopback or development API may be (metricsTokenRefusal).
   */
  SLUICE_METRICS_TOKEN: z.string().min(16).optional(),
  /** `true`: a development stack (set by `npm start`'s launcher for its children), which may run with the dev admin key on any address. */
  SLUICE_DEV_MODE: z.enum(['true', 'false']).default('false').transform((v) => v === 'true'),
  SLUICE_DATA_DIR: z.string().min(1).default('.data'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** Largest JSON body the API accepts (413 above it). */
  SLUICE_BODY_LIMIT_BYTES: z.coerce.number().int().min(1024).max(10_485_760).default(BODY_LIMIT_BYTES_DEFAULT),
  /** A request whose headers and body have not all arrived within this answers 408 request_timeout and is closed. */
  SLUICE_REQUEST_TIMEOUT_MS: z.coerce.number().int().min(1_000).max(300_000).default(REQUEST_TIMEOUT_MS_DEFAULT),
  /** How long an idle keep-alive connection stays open between requests. */
  SLUICE_KEEP_ALIVE_TIMEOUT_MS: z.coerce.number().int().min(1_000).max(600_000).default(KEEP_ALIVE_TIMEOUT_MS_DEFAULT),
  /**
   * The proxies in front of the API whose X-Forwarded-For it believes (a caller without a key is
   * rate-limited by its address): unset, none; a number, that many hops; else addresses or CIDRs, comma-separated.
   */
  SLUICE_TRUST_PROXY: z
    .string()
    .optional()
    .transform((v) => (v === undefined || v === '' ? undefined : /^\d+$/.test(v) ? Number(v) : v.split(',').map((a) => a.trim()))),
  /** Writes (non-GET /v1 requests) one caller may make per window; more answer 429 with Retry-After. */
  SLUICE_WRITE_RATE_MAX: z.coerce.number().int().min(1).max(1_000_000).default(WRITE_RATE_MAX_DEFAULT),
  /** The window of SLUICE_WRITE_RATE_MAX, in milliseconds. */
  SLUICE_WRITE_RATE_WINDOW_MS: z.coerce.number().int().min(1000).max(3_600_000).default(WRITE_RATE_WINDOW_MS_DEFAULT),
  /** Reads (GET /v1 requests) one caller may make per window; more answer 429 with Retry-After. */
  SLUICE_READ_RATE_MAX: z.coerce.number().int().min(1).max(1_000_000).default(READ_RATE_MAX_DEFAULT),
  /** The window of SLUICE_READ_RATE_MAX, in milliseconds. */
  SLUICE_READ_RATE_WINDOW_MS: z.coerce.number().int().min(1000).max(3_600_000).default(READ_RATE_WINDOW_MS_DEFAULT),
  /** Units the free-tier pool is seeded with when the database is first migrated. */
  SLUICE_POOL_SEED_UNITS: z.coerce.number().int().min(0).max(1e15).default(POOL_SEED_UNITS_DEFAULT),
  /** Stripe accounts the free-tier pool is held as, so concurrent reservations do not queue on one row (added at migration, never removed). */
  SLUICE_POOL_STRIPES: z.coerce.number().int().min(1).max(256).default(POOL_STRIPES_DEFAULT),
  /** Stripe accounts each currency's world account is held as, so concurrent deposits and withdrawals do not queue on one row (added at migration, never removed). */
  SLUICE_WORLD_STRIPES: z.coerce.number().int().min(1).max(256).default(WORLD_STRIPES_DEFAULT),
  /** Daily pool budgets per tier, e.g. `established=50,trusted=200` (unnamed tiers keep their default). */
  SLUICE_TIER_BUDGETS: parsedText(parseTierBudgets),
  /**
   * Per payer tier: the streams a party may pay at once and the shortest tick interval, as
   * `tier=openStreams/tickIntervalMsMin,…` (e.g. `new=10/1000`); a tier left out keeps its default.
   */
  SLUICE_TIER_STREAM_QUOTAS: parsedText(parseTierStreamQuotas),
  /** Minor units one unit of work costs: a job's estimated cost is units × this (GET /v1/estimate, POST /v1/jobs). */
  SLUICE_PRICE_PER_UNIT: z.coerce.number().int().min(1).max(1e9).default(PRICE_PER_UNIT_DEFAULT),
  /** How long a partial or gate job waits for its payment before it cancels itself (default 1 hour). */
  SLUICE_JOB_PAYMENT_TIMEOUT_MS: z.coerce.number().int().min(1000).max(7 * 86_400_000).default(3_600_000),
  /** Live subaccounts an entity may have. */
  SLUICE_SUBACCOUNT_CAP: z.coerce.number().int().min(1).max(100_000).default(SUBACCOUNT_CAP_DEFAULT),
  /** Subaccount creations per entity per hour (failed ones do not count). */
  SLUICE_SUBACCOUNT_CREATIONS_PER_HOUR: z.coerce.number().int().min(1).max(100_000).default(CREATIONS_PER_HOUR_DEFAULT),
  /** Billing workflows (shards) of the billing clock; the API and the worker must agree on it. */
  SLUICE_BILLING_SHARDS: z.coerce.number().int().min(1).max(64).default(BILLING_SHARDS_DEFAULT),
  /** Ticks one billing transaction writes at most (the clock loops until caught up). */
  SLUICE_BILLING_ROWS_MAX: z.coerce.number().int().min(1).max(100_000).default(BILLING_ROWS_MAX_DEFAULT),
  /** Between two rounds of the reconciler, which settles what the ledger holds open for a workflow no longer running. */
  SLUICE_RECONCILE_INTERVAL_MS: z.coerce.number().int().min(1_000).max(3_600_000).default(RECONCILE_INTERVAL_MS_DEFAULT),
  /** Take the debt ledger's daily round at UTC midnight (the checkpoint workflow); `false` leaves it out (test workers). */
  SLUICE_DAILY_CHECKPOINTS: z.enum(['true', 'false']).default('true').transform((v) => v === 'true'),
  /** How long an API call waits on a workflow (an open's first tick, a cancel's receipt) before it answers 202 with a status URL. */
  SLUICE_API_WAIT_MS: z.coerce.number().int().min(100).max(120_000).default(API_WAIT_MS_DEFAULT),
  /** Months `sluice retention` keeps live, the current one included; older months are archived (docs/operations.md). */
  SLUICE_RETENTION_MONTHS: z.coerce.number().int().min(1).max(1200).default(12),
  /** Days a request's idempotency key answers its replays; `sluice retention` deletes older keys. */
  SLUICE_IDEMPOTENCY_WINDOW_DAYS: z.coerce.number().int().min(1).max(36_500).default(30),
  /** Fault injection for the sagas' steps and compensations, e.g. `fund=always,hold_collateral@acme=2,settle@job-7=after` (tests and demos only; src/domain/faults.ts). */
  SLUICE_FAULTS: parsedText(parseFaults),
});

export type Config = z.infer<typeof ConfigSchema>;

export function loadConfig(env: NodeJS.ProcessEnv = process.env, overrides: Partial<Config> = {}): Config {
  const parsed = ConfigSchema.safeParse(env);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join('.')}: ${i.message}`);
    throw new Error(`invalid configuration:\n${lines.join('\n')}`);
  }
  return { ...parsed.data, ...overrides };
}

/** DATABASE_URL, or the local database the dev launcher uses by default: for every process that connects. */
export const databaseUrl = (config: Pick<Config, 'DATABASE_URL'>) => config.DATABASE_URL ?? LOCAL_DATABASE_URL;

/** The owner's URL the migrations run as: SLUICE_MIGRATION_DATABASE_URL, else DATABASE_URL (or the local default). */
export const migrationDatabaseUrl = (config: Pick<Config, 'DATABASE_URL' | 'SLUICE_MIGRATION_DATABASE_URL'>) => config.SLUICE_MIGRATION_DATABASE_URL ?? databaseUrl(config);

/** The roles the migrations grant, from the settings. */
export const roleOptions = (config: Pick<Config, 'SLUICE_RUNTIME_ROLE' | 'SLUICE_RUNTIME_PASSWORD' | 'SLUICE_READONLY_ROLE'>) => ({
  runtimeRole: config.SLUICE_RUNTIME_ROLE,
  runtimePassword: config.SLUICE_RUNTIME_PASSWORD,
  readonlyRole: config.SLUICE_READONLY_ROLE,
});

/** Addresses only this machine can reach: the dev admin key is harmless there. */
export const isLoopbackHost = (host: string) => host === 'localhost' || host === '::1' || host === '[::1]' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);

/**
 * Why the service must not start with this admin key, or undefined when it may:
 * the dev default is published in the repository, so it is refused unless the API
 * listens on loopback only or the stack is explicitly a development one.
 */
export function adminKeyRefusal({ adminKey, apiHost, devMode }: { adminKey: string; apiHost: string; devMode: boolean }): string | undefined {
  if (adminKey !== DEV_ADMIN_KEY || devMode || isLoopbackHost(apiHost)) return undefined;
  return (
    `SLUICE_ADMIN_KEY is the published development key and the API listens on ${apiHost}, beyond this machine: ` +
    'set SLUICE_ADMIN_KEY to a secret of your own (e.g. `openssl rand -hex 24`), or bind SLUICE_API_HOST to 127.0.0.1, ' +
    'or set SLUICE_DEV_MODE=true for a development stack'
  );
}

/**
 * Why the API must not start without a metrics token, or undefined when it may: each
 * scrape of /metrics reads the database and tells the ledger's volumes, so it is open
 * only where the dev admin key would be accepted too (adminKeyRefusal): on loopback or
 * in a development stack.
 */
export function metricsTokenRefusal({ metricsToken, apiHost, devMode }: { metricsToken: string | undefined; apiHost: string; devMode: boolean }): string | undefined {
  if (metricsToken !== undefined || devMode || isLoopbackHost(apiHost)) return undefined;
  return (
    `SLUICE_METRICS_TOKEN is not set and the API listens on ${apiHost}, beyond this machine, where /metrics would be open to anyone: ` +
    'set SLUICE_METRICS_TOKEN to a secret of your own (e.g. `openssl rand -hex 24`) and give Prometheus the same one (authorization.credentials_file), ' +
    'or bind SLUICE_API_HOST to 127.0.0.1, or set SLUICE_DEV_MODE=true for a development stack'
  );
}
