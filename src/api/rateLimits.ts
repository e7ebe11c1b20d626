import type { FastifyRequest } from 'fastify';
import type { Pool } from '../db/pool';
import { countHits, pruneRateWindows } from '../db/rateWindows';
import { SluiceError } from '../domain/errors';
import { READ_RATE_MAX_DEFAULT, READ_RATE_WINDOW_MS_DEFAULT, WRITE_RATE_MAX_DEFAULT, WRITE_RATE_WINDOW_MS_DEFAULT } from '../domain/settings';

/*
 * The API's rate limits, counted in PostgreSQL (src/db/rateWindows.ts) so that every
 * API process enforces one limit: @fastify/rate-limit decides and answers (429 with
 * Retry-After and the x-ratelimit-* headers), this module is its store. Writes and
 * reads are two buckets per caller; a batch counts each of its items as a write.
 */

export interface RateLimit {
  max: number;
  windowMs: number;
}

export type Bucket = 'writes' | 'reads';

/** The limits an app runs with: its settings, else the defaults. */
export const rateLimitsOf = (deps: { writeRate?: RateLimit; readRate?: RateLimit }): Record<Bucket, RateLimit> => ({
  writes: deps.writeRate ?? { max: WRITE_RATE_MAX_DEFAULT, windowMs: WRITE_RATE_WINDOW_MS_DEFAULT },
  reads: deps.readRate ?? { max: READ_RATE_MAX_DEFAULT, windowMs: READ_RATE_WINDOW_MS_DEFAULT },
});

/** The bucket a request counts in: non-GET /v1 requests are writes, GET /v1 requests reads; the rest (health, metrics, docs, the console's files) none. */
export function bucketOf(method: string | string[], url: string): Bucket | undefined {
  if (!url.startsWith('/v1/')) return undefined;
  return method === 'GET' || method === 'HEAD' ? 'reads' : 'writes';
}

/** Whom a request counts against: its party, the admin, or (no valid key) its IP address. */
export const callerOf = (req: FastifyRequest) => (!req.actor ? `ip:${req.ip}` : req.actor.kind === 'admin' ? 'admin' : `party:${req.actor.party}`);

/**
 * A caller's bucket, under the limit it is counted against: processes running the same
 * limits share a window, and a limit changed by a deploy starts afresh.
 */
export const bucketKey = (bucket: Bucket, limit: RateLimit, caller: string) => `${bucket}/${limit.max}/${limit.windowMs}/${caller}`;

type Counted = { current: number; ttl: number };

/** Windows begun longer ago than this are dropped: longer than any window (SLUICE_*_RATE_WINDOW_MS are at most an hour). */
const RATE_WINDOWS_KEPT_MS = 2 * 3_600_000;
/** How many counted requests between two prunes, in each API process. */
const PRUNE_EVERY = 10_000;

/**
 * @fastify/rate-limit's store over PostgreSQL: the plugin constructs it and asks it to
 * count each request; the window's length comes with each call. Every PRUNE_EVERY
 * requests the process drops the windows of callers gone quiet (addresses seen once
 * would otherwise stay), without the request waiting for it.
 */
export function postgresRateStore(pool: Pool, log?: { warn(o: object, msg: string): void }) {
  let counted = 0;
  return class PostgresRateStore {
    incr(key: string, done: (error: Error | null, counted?: Counted) => void, timeWindow: number): void {
      if (++counted % PRUNE_EVERY === 0) pruneRateWindows(pool, RATE_WINDOWS_KEPT_MS).catch((error: unknown) => log?.warn({ err: error }, 'rate window prune failed'));
      countHits(pool, key, timeWindow, 1).then(
        ({ hits, ttlMs }) => done(null, { current: hits, ttl: ttlMs }),
        (error: Error) => done(error),
      );
    }

    child(): PostgresRateStore {
      return this;
    }
  };
}

/** The refusal of a caller over a limit, in the one error shape (Retry-After comes from details.retryAfterSeconds). */
export const overLimit = (bucket: Bucket, limit: RateLimit, ttlMs: number) =>
  new SluiceError('rate_limited', `too many ${bucket}: at most ${limit.max} per ${limit.windowMs} ms per caller; retry in ${Math.ceil(ttlMs / 1000)} s`, {
    limit: limit.max,
    windowMs: limit.windowMs,
    retryAfterSeconds: Math.max(1, Math.ceil(ttlMs / 1000)),
  });

/**
 * Counts the writes a request carries beyond the one the limiter counted on arrival
 * (a batch's other items), refusing it, before it changes anything, when they take
 * the caller over the limit.
 */
export async function chargeWrites(pool: Pool, req: FastifyRequest, limit: RateLimit, writes: number): Promise<void> {
  if (writes <= 0) return;
  const { hits, ttlMs } = await countHits(pool, bucketKey('writes', limit, callerOf(req)), limit.windowMs, writes);
  if (hits > limit.max) throw overLimit('writes', limit, ttlMs);
}
