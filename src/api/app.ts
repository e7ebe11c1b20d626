import fastifyHelmet from '@fastify/helmet';
import fastifyRateLimit from '@fastify/rate-limit';
import fastifySwagger from '@fastify/swagger';
import fastifySwaggerUi from '@fastify/swagger-ui';
import type { Client } from '@temporalio/client';
import Fastify, { LogController, type FastifyInstance, type FastifyRequest } from 'fastify';
import { jsonSchemaTransform, serializerCompiler, validatorCompiler, type ZodTypeProvider } from 'fastify-type-provider-zod';
import type { Pool } from '../db/pool';
import type { Logger } from '../logger';
import { createAuthenticator } from './auth';
import { SluiceError } from '../domain/errors';
import type { TierStreamQuotas } from '../domain/streamQuotas';
import { ErrorBody } from './schemas';
import type { Limits } from '../ledger/entities';
import { bucketKey, bucketOf, callerOf, overLimit, postgresRateStore, rateLimitsOf, type Bucket, type RateLimit } from './rateLimits';
import { clientErrorHandler, errorHandler, notFoundHandler, requestIdOf, statusOfCode } from './errors';
import { errorReferenceHtml } from './errorReference';
import { withExample } from './openapiExamples';
import { createMetrics } from './metrics';
import { metricsAccess } from './metricsAccess';
import { ledgerRoutes } from './routes/ledger';
import { partyRoutes } from './routes/parties';
import { keyRoutes } from './routes/keys';
import { paymentRoutes } from './routes/payments';
import { streamRoutes } from './routes/streams';
import { streamControlRoutes } from './routes/streamControls';
import { operatorRoutes } from './routes/operators';
import { reconcileRoutes } from './routes/reconcile';
import { jobRoutes } from './routes/jobs';
import { sessionRoutes } from './routes/sessions';
import { entityRoutes } from './routes/entities';
import { rateRoutes } from './routes/rates';
import { consoleRoutes } from './console';
import type { TierBudgets } from '../ledger/grants';
import { API_WAIT_MS_DEFAULT } from '../domain/settings';
import { KEEP_ALIVE_TIMEOUT_MS_DEFAULT, REQUEST_TIMEOUT_MS_DEFAULT } from '../config';

export interface ApiDeps {
  pool: Pool;
  temporal: Client;
  taskQueue: string;
  adminKey: string;
  bodyLimitBytes: number;
  logger: Logger;
  /** Daily pool budgets per tier, for estimates (the worker decides with the same config). */
  budgets?: TierBudgets;
  /** Default wait for a job's payment. */
  jobPaymentTimeoutMs?: number;
  /** Minor units one unit of work costs (SLUICE_PRICE_PER_UNIT); default 1. */
  pricePerUnit?: number;
  /** Open streams and the shortest tick per payer tier (SLUICE_TIER_STREAM_QUOTAS; the worker's too). */
  streamQuotas?: TierStreamQuotas;
  /** Writes per caller per window (SLUICE_WRITE_RATE_MAX / _WINDOW_MS); default WRITE_RATE_*_DEFAULT. */
  writeRate?: RateLimit;
  /** Reads per caller per window (SLUICE_READ_RATE_MAX / _WINDOW_MS); default READ_RATE_*_DEFAULT. */
  readRate?: RateLimit;
  /** The proxies whose X-Forwarded-For the API believes (SLUICE_TRUST_PROXY): a hop count or addresses; default none. */
  trustProxy?: number | string[];
  /** The worker's default subaccount limits (SLUICE_SUBACCOUNT_CAP, _CREATIONS_PER_HOUR), for the entity view and Retry-After. */
  subaccountLimits?: Limits;
  /** The Temporal Web UI's base URL, for the console's links to workflows (left out: no links). */
  temporalUiUrl?: string;
  /** The Temporal namespace the workflows run in (default 'default'). */
  namespace?: string;
  /** The billing clock's shard count (SLUICE_BILLING_SHARDS; the worker's): a new stream wakes its shard's clock. */
  billingShards?: number;
  /** How long a call waits on a workflow before it answers 202 with a status URL (SLUICE_API_WAIT_MS). */
  waitMs?: number;
  /** Where the built console is (default dist/console). */
  consoleDir?: string;
  /** A request not wholly arrived within this is answered 408 (SLUICE_REQUEST_TIMEOUT_MS). */
  requestTimeoutMs?: number;
  /** An idle keep-alive connection is closed after this (SLUICE_KEEP_ALIVE_TIMEOUT_MS). */
  keepAliveTimeoutMs?: number;
  /** The token /metrics takes (SLUICE_METRICS_TOKEN); left out, /metrics is open (src/api/metricsAccess.ts). */
  metricsToken?: string;
}

