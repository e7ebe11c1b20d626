/**
 * The production-shaped stack (docker-compose.yml + Dockerfile) cannot be started
 * here, so its wiring is checked statically: which services exist, what they wait
 * for, what they publish, and that the environment handed to the Sluice image is
 * exactly what src/config.ts accepts.
 */
import { RUNTIME_ROLE_DEFAULT } from '../../src/domain/settings';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parse } from 'yaml';
import { adminKeyRefusal, ConfigSchema, DEV_ADMIN_KEY, metricsTokenRefusal } from '../../src/config';
import { SEARCH_ATTRIBUTES } from '../../workflows/searchAttributes';
import { workflowBuildId } from '../../src/temporal/deployments';
import { createMetrics } from '../../src/api/metrics';
import { LEDGER_METRIC_NAMES } from '../../src/api/ledgerMetrics';
import type { Queryable } from '../../src/db/pool';

const ROOT = resolve(__dirname, '../..');
const COMPOSE_TEXT = readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8');

// ---- a small model of the compose file -------------------------------------------------

type Env = Record<string, string>;
interface DependsOn {
  condition: string;
}
interface Port {
  hostIp?: string;
  published: number;
  target: number;
}
interface RawService {
  image?: string;
  build?: unknown;
  command?: string | string[];
  entrypoint?: string | string[];
  environment?: Record<string, string | number | boolean | null> | string[];
  depends_on?: string[] | Record<string, { condition?: string }>;
  ports?: (string | number | { target: number; published?: number | string; host_ip?: string })[];
  healthcheck?: { test?: string | string[] };
  volumes?: (string | { type?: string; source?: string; target?: string })[];
  deploy?: { replicas?: number };
  restart?: string;
  configs?: (string | { source: string; target?: string })[];
}
interface ComposeFile {
  services: Record<string, RawService>;
  volumes?: Record<string, unknown>;
  configs?: Record<string, { content?: string; file?: string }>;
}

// docker compose resolves `<<` merge keys, so the parser must too
const compose = parse(COMPOSE_TEXT, { merge: true }) as ComposeFile;

const APP_SERVICES = ['migrate', 'worker', 'api'] as const;

function service(name: string): RawService {
  const s = compose.services[name];
  if (!s) throw new Error(`docker-compose.yml has no service ${name}`);
  return s;
}

/** The environment as compose passes it, before ${VAR} interpolation. */
function envOf(name: string): Env {
  const raw = service(name).environment ?? {};
  const env: Env = {};
  if (Array.isArray(raw)) {
    for (const item of raw) {
      const i = item.indexOf('=');
      env[i < 0 ? item : item.slice(0, i)] = i < 0 ? '' : item.slice(i + 1);
    }
  } else {
    for (const [k, v] of Object.entries(raw)) env[k] = v === null ? '' : String(v);
  }
  return env;
}

function dependsOn(name: string): Record<string, DependsOn> {
  const raw = service(name).depends_on ?? {};
  if (Array.isArray(raw)) return Object.fromEntries(raw.map((d) => [d, { condition: 'service_started' }]));
  return Object.fromEntries(Object.entries(raw).map(([d, v]) => [d, { condition: v.condition ?? 'service_started' }]));
}

/** The file of this repository a service mounts at `target`. */
function mounted(name: string, target: string): string {
  const volume = (service(name).volumes ?? []).find((v): v is string => typeof v === 'string' && v.split(':')[1] === target);
  expect(volume).toBeDefined();
  return join(ROOT, volume!.split(':')[0]!);
}

function portsOf(name: string): Port[] {
  return (service(name).ports ?? []).map((p) => {
    if (typeof p === 'object') return { hostIp: p.host_ip, published: Number(p.published ?? p.target), target: Number(p.target) };
    // [host_ip:][host_port:]container_port[/protocol]
    const parts = String(p).replace(/\/(tcp|udp)$/, '').split(':');
    const target = Number(parts.pop());
    const published = parts.length ? Number(parts.pop()) : target;
    return { hostIp: parts.length ? parts.join(':') : undefined, published, target };
  });
}

