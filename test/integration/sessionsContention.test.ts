import { runAudit } from '../../src/audit';
import { DEFAULT_TIER_BUDGETS, type GrantView, type Tier } from '../../src/domain/grants';
import { prng } from '../../src/domain/simulation';
import { ADMIN_KEY, api, startTestStack, type TestStack } from '../support/stack';

/**
 * Contention: 200 session requests from 10 sessions of 5 payers sent at once through
 * the API against one pool of 600 units, with estimates, actual costs and failures
 * drawn from a seed. The pool binds (demand is several times its size) and so do the
 * tier budgets; two sessions are funded too thinly to pay every charge. Afterwards:
 * the pool never went below zero and ends with nothing held, no payer's day used more
 * than its budget, every session's balance is its funding less what its requests were
 * charged, every refused request reserved nothing, and the auditor is green.
 */
const POOL_SEED = 600;
const SESSIONS_PER_PAYER = 2;
const REQUESTS_PER_SESSION = 20;
const FUNDS = 100_000;
const PAYERS: Array<{ id: string; tier: Tier }> = [
  { id: 'c-est', tier: 'established' },
  { id: 'c-tru1', tier: 'trusted' },
  { id: 'c-tru2', tier: 'trusted' },
  { id: 'c-elite', tier: 'elite' },
  { id: 'c-new', tier: 'new' },
];

let stack: TestStack;
let admin: ReturnType<typeof api>;
const keys: Record<string, string> = {};
const as = (party: string) => api(stack.app, keys[party]);

const rand = prng(Number(process.env.CONTENTION_SEED ?? 20240619));
const between = (lo: number, hi: number) => lo + Math.floor(rand() * (hi - lo + 1));

interface Plan {
  payer: string;
  sessionId: string;
  requestId: string;
  estimatedCost: number;
  simulate: { actualCost: number; failTimes?: 'always'; durationMs: number };
}

const sessions = PAYERS.flatMap((p, i) =>
  Array.from({ length: SESSIONS_PER_PAYER }, (_, n) => ({
    payer: p.id,
    sessionId: `cs-${p.id}-${n}`,
    // the first session of the first and last payers is thin: its later charges are refused
    amount: n === 0 && (i === 0 || i === PAYERS.length - 1) ? 150 : 5_000,
  })),
);

const plans: Plan[] = sessions.flatMap((s) =>
  Array.from({ length: REQUESTS_PER_SESSION }, (_, r) => {
    const estimatedCost = between(5, 60);
    const fails = rand() < 0.05;
    return {
      payer: s.payer,
      sessionId: s.sessionId,
      requestId: `r${r}`,
      estimatedCost,
      simulate: { actualCost: Math.max(1, Math.round((estimatedCost * between(70, 130)) / 100)), ...(fails && { failTimes: 'always' as const }), durationMs: between(0, 200) },
    };
  }),
);

beforeAll(async () => {
  stack = await startTestStack({ poolSeedUnits: POOL_SEED, waitMs: 90_000 });
  admin = api(stack.app, ADMIN_KEY);
  for (const p of PAYERS) {
    keys[p.id] = (await admin.post('/v1/parties', { id: p.id, name: p.id })).body.apiKey;
    await as(p.id).post('/v1/accounts', { id: `${p.id}.w` });
    await admin.post('/v1/deposits', { accountId: `${p.id}.w`, amount: FUNDS }, `fund-${p.id}`);
    expect((await admin.post(`/v1/parties/${p.id}/tier`, { tier: p.tier })).status).toBe(200);
  }
  for (const s of sessions) expect((await as(s.payer).post('/v1/sessions', { sessionId: s.sessionId, accountId: `${s.payer}.w`, amount: s.amount })).status).toBe(201);
});
afterAll(() => stack.stop());