/**
 * The Content-Security-Policy of every response. The console is a Vite build served
 * from this origin: its script, stylesheet and API calls are all 'self', and no
 * inline script. Its progress bars set a `style` attribute (console/src/streamPage.ts),
 * so inline style *attributes* are allowed, never <style> elements or inline script.
 */
const CSP_DIRECTIVES = {
  'default-src': ["'self'"],
  'base-uri': ["'self'"],
  'script-src': ["'self'"],
  'style-src': ["'self'"],
  'style-src-attr': ["'unsafe-inline'"],
  'img-src': ["'self'"],
  'font-src': ["'self'"],
  'connect-src': ["'self'"],
  'object-src': ["'none'"],
  'form-action': ["'self'"],
  'frame-ancestors': ["'none'"],
};
/** The Swagger UI at /docs (its own files, no inline script) styles with inline styles and draws icons as data: images. */
const DOCS_CSP_DIRECTIVES = { ...CSP_DIRECTIVES, 'style-src': ["'self'", "'unsafe-inline'"], 'img-src': ["'self'", 'data:'] };

/**
 * The server's clocks: a request must wholly arrive within requestTimeoutMs (else
 * 408, by clientErrorHandler); an idle socket is dropped only once a request could
 * have arrived and its handler waited its longest (waitMs) on a workflow.
 */
export function httpTimeouts(deps: Pick<ApiDeps, 'requestTimeoutMs' | 'keepAliveTimeoutMs' | 'waitMs'>) {
  const requestTimeoutMs = deps.requestTimeoutMs ?? REQUEST_TIMEOUT_MS_DEFAULT;
  return {
    requestTimeoutMs,
    keepAliveTimeoutMs: deps.keepAliveTimeoutMs ?? KEEP_ALIVE_TIMEOUT_MS_DEFAULT,
    connectionTimeoutMs: requestTimeoutMs + (deps.waitMs ?? API_WAIT_MS_DEFAULT) + 10_000,
    // Node checks request deadlines every this often (its default of 30 s would let a
    // 30 s timeout fire at up to 60 s)
    checkIntervalMs: Math.min(1_000, requestTimeoutMs),
  };
}

const isWriteTo = (method: string | string[], url: string) => bucketOf(method, url) === 'writes';

/**
 * What the app itself may answer on a route, whatever its handler does: a write may
 * be too large (413), of a media type other than JSON (415); any /v1 request may be
 * over its rate limit (429), not wholly arrive in time (408) or meet PostgreSQL or
 * Temporal down (503); a path parameter longer than the router takes is 414.
 */
function appStatuses(method: string | string[], url: string): Record<number, typeof ErrorBody> {
  const v1 = bucketOf(method, url) !== undefined;
  const statuses = [...(isWriteTo(method, url) ? [413, 415] : []), ...(v1 ? [408, 429, 503] : []), ...(url.includes('/:') ? [414] : [])];
  return Object.fromEntries(statuses.map((status) => [status, ErrorBody]));
}

/** What each status means on any route, for a response that does not say it itself. */
const STATUS_TEXT: Record<number, string> = {
  200: 'OK',
  201: 'Created',
  202: 'Accepted, still running: the body names the status URL to read its outcome from',
  400: 'The request does not fit the schema: `error.param` names the field',
  401: 'No key, or a key Sluice does not know',
  403: 'The key may not do this',
  404: 'Nothing by that id or ref',
  409: "Conflicts with what exists: another request's idempotency key or ref, or the resource's state",
  413: 'The body is larger than the API accepts',
  414: 'A path parameter is longer than the router accepts',
  415: 'The body is not JSON (send Content-Type: application/json)',
  422: "Refused by the ledger's rules (funds, limits, currencies)",
  408: 'The request did not wholly arrive in time (SLUICE_REQUEST_TIMEOUT_MS): send it again',
  429: 'Too many reads or writes from this caller (each counted apart): retry after Retry-After seconds',
  503: 'PostgreSQL or Temporal is unavailable for a moment: retry after Retry-After seconds, with the same idempotency key',
};

/** Each response schema with its status's sentence, unless it carries its own description. */
function describedResponses(responses: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(
    Object.entries(responses).map(([status, schema]) => {
      const text = STATUS_TEXT[Number(status)];
      const zod = schema as { description?: string; describe?: (d: string) => unknown };
      return [status, text && typeof zod.describe === 'function' && !zod.description ? zod.describe(text) : schema];
    }),
  );
}

