/**
 * What the benches measure with: calls run with a bounded number in flight, each timed
 * if asked, and the percentiles and rates of what they took.
 */
import { performance } from 'node:perf_hooks';

/** Nearest-rank percentile of unsorted values; NaN for none. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

export interface Quantiles {
  p50: number;
  p99: number;
  max: number;
  count: number;
}

export const quantiles = (values: number[]): Quantiles => ({
  p50: percentile(values, 50),
  p99: percentile(values, 99),
  max: values.length ? Math.max(...values) : Number.NaN,
  count: values.length,
});

/** Calls over a span of time: how many, how fast, and what each took from sent to answered. */
export interface Rate {
  count: number;
  seconds: number;
  perSecond: number;
  latencyMs: Quantiles;
}

export const rateOf = (latenciesMs: number[], seconds: number): Rate => ({
  count: latenciesMs.length,
  seconds,
  perSecond: latenciesMs.length / seconds,
  latencyMs: quantiles(latenciesMs),
});

/**
 * Runs `fn` over `items` with at most `limit` calls in flight; the results in the items'
 * order. The first failure (or an abort of `signal`) stops the lanes from taking more;
 * the calls already in flight are awaited before it is thrown, so nothing runs on
 * behind the report.
 */
export async function mapConcurrently<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>, signal?: AbortSignal): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  let failure: { error: unknown } | undefined;
  const lane = async () => {
    while (next < items.length && !failure && !signal?.aborted) {
      const i = next++;
      try {
        results[i] = await fn(items[i]!, i);
      } catch (error) {
        failure ??= { error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, lane));
  if (failure) throw failure.error;
  signal?.throwIfAborted();
  return results;
}

/** mapConcurrently with each call timed (ms), and the seconds the whole run took. */
export async function timeConcurrently<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>, signal?: AbortSignal) {
  const started = performance.now();
  const results = await mapConcurrently(
    items,
    limit,
    async (item) => {
      const t = performance.now();
      return { value: await fn(item), ms: performance.now() - t };
    },
    signal,
  );
  return { results, seconds: (performance.now() - started) / 1000 };
}
