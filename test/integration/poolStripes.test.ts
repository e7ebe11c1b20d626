import { runAudit, WORKFLOWS_CHECK } from '../../src/audit';
import { DEFAULT_TIER_BUDGETS, utcDay, type GrantView, type JobRequest, type Tier } from '../../src/domain/grants';
import { prng } from '../../src/domain/simulation';
import { createAccount } from '../../src/ledger/accounts';
import { openGrant, payForGrant, releaseGrantReservation, settleGrant, setTier } from '../../src/ledger/grants';
import { grantHolds, jobsAccountTotals, poolTotals } from '../../src/ledger/pool';
import { deposit } from '../../src/ledger/transfers';
import { createTestDatabase, type TestDatabase } from '../support/db';

/**
 * The striped pool at the ledger, without Temporal: a pool of 6,000 units held as 4
 * stripes of 1,500. A reservation larger than any stripe spills; 1,000 concurrent
 * reservations from 50 payers, through one pg pool, ask for several times what the
 * pool holds, so the pool and the budgets both bind; then every grant is settled or
 * released at once. Each phase is checked against an oracle of its own: per payer in
 * commit order (reserved_at, taken under the payer's lock), per stripe, and in sum.
 */
const SEED = 6000;
const STRIPES = 4;
const PAYERS = 50;
const JOBS = 1000;
const day = utcDay(Date.now());
const budgets = DEFAULT_TIER_BUDGETS;

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase({ poolSeedUnits: SEED, poolStripes: STRIPES, durableCommits: false });
});
afterAll(() => db.drop());

async function payer(id: string, tier: Tier) {
  await db.pool.query('insert into parties (id, name) values ($1, $1)', [id]);
  await createAccount(db.pool, { id: `${id}.w`, ownerId: id, kind: 'user' });
  await deposit(db.pool, { key: `fund-${id}`, accountId: `${id}.w`, amount: 1_000_000 });
  await setTier(db.pool, id, tier);
}

const request = (jobId: string, payerId: string, estimatedCost: number): JobRequest => ({
  jobId,
  payer: payerId,
  payerAccountId: `${payerId}.w`,
  estimatedCost,
  requestHash: jobId,
  work: { description: 'pool stripes' },
  paymentTimeoutMs: 60_000,
});

const stripeRows = async () =>
  (await db.pool.query<{ id: string; balance: number; held: number }>(`select id, balance, held from accounts where kind = 'pool' order by id`)).rows;

async function auditGreen() {
  const report = await runAudit(db.pool);
  expect(report.checks.filter((c) => !c.ok && c.name !== WORKFLOWS_CHECK)).toEqual([]);
}

test('the seed is spread over the stripes: 4 of 1,500', async () => {
  expect(await stripeRows()).toEqual(['sluice.pool', 'sluice.pool.1', 'sluice.pool.2', 'sluice.pool.3'].map((id) => ({ id, balance: 1500, held: 0 })));
});

test('a reservation larger than any stripe spills across stripes, fullest first; settling captures across its holds in order and gives the rest back', async () => {
  await payer('big', 'elite');
  const big = { ...budgets, elite: 4000 }; // this payer's day covers all three
  // the first two fit one stripe each
  for (const jobId of ['spill-1', 'spill-2']) {
    expect(await openGrant(db.pool, { request: request(jobId, 'big', 1000), day, budgets: big })).toMatchObject({ decision: 'free', status: 'reserved', reserved: 1000 });
    expect((await grantHolds(db.pool, jobId)).map((h) => h.amount)).toEqual([1000]);
  }
  expect(await poolTotals(db.pool)).toMatchObject({ balance: SEED, held: 2000, available: SEED - 2000 });
  // a third of 1,800 cannot fit any stripe (at most 1,500 each): it spills, fullest first
  const g3 = await openGrant(db.pool, { request: request('spill-3', 'big', 1800), day, budgets: big });
  expect(g3).toMatchObject({ decision: 'free', status: 'reserved', reserved: 1800 });
  const spilled = await grantHolds(db.pool, 'spill-3');
  expect(spilled.length).toBeGreaterThan(1);
  expect(new Set(spilled.map((h) => h.accountId)).size).toBe(spilled.length);
  expect(spilled.map((h) => h.amount)).toEqual([...spilled.map((h) => h.amount)].sort((a, b) => b - a));
  expect(spilled.reduce((sum, h) => sum + h.amount, 0)).toBe(1800);

  // 1,700 absorbed: from its holds in order, the rest of the last one given back
  const s = await settleGrant(db.pool, { jobId: 'spill-3', actualCost: 1700 });
  expect(s).toMatchObject({ status: 'settled', absorbed: 1700, returned: 100, paid: 0 });
  const after = await grantHolds(db.pool, 'spill-3');
  expect(after.reduce((sum, h) => sum + h.captured, 0)).toBe(1700);
  expect(after.reduce((sum, h) => sum + h.released, 0)).toBe(100);
  expect(after.at(-1)!.released).toBe(100);
  expect(after.every((h) => h.status !== 'open')).toBe(true);
  // the other two given back whole
  await releaseGrantReservation(db.pool, 'spill-1');
  await releaseGrantReservation(db.pool, 'spill-2');
  expect(await poolTotals(db.pool)).toMatchObject({ balance: SEED - 1700, held: 0 });
  for (const st of await stripeRows()) expect(st.balance - st.held).toBeGreaterThanOrEqual(0);
  await auditGreen();
});

