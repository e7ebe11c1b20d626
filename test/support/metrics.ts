import { TICK_LAG_BUCKETS_SECONDS } from '../../src/api/ledgerMetrics';
import type { Queryable } from '../../src/db/pool';
import { METRICS_TOKEN, type TestStack } from './stack';

/** The headers a scrape sends: the metrics token, as Prometheus does. */
export const METRICS_AUTH = { authorization: `Bearer ${METRICS_TOKEN}` };

/** The app's /metrics as Prometheus reads it (with the token): its text. */
export async function scrapeText(app: TestStack['app']): Promise<string> {
  const res = await app.inject({ method: 'GET', url: '/metrics', headers: METRICS_AUTH });
  if (res.statusCode !== 200) throw new Error(`GET /metrics: ${res.statusCode} ${res.body.slice(0, 200)}`);
  return res.body;
}

/** The app's /metrics, Prometheus text → sample value by full series (`name{labels}`). */
export async function scrapeMetrics(app: TestStack['app']): Promise<Map<string, number>> {
  return samplesOf(await scrapeText(app));
}

/** Prometheus text → sample value by full series (`name{labels}`). */
export function samplesOf(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^([a-z_:][a-z0-9_:]*(?:\{[^}]*\})?) (\S+)$/.exec(line);
    if (m) samples.set(m[1]!, Number(m[2]));
  }
  return samples;
}

/**
 * The business figures of /metrics as the rows they count say they are, by counting
 * the rows (what a scrape did before migration 029): the truth the ledger's counters
 * must equal. Series named as /metrics names them; every label set, zeros included.
 */
export async function figuresFromRows(db: Queryable): Promise<Map<string, number>> {
  const figures = new Map<string, number>();
  const one = async <T>(sql: string, values: unknown[] = []) => (await db.query(sql, values)).rows as T[];
  const [ticks] = await one<{ n: string }>('select count(*) as n from stream_ticks');
  figures.set('sluice_ticks_billed_total', Number(ticks!.n));
  const buckets = TICK_LAG_BUCKETS_SECONDS.map((_, i) => `count(*) filter (where lag <= $${i + 1}) as b${i}`).join(', ');
  const [lag] = await one<Record<string, string>>(
    `select ${buckets}, count(*) as n, coalesce(sum(lag), 0) as total
       from (select greatest(0, extract(epoch from billed_at - due_at)) as lag from stream_ticks where due_at is not null) l`,
    TICK_LAG_BUCKETS_SECONDS,
  );
  TICK_LAG_BUCKETS_SECONDS.forEach((le, i) => figures.set(`sluice_tick_lag_seconds_bucket{le="${le}"}`, Number(lag![`b${i}`])));
  figures.set('sluice_tick_lag_seconds_bucket{le="+Inf"}', Number(lag!.n));
  figures.set('sluice_tick_lag_seconds_count', Number(lag!.n));
  figures.set('sluice_tick_lag_seconds_sum', Number(lag!.total));
  for (const r of await one<{ mode: string; kind: string; n: string }>(
    `select m.mode, k.kind, count(s.ref) as n
       from (values ('escrow'), ('payg')) m(mode) cross join (values ('direct'), ('distribution')) k(kind)
       left join streams s on s.status = 'open' and s.mode = m.mode and s.kind = k.kind
      group by 1, 2`,
  )) {
    figures.set(`sluice_open_streams{mode="${r.mode}",kind="${r.kind}"}`, Number(r.n));
  }
  for (const r of await one<{ failed_step: string; release_collateral: string; unfund: string; mark_failed: string }>(
    `select coalesce(s.failed_step, 'unknown') as failed_step,
            count(*) filter (where h.status = 'released') as release_collateral, count(t.id) as unfund, count(*) as mark_failed
       from subaccounts s
       left join holds h on h.id = s.hold_id
       left join transfers t on t.idempotency_key = 'sub:' || s.id || ':unfund'
      where s.status = 'failed'
      group by 1`,
  )) {
    for (const c of ['release_collateral', 'unfund', 'mark_failed'] as const) figures.set(`sluice_saga_compensations_total{compensation="${c}",failed_step="${r.failed_step}"}`, Number(r[c]));
  }
  const [hooks] = await one<{ attempts: string; failures: string }>('select count(*) as attempts, count(*) filter (where not ok) as failures from webhook_deliveries');
  figures.set('sluice_webhook_delivery_attempts_total', Number(hooks!.attempts));
  figures.set('sluice_webhook_delivery_failures_total', Number(hooks!.failures));
  for (const r of await one<{ mode: string; n: string }>(
    `select m.mode, count(g.job_id) as n from (values ('free'), ('partial'), ('gate')) m(mode) left join grants g on g.decision = m.mode group by 1`,
  )) {
    figures.set(`sluice_grant_decisions_total{mode="${r.mode}"}`, Number(r.n));
  }
  return figures;
}

/**
 * /metrics' business figures beside the rows' truth, taken while nothing moved: the
 * rows counted before and after the scrape agree (bounded retries), so the scrape,
 * between them, must say the same. The lag sum is compared to the microsecond.
 */
export async function figuresBesideTruth(app: TestStack['app'], db: Queryable): Promise<{ served: Record<string, number>; truth: Record<string, number> }> {
  const round = (series: string, v: number) => (series.endsWith('_sum') ? Math.round(v * 1e6) : v);
  for (let attempt = 1; ; attempt++) {
    const before = await figuresFromRows(db);
    const scraped = await scrapeMetrics(app);
    const after = await figuresFromRows(db);
    const truth = Object.fromEntries([...after].map(([s, v]) => [s, round(s, v)]));
    if (JSON.stringify(Object.fromEntries([...before].map(([s, v]) => [s, round(s, v)]))) === JSON.stringify(truth) || attempt === 50) {
      return { served: Object.fromEntries([...after.keys()].map((s) => [s, round(s, scraped.get(s) ?? 0)])), truth };
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}
