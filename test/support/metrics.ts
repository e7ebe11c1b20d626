import type { TestStack } from './stack';

/** The app's /metrics, Prometheus text → sample value by full series (`name{labels}`). */
export async function scrapeMetrics(app: TestStack['app']): Promise<Map<string, number>> {
  const res = await app.inject({ method: 'GET', url: '/metrics' });
  if (res.statusCode !== 200) throw new Error(`GET /metrics: ${res.statusCode} ${res.body.slice(0, 200)}`);
  const samples = new Map<string, number>();
  for (const line of res.body.split('\n')) {
    const m = /^([a-z_:][a-z0-9_:]*(?:\{[^}]*\})?) (\S+)$/.exec(line);
    if (m) samples.set(m[1]!, Number(m[2]));
  }
  return samples;
}