describe(`${JOBS} concurrent reservations from ${PAYERS} payers against a pool smaller than their demand`, () => {
  const payers = Array.from({ length: PAYERS }, (_, i) => ({ id: `p${String(i).padStart(2, '0')}`, tier: (i % 2 ? 'elite' : 'established') as Tier }));
  const random = prng(18);
  const jobs = Array.from({ length: JOBS }, (_, i) => request(`c${i}`, payers[Math.floor(random() * PAYERS)]!.id, 1 + Math.floor(random() * 30)));
  let poolBefore: number;
  let results: Array<{ opened: GrantView; final: GrantView }>;

  beforeAll(async () => {
    for (const p of payers) await payer(p.id, p.tier);
    poolBefore = (await poolTotals(db.pool)).available;
    // as the workflow runs them: opened, and paid at once when partial
    results = await Promise.all(
      jobs.map(async (r) => {
        const opened = await openGrant(db.pool, { request: r, day, budgets });
        return { opened, final: opened.decision === 'partial' ? await payForGrant(db.pool, { jobId: r.jobId, day, budgets }) : opened };
      }),
    );
  });

  test('every job was decided once; all three decisions were made', async () => {
    expect(results).toHaveLength(JOBS);
    expect(new Set(results.map((r) => r.opened.decision))).toEqual(new Set(['free', 'partial', 'gate']));
    const demand = jobs.reduce((sum, j) => sum + j.estimatedCost, 0);
    expect(demand).toBeGreaterThan(2 * poolBefore);
  });

  test("replayed per payer in commit order: no day over budget, and no grant short of what pool and budget allowed unless the pool was exhausted", async () => {
    const { rows } = await db.pool.query<{ job_id: string; payer: string; tier: Tier; estimated_cost: number; decision: string; advisory_absorb: number; reserved: number }>(
      `select job_id, payer, tier, estimated_cost, decision, advisory_absorb, reserved from grants where job_id like 'c%' and status = 'reserved' order by payer, reserved_at, job_id`,
    );
    const used = new Map<string, number>();
    const problems: string[] = [];
    let cutByPool = 0;
    for (const g of rows) {
      const budgetLeft = budgets[g.tier] - (used.get(g.payer) ?? 0);
      // a free job wants its estimate; a paid partial job at most its advisory
      const wanted = Math.min(g.decision === 'free' ? g.estimated_cost : g.advisory_absorb, budgetLeft);
      if (g.reserved > wanted) problems.push(`${g.job_id} reserved ${g.reserved}, wanted ${wanted}`);
      if (g.reserved < wanted) cutByPool++;
      used.set(g.payer, (used.get(g.payer) ?? 0) + g.reserved);
      if (used.get(g.payer)! > budgets[g.tier]) problems.push(`${g.payer} at ${used.get(g.payer)} of ${budgets[g.tier]}`);
    }
    expect(problems).toEqual([]);
    // the pool ran out: some grants were cut short by it, and then it held nothing more
    expect(cutByPool).toBeGreaterThan(0);
    expect(await poolTotals(db.pool)).toMatchObject({ available: 0 });
    // the budgets bound too: some established payer used its whole day
    expect([...used].some(([p, u]) => payers.find((x) => x.id === p)!.tier === 'established' && u === budgets.established)).toBe(true);
  });

  test('per stripe: never below zero, every hold on a stripe, the holds sum to what the grants reserved; the reservations spread over several stripes', async () => {
    const stripes = await stripeRows();
    for (const st of stripes) expect(st.balance - st.held).toBeGreaterThanOrEqual(0);
    const { rows } = await db.pool.query<{ account_id: string; held: number; reserved: number }>(
      `select h.account_id, sum(h.amount)::bigint as held, count(distinct gh.job_id)::int as jobs
         from grant_holds gh join holds h on h.id = gh.hold_id join grants g on g.job_id = gh.job_id
        where g.job_id like 'c%' group by h.account_id`,
    );
    expect(rows.length).toBeGreaterThan(1);
    const reserved = results.reduce((sum, r) => sum + r.final.reserved, 0);
    expect(rows.reduce((sum, r) => sum + r.held, 0)).toBe(reserved);
    expect(reserved).toBe(poolBefore);
    expect(stripes.reduce((sum, s) => sum + s.held, 0)).toBe(reserved);
    await auditGreen();
  });

  test('then all settled or released at once: each capture and release once, the pool is its seed − absorbed + credits, nothing held', async () => {
    const before = await poolTotals(db.pool);
    const jobsBefore = await jobsAccountTotals(db.pool);
    const reserved = results.filter((r) => r.final.status === 'reserved');
    const ended = await Promise.all(
      reserved.map((r, i) =>
        i % 7 === 0
          ? releaseGrantReservation(db.pool, r.final.jobId) // its work failed: compensated
          : settleGrant(db.pool, { jobId: r.final.jobId, actualCost: Math.max(0, r.final.estimatedCost + (i % 5) - 2) }),
      ),
    );
    const settled = ended.filter((g) => g.status === 'settled');
    const absorbed = settled.reduce((sum, g) => sum + g.absorbed, 0);
    const credited = settled.reduce((sum, g) => sum + g.credited, 0);
    expect(credited).toBeGreaterThan(0);
    expect(await poolTotals(db.pool)).toMatchObject({ balance: before.balance - absorbed + credited, held: 0 });
    for (const st of await stripeRows()) expect(st.balance - st.held).toBeGreaterThanOrEqual(0);
    // the jobs account (striped alike) took the absorbs and paid the credits and refunds
    const refunded = settled.reduce((sum, g) => sum + g.refunded, 0);
    expect(await jobsAccountTotals(db.pool)).toEqual({ balance: jobsBefore.balance + absorbed - credited - refunded, held: 0 });
    const { rows: twice } = await db.pool.query(`select idempotency_key from transfers where job_id like 'c%' group by 1 having count(*) > 1`);
    expect(twice).toEqual([]);
    await auditGreen();
  });
});
