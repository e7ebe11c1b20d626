import { runAudit } from '../../src/audit';
import { BILLING_ROWS_MAX_DEFAULT } from '../../src/domain/billing';
import { streamWorkflowId } from '../../src/domain/streams';
import { getAccount } from '../../src/ledger/accounts';
import { testParties } from '../support/parties';
import { ADMIN_KEY, api, startTestStack, type TestStack } from '../support/stack';

/**
 * A long stream stays cheap: its workflow's history does not grow with its ticks,
 * because the billing clock bills them. Here 10,000 one-second ticks come due at
 * once (the stream's opening is moved back 10,000 s, as if every tick had fallen
 * due during an outage): the clock bills them in bounded batches of
 * BILLING_ROWS_MAX_DEFAULT, exactly once each, the stream completes at maxTotal and
 * its workflow closes it with a history of a few events.
 */
const TICKS = Number(process.env.SLUICE_LONG_TICKS ?? 10_000);
/** Open, tick 1, the clock's wake, the halt signal, the close: a few workflow tasks, whatever the length. */
const STREAM_EVENTS_MAX = 40;

let stack: TestStack;
const parties = testParties(() => stack);

beforeAll(async () => {
  stack = await startTestStack();
  await parties.party('alice', TICKS);
  await parties.party('bob');
});
afterAll(() => stack?.stop());

test(`${TICKS} ticks that came due at once are billed exactly once each in bounded batches; the stream completes at maxTotal with a short history`, async () => {
  const opened = await api(stack.app, ADMIN_KEY).post('/v1/streams', { ref: 'long', fromAccountId: 'alice.w', toAccountId: 'bob.w', ratePerTick: 1, maxTotal: TICKS, tickIntervalMs: 1_000 });
  expect(opened.body).toMatchObject({ status: 'STREAMING', ticks: 1, totalPaid: 1 });
  await stack.db.pool.query(`update streams set opened_at = opened_at - $1 * interval '1 second' where ref = 'long'`, [TICKS]);

  const receipt = await stack.client.workflow.getHandle(streamWorkflowId('long')).result();
  expect(receipt).toMatchObject({ ref: 'long', status: 'CONFIRMED', reason: 'completed', closedBy: 'system', ticks: TICKS, totalPaid: TICKS });

  const { rows: [t] } = await stack.db.pool.query(
    `select count(*)::int as n, count(distinct tick)::int as distinct_ticks, min(tick) as first, max(tick) as last, sum(amount)::bigint as total,
            count(distinct billed_at)::int as commits
       from stream_ticks where stream_ref = 'long'`,
  );
  expect({ n: t.n, distinct: t.distinct_ticks, first: t.first, last: t.last, total: Number(t.total) }).toEqual({ n: TICKS, distinct: TICKS, first: 1, last: TICKS, total: TICKS });
  // bounded batches: no transaction billed more than BILLING_ROWS_MAX_DEFAULT ticks of it, and far fewer transactions than ticks
  const { rows: [b] } = await stack.db.pool.query(`select max(n)::int as largest from (select count(*) as n from stream_ticks where stream_ref = 'long' group by billed_at) x`);
  expect(b.largest).toBeLessThanOrEqual(BILLING_ROWS_MAX_DEFAULT);
  expect(t.commits).toBeLessThan(TICKS / 10);
  expect(await getAccount(stack.db.pool, 'bob.w')).toMatchObject({ balance: TICKS, held: 0 });
  expect(await getAccount(stack.db.pool, 'alice.w')).toMatchObject({ balance: 0, held: 0 });
  expect((await runAudit(stack.db.pool)).checks.filter((c) => !c.ok)).toEqual([]);

  const events = (await stack.client.workflow.getHandle(streamWorkflowId('long')).fetchHistory()).events ?? [];
  expect(events.length).toBeLessThan(STREAM_EVENTS_MAX);
  expect(events.filter((e) => e.timerStartedEventAttributes)).toEqual([]);
  console.log(`long stream: ${TICKS} ticks in ${t.commits} billing transactions (largest ${b.largest}); stream history ${events.length} events`);
}, 300_000);