/** SLUICE_TRUST_PROXY as Fastify takes it: a hop count is the hops nearest the API, addresses are themselves. */
const trustedProxies = (trust: number | string[]) => (typeof trust === 'number' ? (_address: string, hop: number) => hop < trust : trust);

export type Api = FastifyInstance<any, any, any, any, ZodTypeProvider> & { deps: ApiDeps };

export async function buildApp(deps: ApiDeps): Promise<Api> {
  const timeouts = httpTimeouts(deps);
  const app = Fastify({
    loggerInstance: deps.logger,
    // behind a proxy (compose's gateway) the client's address is the one the proxy forwards
    ...(deps.trustProxy !== undefined && { trustProxy: trustedProxies(deps.trustProxy) }),
    bodyLimit: deps.bodyLimitBytes,
    requestTimeout: timeouts.requestTimeoutMs,
    connectionTimeout: timeouts.connectionTimeoutMs,
    keepAliveTimeout: timeouts.keepAliveTimeoutMs,
    http: { connectionsCheckingInterval: timeouts.checkIntervalMs, headersTimeout: timeouts.requestTimeoutMs, requestTimeout: timeouts.requestTimeoutMs },
    // ids in paths (accounts, payment refs) run to 128 characters; the router's default
    // of 100 would refuse valid ones before the schemas see them
    routerOptions: { maxParamLength: 256 },
    // the router's own refusals (a malformed %-escape, an overlong path segment) leave in the same error shape
    frameworkErrors: errorHandler,
    // and Node's HTTP parser's refusals, before any route
    clientErrorHandler,
    // every request has an id: in its log lines, its X-Request-Id header and any error body
    genReqId: requestIdOf,
    logController: new LogController({ requestIdLogLabel: 'requestId' }),
  }).withTypeProvider<ZodTypeProvider>() as Api;
  // first of all hooks, so a refusal by any later one (a 401, a 429) carries it too
  app.addHook('onRequest', async (req, reply) => {
    reply.header('x-request-id', req.id);
  });
  app.decorate('deps', deps);
  // Security headers on every response, before any hook that may refuse (a 401, a 429,
  // a 404): the CSP above, framing refused twice over (frame-ancestors and
  // X-Frame-Options for older browsers), nosniff and no Referer. HSTS is left to the
  // TLS terminator in front, which knows the domain's policy.
  await app.register(fastifyHelmet, {
    global: true,
    contentSecurityPolicy: { useDefaults: false, directives: CSP_DIRECTIVES },
    frameguard: { action: 'deny' },
    referrerPolicy: { policy: 'no-referrer' },
    strictTransportSecurity: false,
  });
  // Fastify validates a missing body as null: as undefined instead, so a body schema's
  // default (a cancel's `{}`) applies to a request that sent none (see the JSON parser below)
  app.setValidatorCompiler((route) => {
    const validate = validatorCompiler(route as Parameters<typeof validatorCompiler>[0]);
    return route.httpPart === 'body' ? (data: unknown) => validate(data === null ? undefined : data) : validate;
  });
  app.setSerializerCompiler(serializerCompiler);
  app.setErrorHandler(errorHandler);
  app.setNotFoundHandler(notFoundHandler);
  app.decorateRequest('actor', null as never);

  // Two buckets per caller, writes and reads, each over every route of its kind together,
  // counted in PostgreSQL so that every API process enforces one limit (rateLimits.ts)
  const limits = rateLimitsOf(deps);
  // A store that cannot reach PostgreSQL lets the request through (skipOnError): whatever it
  // asks of the ledger then meets the same outage and is answered 503, and what needs no
  // database (a refused key's 401) is answered as ever
  await app.register(fastifyRateLimit, { global: false, skipOnError: true, store: postgresRateStore(deps.pool, deps.logger) });
  const limiters = Object.fromEntries(
    (['writes', 'reads'] as const).map((bucket) => {
      const limit = limits[bucket];
      const limiter = app.rateLimit({
        max: limit.max,
        timeWindow: limit.windowMs,
        keyGenerator: (req) => bucketKey(bucket, limit, callerOf(req)),
        errorResponseBuilder: (_req, ctx) => overLimit(bucket, limit, ctx.ttl),
      });
      return [bucket, limiter];
    }),
  ) as Record<Bucket, ReturnType<typeof app.rateLimit>>;
  // and the OpenAPI document says so (before @fastify/swagger reads the routes): the
  // statuses the app answers around any handler, and a sentence for every status
  app.addHook('onRoute', (route) => {
    if (!route.schema?.response) return;
    const schema = { ...route.schema, response: describedResponses({ ...appStatuses(route.method, route.url), ...(route.schema.response as object) }) };
    route.schema = withExample(`${route.method} ${route.url}`, schema);
  });
  const authenticate = createAuthenticator(deps.pool, deps.adminKey);
  // The limiter runs after authentication, so it counts writes per party; a request
  // whose key is refused still counts (against its IP address) before its 401, which
  // bounds key guessing. Both run before the body is read: a refused write costs no
  // parsing, starts nothing and uses no idempotency key.
  app.addHook('onRequest', async (req, reply) => {
    const refused = await authenticate(req).then(() => undefined, (error: unknown) => error);
    const bucket = bucketOf(req.method, req.url);
    if (bucket) await limiters[bucket].call(app, req, reply);
    if (refused) throw refused;
  });

  // A request that sends no body, an empty JSON one or JSON null sends none: a route whose
  // body schema defaults to `{}` (every field optional: a cancel, a refund of what is
  // left, a subaccount creation) takes it as `{}`, and any other route refuses the
  // missing body (400) before it changes anything.
  app.removeContentTypeParser('application/json');
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) =>
    body === '' ? done(null, undefined) : parseJson(req, body as string, done),
  );

  const metrics = createMetrics(deps.pool);
  app.addHook('onResponse', async (req, reply) => {
    const route = req.routeOptions.url ?? 'unmatched';
    metrics.httpRequests.inc({ method: req.method, route, status: String(reply.statusCode) });
    metrics.httpDuration.observe({ method: req.method, route }, reply.elapsedTime / 1000);
  });

  // the docs UI's own routes are public
  app.addHook('onRoute', (route) => {
    if (!route.url.startsWith('/docs')) return;
    // and their own CSP (set in config, where @fastify/helmet reads a route's options)
    route.config = { ...(route.config as object), auth: 'public', helmet: { contentSecurityPolicy: { useDefaults: false, directives: DOCS_CSP_DIRECTIVES } } } as typeof route.config;
  });

  await app.register(fastifySwagger, {
    openapi: {
      info: { title: 'Sluice API', version: '0.1.0', description: 'Per-tick payments between machines, over a double-entry ledger.' },
      components: { securitySchemes: { apiKey: { type: 'http', scheme: 'bearer' } } },
      security: [{ apiKey: [] }],
    },
    transform: jsonSchemaTransform,
  });
  await app.register(fastifySwaggerUi, { routePrefix: '/docs', uiConfig: { docExpansion: 'list' } });

  // a first request to the server's root finds where everything is, not a 401: a
  // browser is sent to the console, a program gets the index
  app.get('/', { config: { auth: 'public' }, schema: { hide: true } }, async (req, reply) => {
    if (/\btext\/html\b/.test(req.headers.accept ?? '')) return reply.redirect('/console/', 302);
    return {
    name: 'sluice',
    api: '/v1 (Authorization: Bearer <key>)',
    docs: '/docs',
    openapi: '/openapi.json',
    console: '/console/',
    health: '/healthz',
    metrics: '/metrics',
    errors: '/errors',
    };
  });
  app.get('/errors', { config: { auth: 'public' }, schema: { hide: true } }, async (_req, reply) =>
    reply.type('text/html; charset=utf-8').send(errorReferenceHtml(statusOfCode)),
  );
  app.get('/healthz', { config: { auth: 'public' }, schema: { hide: true } }, async () => {
    await deps.pool.query('select 1');
    return { status: 'ok' };
  });
  // no API key: /metrics takes its own token, checked by its own hook
  app.get('/metrics', { config: { auth: 'public' }, schema: { hide: true }, onRequest: metricsAccess(deps.metricsToken) }, async (_req, reply) => {
    reply.header('content-type', metrics.registry.contentType);
    return metrics.registry.metrics();
  });
  app.get('/openapi.json', { config: { auth: 'public' }, schema: { hide: true } }, async () => app.swagger());

  ledgerRoutes(app);
  partyRoutes(app);
  keyRoutes(app);
  paymentRoutes(app);
  streamRoutes(app);
  streamControlRoutes(app);
  operatorRoutes(app);
  reconcileRoutes(app);
  jobRoutes(app);
  sessionRoutes(app);
  entityRoutes(app);
  rateRoutes(app);
  await consoleRoutes(app);
  return app;
}