function asArray(x: string | string[] | undefined): string[] {
  if (x === undefined) return [];
  return Array.isArray(x) ? x : x.split(/\s+/).filter(Boolean);
}

/**
 * Compose's variable interpolation: ${VAR}, ${VAR:-default}, ${VAR-default},
 * ${VAR:?error}, ${VAR?error}, and $$ for a literal $.
 */
function interpolate(value: string, vars: Record<string, string | undefined>): string {
  return value.replace(/\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?)([-?])([^}]*))?\}/g, (all, name?: string, colon?: string, op?: string, arg?: string) => {
    if (all === '$$') return '$';
    const v = vars[name!];
    const missing = v === undefined || (colon === ':' && v === '');
    if (op === '?' && missing) throw new Error(`required variable ${name} is missing a value: ${arg}`);
    if (op === '-' && missing) return arg ?? '';
    return v ?? '';
  });
}

function resolvedEnv(name: string, vars: Record<string, string | undefined>): Env {
  return Object.fromEntries(Object.entries(envOf(name)).map(([k, v]) => [k, interpolate(v, vars)]));
}

const CONFIG_KEYS = Object.keys(ConfigSchema.shape) as (keyof typeof ConfigSchema.shape)[];
/** Settings without a default the compose file leaves unset on purpose. */
const UNSET_ON_PURPOSE: string[] = [
  // derived from the image's workflow code (src/temporal/deployments.ts workflowBuildId): a fixed one would outlive a code change
  'SLUICE_WORKER_BUILD_ID',
];
/** Settings only the migrate service holds: the owner's credentials and the runtime role's password it sets. */
const MIGRATE_ONLY = ['SLUICE_MIGRATION_DATABASE_URL', 'SLUICE_RUNTIME_PASSWORD'];
const ADMIN_KEY = 'a-real-admin-key-0123456789abcdef';
const METRICS_TOKEN = 'a-real-metrics-token-0123456789abcdef';
const RUNTIME_PASSWORD = 'a-real-runtime-password-0123456789';
/** The secrets an operator supplies to `docker compose up`. */
const SECRETS = { SLUICE_ADMIN_KEY: ADMIN_KEY, SLUICE_METRICS_TOKEN: METRICS_TOKEN, SLUICE_RUNTIME_PASSWORD: RUNTIME_PASSWORD };

// ---- services --------------------------------------------------------------------------