test('200 concurrent requests over 10 sessions against one pool: pool never negative, no payer over its budget, every balance its funding less its charges, refusals reserve nothing, the auditor green', async () => {
  expect(plans).toHaveLength(200);
  const answers = await Promise.all(
    plans.map((p) => as(p.payer).post(`/v1/sessions/${p.sessionId}/requests`, { requestId: p.requestId, estimatedCost: p.estimatedCost, work: { description: 'contended', simulate: p.simulate } })),
  );
  const statuses = answers.map((a) => a.status);
  expect(statuses.filter((s) => s !== 201 && s !== 422)).toEqual([]);
  const refused = plans.filter((_, i) => answers[i]!.status === 422);
  for (const [i, a] of answers.entries()) if (a.status === 422) expect(a.body.error.code).toBe('insufficient_funds'), expect(a.body.error.details.sessionId).toBe(plans[i]!.sessionId);
  const grants = answers.filter((a) => a.status === 201).map((a) => a.body as GrantView);

  // every request ended: settled, or failed and compensated
  for (const [i, g] of grants.entries()) {
    expect(['settled', 'failed']).toContain(g.status);
    expect(g.absorbed).toBeLessThanOrEqual(g.reserved); // never more than the estimate's grant
    expect(g.reserved + g.paid).toBe(g.estimatedCost);
    if (g.status === 'failed') expect({ request: i, ...g }).toMatchObject({ absorbed: 0, returned: g.reserved, refunded: g.paid });
  }
  const modes = new Set(grants.map((g) => g.decision));
  expect([...modes].sort()).toEqual(['free', 'gate', 'partial']);
  expect(refused.length).toBeGreaterThan(0);
  expect(grants.filter((g) => g.status === 'failed').length).toBeGreaterThan(0);

  // refused requests left nothing: no grant, no hold
  for (const p of refused) {
    const { rows } = await stack.db.pool.query(`select count(*)::int as n from grants where session_id = $1 and request_id = $2`, [p.sessionId, p.requestId]);
    expect(rows[0].n).toBe(0);
  }

  // the pool: never negative (each stripe's CHECK), nothing held once all settled, and exactly its seed − absorbed + credited
  const pool = (await admin.get('/v1/pool')).body;
  const absorbed = grants.reduce((s, g) => s + g.absorbed, 0);
  const credited = grants.reduce((s, g) => s + g.credited, 0);
  expect(pool).toMatchObject({ held: 0, balance: POOL_SEED - absorbed + credited });
  expect(pool.available).toBeGreaterThanOrEqual(0);
  expect(absorbed).toBeGreaterThan(0);
  const { rows: stripes } = await stack.db.pool.query(`select min(balance - held)::bigint as least from accounts where kind = 'pool'`);
  expect(Number(stripes[0].least)).toBeGreaterThanOrEqual(0);

  // no payer over its daily budget
  const { rows: used } = await stack.db.pool.query<{ payer: string; used: number; budget: number }>(
    `select payer, sum(reserved - returned)::bigint as used, max(budget)::bigint as budget from grants where day is not null group by payer, day`,
  );
  for (const u of used) expect(Number(u.used)).toBeLessThanOrEqual(DEFAULT_TIER_BUDGETS[PAYERS.find((p) => p.id === u.payer)!.tier]);

  // each session: its balance is its funding less what its requests were charged
  for (const s of sessions) {
    const charged = grants.filter((g) => g.sessionId === s.sessionId).reduce((sum, g) => sum + g.paid - g.refunded, 0);
    const view = (await as(s.payer).get(`/v1/sessions/${s.sessionId}`)).body;
    expect(view).toMatchObject({ funded: s.amount, balance: s.amount - charged, debited: charged, totals: { running: 0 } });
    expect(view.balance).toBeGreaterThanOrEqual(0);
  }

  // closing every session gives each payer back what its sessions were not charged
  await Promise.all(sessions.map((s) => as(s.payer).post(`/v1/sessions/${s.sessionId}/close`)));
  for (const p of PAYERS) {
    const charged = grants.filter((g) => g.payer === p.id).reduce((sum, g) => sum + g.paid - g.refunded, 0);
    expect((await admin.get(`/v1/accounts/${p.id}.w`)).body).toMatchObject({ balance: FUNDS - charged, held: 0 });
  }
  const report = await runAudit(stack.db.pool);
  expect(report.checks.filter((c) => !c.ok)).toEqual([]);
});