describe('docker-compose.yml', () => {
  test('defines postgres, temporal-db, temporal, temporal-setup, temporal-ui, migrate, worker, api, gateway, prometheus and grafana', () => {
    expect(Object.keys(compose.services).sort()).toEqual(
      ['api', 'gateway', 'grafana', 'migrate', 'postgres', 'prometheus', 'temporal', 'temporal-db', 'temporal-setup', 'temporal-ui', 'worker'].sort(),
    );
  });

  test('postgres is PostgreSQL 15 with a pg_isready healthcheck and its data in a named volume', () => {
    const pg = service('postgres');
    expect(pg.image).toBe('postgres:15');
    expect(asArray(pg.healthcheck?.test).join(' ')).toMatch(/pg_isready/);
    const dataVolume = (pg.volumes ?? []).find((v) => (typeof v === 'string' ? v.endsWith(':/var/lib/postgresql/data') : v.target === '/var/lib/postgresql/data'));
    expect(dataVolume).toBeDefined();
    const source = typeof dataVolume === 'string' ? dataVolume.split(':')[0]! : dataVolume!.source!;
    expect(Object.keys(compose.volumes ?? {})).toContain(source);
  });

  test("temporal runs on a PostgreSQL of its own (temporal-db: postgres12 plugin, its credentials, its volume), not the ledger's, with a chosen history shard count", () => {
    const temporal = envOf('temporal');
    const db = envOf('temporal-db');
    expect(service('temporal').image).toMatch(/^temporalio\/auto-setup:/);
    expect(service('temporal-db').image).toBe('postgres:15');
    expect(temporal.DB).toBe('postgres12');
    expect(temporal.POSTGRES_SEEDS).toBe('temporal-db');
    expect(temporal.DB_PORT).toBe('5432');
    expect([temporal.POSTGRES_USER, temporal.POSTGRES_PWD]).toEqual([db.POSTGRES_USER, db.POSTGRES_PASSWORD]);
    expect(temporal.POSTGRES_USER).not.toBe(envOf('postgres').POSTGRES_USER);
    expect(dependsOn('temporal')).toEqual({ 'temporal-db': { condition: 'service_healthy' } });
    expect(Number(temporal.NUM_HISTORY_SHARDS)).toBeGreaterThanOrEqual(4);
    const volumeOf = (name: string) => (service(name).volumes ?? []).map((v) => (typeof v === 'string' ? v.split(':')[0] : v.source));
    expect(volumeOf('temporal-db')).not.toEqual(expect.arrayContaining(volumeOf('postgres')));
  });

  test('the Temporal UI talks to the temporal service', () => {
    expect(service('temporal-ui').image).toMatch(/^temporalio\/ui:/);
    expect(envOf('temporal-ui').TEMPORAL_ADDRESS).toBe('temporal:7233');
  });

  test('every third-party Temporal image is pinned to an exact version', () => {
    for (const name of ['temporal', 'temporal-ui', 'temporal-setup']) {
      expect(service(name).image).toMatch(/^temporalio\/[a-z-]+:\d+\.\d+\.\d+(-[\w.-]+)?$/);
    }
  });

  test('publishes Temporal gRPC on 7233, the Temporal UI on 8233 and the API (its gateway) on 3000', () => {
    expect(portsOf('temporal')).toContainEqual(expect.objectContaining({ published: 7233, target: 7233 }));
    expect(portsOf('temporal-ui')).toContainEqual(expect.objectContaining({ published: 8233, target: 8080 }));
    expect(portsOf('gateway')).toContainEqual(expect.objectContaining({ published: 3000, target: 3000 }));
  });

  test('two API replicas, listening on all interfaces, reached through the gateway, which forwards the client address they trust one hop of', () => {
    const env = resolvedEnv('api', SECRETS);
    expect(env.SLUICE_API_HOST).toBe('0.0.0.0');
    expect(service('api').deploy?.replicas).toBe(2);
    // replicas cannot share a host port: only the gateway publishes one
    expect(service('api').ports ?? []).toEqual([]);
    expect(ConfigSchema.parse(env).SLUICE_TRUST_PROXY).toBe(1);
    expect(service('gateway').image).toMatch(/^nginx:\d+\.\d+\.\d+(-alpine)?$/);
    expect(dependsOn('gateway').api).toEqual({ condition: 'service_healthy' });
    const nginx = readFileSync(mounted('gateway', '/etc/nginx/nginx.conf'), 'utf8');
    expect(nginx).toMatch(new RegExp(`listen ${portsOf('gateway')[0]!.target};`));
    // a name in a variable is resolved again through Docker's DNS, so every replica is found
    expect(nginx).toMatch(/resolver 127\.0\.0\.11/);
    expect(nginx).toContain(`set $api http://api:${env.SLUICE_API_PORT};`);
    expect(nginx).toMatch(/proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;/);
  });

  // ---- the Sluice image --------------------------------------------------------------

  test('migrate, worker and api run one image built from the Dockerfile, with commands migrate, worker and api', () => {
    const [first, ...rest] = APP_SERVICES.map((n) => service(n));
    expect(first!.image).toBeTruthy();
    expect(first!.build).toBeDefined();
    const dockerfile = typeof first!.build === 'string' ? 'Dockerfile' : ((first!.build as { dockerfile?: string }).dockerfile ?? 'Dockerfile');
    const context = typeof first!.build === 'string' ? first!.build : (first!.build as { context?: string }).context ?? '.';
    expect(existsSync(join(ROOT, context, dockerfile))).toBe(true);
    for (const s of rest) {
      expect(s.image).toBe(first!.image);
      expect(s.build).toEqual(first!.build);
    }
    expect(APP_SERVICES.map((n) => asArray(service(n).command))).toEqual([['migrate'], ['worker'], ['api']]);
  });

  test('every app service reaches PostgreSQL and Temporal through the compose services, the worker and the API as the runtime role, only migrate as the owner', () => {
    const pg = envOf('postgres');
    for (const name of APP_SERVICES) {
      const env = resolvedEnv(name, SECRETS);
      const db = new URL(env.DATABASE_URL!);
      expect(db.protocol).toMatch(/^postgres(ql)?:$/);
      expect(db.hostname).toBe('postgres');
      expect(db.port || '5432').toBe('5432');
      expect(decodeURIComponent(db.username)).toBe(RUNTIME_ROLE_DEFAULT);
      expect(decodeURIComponent(db.password)).toBe(RUNTIME_PASSWORD);
      expect(db.pathname).toBe(`/${pg.POSTGRES_DB}`);
      if (name === 'migrate') {
        const owner = new URL(env.SLUICE_MIGRATION_DATABASE_URL!);
        expect([decodeURIComponent(owner.username), decodeURIComponent(owner.password), owner.hostname, owner.pathname]).toEqual([pg.POSTGRES_USER, pg.POSTGRES_PASSWORD, 'postgres', `/${pg.POSTGRES_DB}`]);
        // the role it creates takes the password the others connect with
        expect(env.SLUICE_RUNTIME_PASSWORD).toBe(RUNTIME_PASSWORD);
      } else {
        expect(env.SLUICE_MIGRATION_DATABASE_URL).toBeUndefined();
        expect(env.SLUICE_RUNTIME_PASSWORD).toBeUndefined();
      }
      expect(env.TEMPORAL_ADDRESS).toBe('temporal:7233');
      expect(env.TEMPORAL_NAMESPACE).toBe('default');
      expect(env.SLUICE_TASK_QUEUE).toBe('sluice');
    }
  });

  test('every variable the app services set is a ConfigSchema setting (a typo fails here)', () => {
    for (const name of APP_SERVICES) {
      const unknown = Object.keys(envOf(name)).filter((k) => !(CONFIG_KEYS as string[]).includes(k));
      expect({ service: name, unknown }).toEqual({ service: name, unknown: [] });
    }
  });

  test('every ConfigSchema setting without a default is set for the app services', () => {
    // a setting has no default when parsing "absent" yields nothing (optional) or fails (required)
    const withoutDefault = CONFIG_KEYS.filter((k) => {
      const r = ConfigSchema.shape[k].safeParse(undefined);
      return !r.success || r.data === undefined;
    });
    expect(withoutDefault).toContain('DATABASE_URL');
    for (const name of APP_SERVICES) {
      const env = envOf(name);
      const unset = withoutDefault.filter((k) => !env[k] && !UNSET_ON_PURPOSE.includes(k) && (name === 'migrate' || !MIGRATE_ONLY.includes(k)));
      expect({ service: name, unset }).toEqual({ service: name, unset: [] });
    }
  });

  test('the app environment is valid for ConfigSchema once an admin key, a metrics token and the runtime password are supplied', () => {
    for (const name of APP_SERVICES) {
      const parsed = ConfigSchema.safeParse(resolvedEnv(name, SECRETS));
      if (!parsed.success) throw new Error(`${name}: ${JSON.stringify(parsed.error.issues)}`);
      expect(parsed.data).toMatchObject({
        DATABASE_URL: `postgres://${RUNTIME_ROLE_DEFAULT}:${RUNTIME_PASSWORD}@postgres:5432/sluice`,
        TEMPORAL_ADDRESS: 'temporal:7233',
        TEMPORAL_NAMESPACE: 'default',
        SLUICE_TASK_QUEUE: 'sluice',
        SLUICE_API_HOST: '0.0.0.0',
        SLUICE_API_PORT: 3000,
        SLUICE_ADMIN_KEY: ADMIN_KEY,
        SLUICE_METRICS_TOKEN: METRICS_TOKEN,
      });
    }
  });

  test('the stack refuses to start without SLUICE_ADMIN_KEY (no built-in admin key)', () => {
    for (const name of APP_SERVICES) {
      expect(() => resolvedEnv(name, { SLUICE_RUNTIME_PASSWORD: RUNTIME_PASSWORD })).toThrow(/SLUICE_ADMIN_KEY.*set an admin key/);
      expect(() => resolvedEnv(name, { SLUICE_RUNTIME_PASSWORD: RUNTIME_PASSWORD, SLUICE_ADMIN_KEY: '' })).toThrow(/SLUICE_ADMIN_KEY/);
    }
  });

  test('the API binds beyond loopback and is no dev stack, so it refuses the dev admin key and takes an operator-chosen one', () => {
    const refusalWith = (key: string) => {
      const config = ConfigSchema.parse(resolvedEnv('api', { ...SECRETS, SLUICE_ADMIN_KEY: key }));
      return adminKeyRefusal({ adminKey: config.SLUICE_ADMIN_KEY, apiHost: config.SLUICE_API_HOST, devMode: config.SLUICE_DEV_MODE });
    };
    expect(refusalWith(DEV_ADMIN_KEY)).toMatch(/SLUICE_ADMIN_KEY is the published development key/);
    expect(refusalWith(ADMIN_KEY)).toBeUndefined();
  });

  test('the stack refuses to start without SLUICE_METRICS_TOKEN, and the API (0.0.0.0, no dev mode) would refuse to start without one', () => {
    for (const name of APP_SERVICES) {
      expect(() => resolvedEnv(name, { SLUICE_RUNTIME_PASSWORD: RUNTIME_PASSWORD, SLUICE_ADMIN_KEY: ADMIN_KEY })).toThrow(/SLUICE_METRICS_TOKEN.*set a metrics token/);
      expect(() => resolvedEnv(name, { SLUICE_RUNTIME_PASSWORD: RUNTIME_PASSWORD, SLUICE_ADMIN_KEY: ADMIN_KEY, SLUICE_METRICS_TOKEN: '' })).toThrow(/SLUICE_METRICS_TOKEN/);
    }
    // the API's own refusal, were the variable dropped from the compose file
    const { SLUICE_METRICS_TOKEN: _token, ...withoutToken } = resolvedEnv('api', SECRETS);
    const refusalWith = (env: Env) => {
      const config = ConfigSchema.parse(env);
      return metricsTokenRefusal({ metricsToken: config.SLUICE_METRICS_TOKEN, apiHost: config.SLUICE_API_HOST, devMode: config.SLUICE_DEV_MODE });
    };
    expect(refusalWith(withoutToken)).toMatch(/SLUICE_METRICS_TOKEN is not set and the API listens on 0\.0\.0\.0/);
    expect(refusalWith(resolvedEnv('api', SECRETS))).toBeUndefined();
  });

  test('the shared app environment is written once: worker and api have it alone, migrate it and the owner settings', () => {
    expect(COMPOSE_TEXT.match(/^\s*DATABASE_URL\s*:/gm)).toHaveLength(1);
    expect(envOf('api')).toEqual(envOf('worker'));
    const { SLUICE_MIGRATION_DATABASE_URL: _owner, SLUICE_RUNTIME_PASSWORD: _password, ...shared } = envOf('migrate');
    expect(shared).toEqual(envOf('worker'));
  });

  test('the stack refuses to start without SLUICE_RUNTIME_PASSWORD (the runtime role has no built-in password)', () => {
    const { SLUICE_RUNTIME_PASSWORD: _omitted, ...others } = SECRETS;
    expect(() => resolvedEnv('api', others)).toThrow(/SLUICE_RUNTIME_PASSWORD/);
    expect(() => resolvedEnv('migrate', others)).toThrow(/SLUICE_RUNTIME_PASSWORD/);
  });

  // ---- start-up order ------------------------------------------------------------------

  test('migrate runs once, after postgres is healthy', () => {
    expect(dependsOn('migrate').postgres).toEqual({ condition: 'service_healthy' });
    expect(service('migrate').restart ?? 'no').toBe('no');
    expect(service('migrate').deploy?.replicas ?? 1).toBe(1);
  });

  test('worker and api start only after migrations and search-attribute setup completed, and Temporal is up', () => {
    for (const name of ['worker', 'api']) {
      const deps = dependsOn(name);
      expect(deps.migrate).toEqual({ condition: 'service_completed_successfully' });
      expect(deps['temporal-setup']).toEqual({ condition: 'service_completed_successfully' });
      expect(['service_started', 'service_healthy']).toContain(deps.temporal?.condition);
    }
  });

  test('two workers poll the one task queue', () => {
    expect(service('worker').deploy?.replicas).toBe(2);
    // replicas cannot share a fixed container name or host port
    expect(service('worker').ports ?? []).toEqual([]);
    expect(service('worker')).not.toHaveProperty('container_name');
  });

  test('the two workers are one worker version: one deployment, and a build id both derive from the same workflow code', () => {
    const env = ConfigSchema.parse(resolvedEnv('worker', SECRETS));
    expect(env.SLUICE_WORKER_DEPLOYMENT).toBe('sluice');
    // no build id in the file: each replica derives it from the image's workflow bundle, so the two agree,
    // and a new image (a rolling deploy) is a new version; one id written here would outlive a code change
    expect(env.SLUICE_WORKER_BUILD_ID).toBeUndefined();
    const bundle = 'the workflow bundle of one image';
    expect(workflowBuildId('0.1.0', bundle)).toBe(workflowBuildId('0.1.0', bundle));
    expect(workflowBuildId('0.1.0', `${bundle} `)).not.toBe(workflowBuildId('0.1.0', bundle));
  });

  test('temporal-setup registers every Sluice search attribute (SluiceKind, SluicePayer, SluicePayee, SluiceStatus, SluiceEntity) as Keyword once Temporal is healthy', () => {
    const setup = service('temporal-setup');
    expect(setup.image).toMatch(/^temporalio\/admin-tools:/);
    expect(setup.restart ?? 'no').toBe('no');
    expect(dependsOn('temporal-setup').temporal).toEqual({ condition: 'service_healthy' });
    expect(envOf('temporal-setup').TEMPORAL_ADDRESS).toBe('temporal:7233');
    // the script it runs is mounted from the repository
    const entry = [...asArray(setup.entrypoint), ...asArray(setup.command)];
    const mounts = (setup.volumes ?? []).filter((v): v is string => typeof v === 'string').map((v) => v.split(':'));
    const mount = mounts.find(([, target]) => entry.includes(target!));
    expect(mount).toBeDefined();
    const script = readFileSync(join(ROOT, mount![0]!), 'utf8');
    expect(script).toMatch(/temporal operator search-attribute create/);
    for (const attr of SEARCH_ATTRIBUTES.map((k) => k.name)) {
      // the CLI pairs each --name with the --type at the same position
      expect(script).toMatch(new RegExp(`--name ${attr} --type Keyword\\b`));
    }
  });
});

// ---- Prometheus and Grafana ----------------------------------------------------------------

describe('metrics: Prometheus scrape config and the Grafana dashboard', () => {
  /** A volume's host file, by its target inside the container. */
  const dashboardPath = join(ROOT, 'deploy/grafana/sluice-dashboard.json');
  const dashboard = JSON.parse(readFileSync(dashboardPath, 'utf8')) as { uid: string; panels: { title: string; datasource: { uid: string }; targets: { expr: string }[] }[] };
  const exprs = dashboard.panels.flatMap((p) => p.targets.map((t) => t.expr));

  /**
   * The names the API's registry exposes, as Prometheus sees them: a histogram's
   * `_bucket`, `_sum` and `_count` series included. Built without a database (names
   * only; no collect runs).
   */
  const exposed = () => {
    const noDb: Queryable = { query: () => Promise.reject(new Error('names only')) } as never;
    const names = new Set<string>();
    for (const m of createMetrics(noDb).registry.getMetricsAsArray() as unknown as { name: string; type: string }[]) {
      names.add(m.name);
      if (m.type === 'histogram') for (const s of ['_bucket', '_sum', '_count']) names.add(`${m.name}${s}`);
    }
    return names;
  };

  test("prometheus scrapes every API replica's /metrics, found by DNS, with the mounted config", () => {
    expect(service('prometheus').image).toMatch(/^prom\/prometheus:v\d+\.\d+\.\d+$/);
    const config = parse(readFileSync(mounted('prometheus', '/etc/prometheus/prometheus.yml'), 'utf8')) as {
      scrape_configs: { job_name: string; metrics_path?: string; dns_sd_configs?: { names: string[]; type: string; port: number }[] }[];
    };
    const job = config.scrape_configs.find((j) => (j.dns_sd_configs ?? []).some((c) => c.names.includes('api') && c.type === 'A' && c.port === Number(envOf('api').SLUICE_API_PORT)));
    expect(job).toBeDefined();
    expect(job!.metrics_path ?? '/metrics').toBe('/metrics');
  });

  test("prometheus sends the API's metrics token: a bearer credentials file that compose fills from the same SLUICE_METRICS_TOKEN", () => {
    const config = parse(readFileSync(mounted('prometheus', '/etc/prometheus/prometheus.yml'), 'utf8')) as {
      scrape_configs: { dns_sd_configs?: { names: string[] }[]; authorization?: { type?: string; credentials?: string; credentials_file?: string } }[];
    };
    const job = config.scrape_configs.find((j) => (j.dns_sd_configs ?? []).some((c) => c.names.includes('api')))!;
    // a file, never the token written into the repository's config
    expect(job.authorization).toEqual({ type: 'Bearer', credentials_file: expect.any(String) });
    const mount = (service('prometheus').configs ?? []).find((c) => typeof c === 'object' && c.target === job.authorization!.credentials_file);
    expect(mount).toBeDefined();
    const source = compose.configs?.[(mount as { source: string }).source];
    // the file's content and the API's token are one value, whatever the operator chose
    const vars = { ...SECRETS, SLUICE_METRICS_TOKEN: 'chosen-by-the-operator-0123456789' };
    expect(interpolate(source?.content ?? '', vars)).toBe(resolvedEnv('api', vars).SLUICE_METRICS_TOKEN);
    expect(() => interpolate(source?.content ?? '', { SLUICE_ADMIN_KEY: ADMIN_KEY })).toThrow(/SLUICE_METRICS_TOKEN/);
  });

  test('grafana provisions the Prometheus datasource the panels name and loads the dashboard file', () => {
    expect(service('grafana').image).toMatch(/^grafana\/grafana:\d+\.\d+\.\d+$/);
    expect(mounted('grafana', '/var/lib/grafana/dashboards/sluice-dashboard.json')).toBe(dashboardPath);
    const provisioning = mounted('grafana', '/etc/grafana/provisioning');
    const datasources = parse(readFileSync(join(provisioning, 'datasources/prometheus.yml'), 'utf8')) as { datasources: { uid: string; url: string }[] };
    const providers = parse(readFileSync(join(provisioning, 'dashboards/sluice.yml'), 'utf8')) as { providers: { options: { path: string } }[] };
    expect(providers.providers[0]!.options.path).toBe('/var/lib/grafana/dashboards');
    expect(datasources.datasources.map((d) => d.url)).toContain('http://prometheus:9090');
    for (const panel of dashboard.panels) expect(datasources.datasources.map((d) => d.uid)).toContain(panel.datasource.uid);
  });

  test('the dashboard has a panel for every business metric', () => {
    for (const metric of ['sluice_ticks_billed_total', 'sluice_tick_lag_seconds_bucket', 'sluice_open_streams', 'sluice_saga_compensations_total',
      'sluice_webhook_delivery_attempts_total', 'sluice_webhook_delivery_failures_total', 'sluice_pool_units', 'sluice_grant_decisions_total']) {
      expect(exprs.some((e) => e.includes(metric))).toBe(true);
    }
  });

  test("the dashboard takes the ledger's figures once, however many replicas report them: max across instances, never a sum", () => {
    const ledger = exprs.filter((e) => LEDGER_METRIC_NAMES.some((m) => e.includes(m)));
    expect(ledger.length).toBeGreaterThanOrEqual(8);
    for (const e of ledger) {
      expect({ e, sums: /\bsum\b/.test(e) }).toEqual({ e, sums: false });
      expect(e).toMatch(/\bmax\b/);
    }
  });

  test('every metric the dashboard queries exists in the registry behind /metrics (they cannot drift apart)', () => {
    const used = new Set(exprs.flatMap((e) => e.match(/\bsluice_[a-z0-9_]+/g) ?? []));
    expect(used.size).toBeGreaterThanOrEqual(8);
    const names = exposed();
    expect([...used].filter((m) => !names.has(m))).toEqual([]);
  });
});

// ---- Dockerfile --------------------------------------------------------------------------

describe('Dockerfile', () => {
  const path = join(ROOT, 'Dockerfile');
  const instructions = existsSync(path)
    ? readFileSync(path, 'utf8')
        .replace(/\\\n/g, ' ')
        .split('\n')
        .map((l) => l.trim())
        .filter((l) => l && !l.startsWith('#'))
        .map((l) => {
          const [op, ...rest] = l.split(/\s+/);
          return { op: op!.toUpperCase(), args: rest.join(' ') };
        })
    : [];
  const index = (pred: (i: { op: string; args: string }) => boolean) => instructions.findIndex(pred);
  const jsonArgs = (op: string): string[] => {
    const i = instructions.filter((x) => x.op === op).at(-1);
    if (!i) return [];
    return JSON.parse(i.args) as string[];
  };

  test('exists and builds on node:20-bookworm-slim', () => {
    expect(existsSync(path)).toBe(true);
    expect(instructions.filter((i) => i.op === 'FROM').map((i) => i.args)).toEqual(['node:20-bookworm-slim']);
  });

  test('installs production dependencies with npm ci after copying only package*.json, then copies the source', () => {
    const copyManifests = index((i) => i.op === 'COPY' && /package(-lock)?\.json|package\*\.json/.test(i.args) && !/^\.\s/.test(i.args));
    const npmCi = index((i) => i.op === 'RUN' && /\bnpm ci\b/.test(i.args));
    const copySource = index((i) => i.op === 'COPY' && /^(--\S+\s+)*\.\s/.test(i.args));
    expect(copyManifests).toBeGreaterThanOrEqual(0);
    expect(npmCi).toBeGreaterThan(copyManifests);
    expect(copySource).toBeGreaterThan(npmCi);
    expect(instructions[npmCi]!.args).toMatch(/--omit=dev|--production/);
  });

  test('runs as a non-root user', () => {
    const user = instructions.filter((i) => i.op === 'USER').at(-1)?.args;
    expect(user).toBeDefined();
    expect(['root', '0', '0:0']).not.toContain(user);
  });

  test('its entry point runs src/cli.ts through tsx, with api as the default command', () => {
    const entry = jsonArgs('ENTRYPOINT');
    expect(entry).toContain('src/cli.ts');
    expect(entry.some((a) => a === 'tsx' || a.endsWith('/tsx'))).toBe(true);
    expect(jsonArgs('CMD')).toEqual(['api']);
    expect(existsSync(join(ROOT, 'package.json'))).toBe(true);
  });

  test('.dockerignore keeps host node_modules and secrets out, and the source and lockfile in', () => {
    const ignored = readFileSync(join(ROOT, '.dockerignore'), 'utf8')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith('#'));
    expect(ignored).toEqual(expect.arrayContaining(['node_modules', '.env', '.git']));
    for (const needed of ['src', 'workflows', 'activities', 'package.json', 'package-lock.json', 'tsconfig.json']) {
      expect(ignored).not.toContain(needed);
    }
  });
});
