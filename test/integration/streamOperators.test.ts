import { runAudit } from '../../src/audit';
import { streamWorkflowId } from '../../src/domain/streams';
import { billTick } from '../../src/ledger/streams';
import { joinDistribution, leaveDistribution } from '../../src/ledger/streamControls';
import { createAccount } from '../../src/ledger/accounts';
import { ADMIN_KEY, api, startTestStack, type TestStack } from '../support/stack';
import { sleep, testParties } from '../support/parties';

/**
 * Stream batches, operators acting for a payer, and distribution streams, end to
 * end on a real Temporal dev server, with exact balances; the auditor green at the end.
 */
let stack: TestStack;
let admin: ReturnType<typeof api>;
const { keys, as, party, account, untilTicks } = testParties(() => stack);
const q = async (sql: string, params: unknown[] = []) => (await stack.db.pool.query(sql, params)).rows;
const streamRow = async (ref: string) => (await q(`select * from streams where ref = $1`, [ref]))[0];
const splitsOf = (ref: string) =>
  q(`select tick, credit_account_id as account, amount from transfers where stream_ref = $1 and kind = 'stream_split' order by tick, credit_account_id`, [ref]);
const ticksOf = (ref: string) => q(`select tick, amount from stream_ticks where stream_ref = $1 order by tick`, [ref]);

beforeAll(async () => {
  stack = await startTestStack();
  admin = api(stack.app, ADMIN_KEY);
  // batch
  await party('alice', 10_000);
  await party('bob');
  await party('mallory', 1_000);
  await party('seller');
  // operators
  await party('pat', 10_000);
  await party('op');
  await party('op2');
  await party('stranger', 1_000);
  await party('shop');
  // distributions
  await party('dora', 100_000);
  for (const m of ['m1', 'm2', 'm3', 'm4', 'e1', 'e2', 'e3', 'r1', 'r2']) await party(m);
});
afterAll(() => stack?.stop());

describe('batch open/cancel', () => {
  const openItem = (ref: string, extra: Record<string, unknown> = {}) => ({
    op: 'open', ref, fromAccountId: 'alice.w', toAccountId: 'bob.w', ratePerTick: 5, maxTotal: 100, tickIntervalMs: 60_000, ...extra,
  });

  test('each item succeeds or fails on its own; the good ones really open and cancel; a repeat answers the same without charging again', async () => {
    // streams to cancel in the batch: alice's own, and mallory's (not alice's)
    expect((await as('alice').post('/v1/streams', { ref: 'b-pre', fromAccountId: 'alice.w', toAccountId: 'bob.w', ratePerTick: 7, maxTotal: 70, tickIntervalMs: 60_000 })).status).toBe(201);
    expect((await as('mallory').post('/v1/streams', { ref: 'b-mal', fromAccountId: 'mallory.w', toAccountId: 'seller.w', ratePerTick: 3, maxTotal: 30, tickIntervalMs: 60_000 })).status).toBe(201);
    expect(await account('alice.w')).toMatchObject({ balance: 10_000 - 7, held: 63 });

    const items = [
      openItem('b-1'),
      openItem('b-2', { ratePerTick: 4, maxTotal: 40, mode: 'payg' }),
      openItem('b-broke', { maxTotal: 50_000 }), // alice cannot fund the escrow
      { op: 'open', ref: 'b-bad', fromAccountId: 'alice.w', toAccountId: 'bob.w', ratePerTick: 0, tickIntervalMs: 300 }, // invalid
      { op: 'cancel', ref: 'b-nope' }, // unknown
      { op: 'cancel', ref: 'b-mal' }, // mallory's
      { op: 'cancel', ref: 'b-pre', reason: 'batch' },
      { op: 'cancel' }, // invalid: no ref
      { op: 'open', fromAccountId: 'alice.w', toAccountId: 'bob.w', ratePerTick: 1, maxTotal: 10, tickIntervalMs: 300 }, // invalid: a batch names its streams
    ];
    const res = await as('alice').post('/v1/streams/batch', { items });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ succeeded: 3, failed: 6 });
    const results = res.body.results;
    expect(results.map((r: any) => [r.index, r.op, r.status])).toEqual([
      [0, 'open', 201],
      [1, 'open', 201],
      [2, 'open', 422],
      [3, 'open', 400],
      [4, 'cancel', 404],
      [5, 'cancel', 404],
      [6, 'cancel', 200],
      [7, 'cancel', 400],
      [8, 'open', 400],
    ]);
    expect(results[8].body.error.message).toMatch(/ref/);
    expect(results[0].body).toMatchObject({ ref: 'b-1', status: 'STREAMING', payer: 'alice', payee: 'bob', ticks: 1, totalPaid: 5, mode: 'escrow' });
    expect(results[1].body).toMatchObject({ ref: 'b-2', status: 'STREAMING', ticks: 1, totalPaid: 4, mode: 'payg' });
    expect(results[2].body.error).toMatchObject({ code: 'insufficient_funds', details: { stream: { status: 'FAILED' } } });
    expect(results[3].body.error.code).toBe('invalid_request');
    expect(results[4].body.error.code).toBe('not_found');
    // mallory's stream, which alice may not see: not found, as a missing one
    expect(results[5].body.error.code).toBe('not_found');
    expect(results[6].body).toMatchObject({ ref: 'b-pre', status: 'CONFIRMED', reason: 'cancelled', closedBy: 'alice', ticks: 1, totalPaid: 7 });
    expect(results[7].body.error.code).toBe('invalid_request');

    // really opened / cancelled, and nothing else
    expect(await streamRow('b-1')).toMatchObject({ status: 'open', paid: 5, payer_account_id: 'alice.w', payee_account_id: 'bob.w' });
    expect(await streamRow('b-2')).toMatchObject({ status: 'open', paid: 4, hold_id: null });
    expect(await streamRow('b-broke')).toMatchObject({ status: 'failed', paid: 0 });
    expect(await streamRow('b-bad')).toBeUndefined();
    expect(await streamRow('b-pre')).toMatchObject({ status: 'closed', closed_by: 'alice', paid: 7 });
    expect(await streamRow('b-mal')).toMatchObject({ status: 'open' });
    expect((await as('mallory').get('/v1/streams/b-mal')).body).toMatchObject({ status: 'STREAMING' });
    // alice: b-pre paid 7 (escrow released), b-1 paid 5 (95 held), b-2 paid 4 (payg, no hold)
    const after = await account('alice.w');
    expect(after).toMatchObject({ balance: 10_000 - 7 - 5 - 4, held: 95 });
    expect((await account('bob.w')).balance).toBe(16);

    // the same batch again: the same streams, nothing charged twice
    const transfersBefore = (await q(`select count(*)::int as n from transfers`))[0].n;
    const again = await as('alice').post('/v1/streams/batch', { items });
    expect(again.status).toBe(200);
    const r2 = again.body.results;
    expect(r2[0]).toMatchObject({ status: 200, body: { ref: 'b-1', ticks: 1, totalPaid: 5, openedAt: results[0].body.openedAt } });
    expect(r2[1]).toMatchObject({ status: 200, body: { ref: 'b-2', ticks: 1, totalPaid: 4, openedAt: results[1].body.openedAt } });
    expect(r2[6]).toEqual({ ...results[6], body: results[6].body });
    expect(r2.slice(3, 6).map((r: any) => r.status)).toEqual([400, 404, 404]);
    // the failed open again: answered as the first time (422, the FAILED stream), nothing charged
    expect(r2[2]).toMatchObject({ status: 422, body: { error: { code: 'insufficient_funds', details: { stream: { ref: results[2].body.error.details.stream.ref, status: 'FAILED' } } } } });
    expect((await q(`select count(*)::int as n from transfers`))[0].n).toBe(transfersBefore);
    expect(await account('alice.w')).toEqual(after);

    // and batch-cancel the rest
    const close = await as('alice').post('/v1/streams/batch', { items: [{ op: 'cancel', ref: 'b-1' }, { op: 'cancel', ref: 'b-2' }] });
    expect(close.body).toMatchObject({ succeeded: 2, failed: 0 });
    const paid = close.body.results.reduce((s: number, r: any) => s + r.body.totalPaid, 0);
    expect(await account('alice.w')).toMatchObject({ balance: 10_000 - 7 - paid, held: 0 });
    await as('mallory').post('/v1/streams/b-mal/cancel', {});
  });

  test('a batch of 101 items or of none is refused as a whole', async () => {
    const before = await account('alice.w');
    const many = Array.from({ length: 101 }, (_, i) => openItem(`b-many-${i}`, { maxTotal: 5 }));
    const tooMany = await as('alice').post('/v1/streams/batch', { items: many });
    expect(tooMany.status).toBe(400);
    expect(tooMany.body.error.code).toBe('invalid_request');
    const none = await as('alice').post('/v1/streams/batch', { items: [] });
    expect(none.status).toBe(400);
    expect((await as('alice').post('/v1/streams/batch', {})).status).toBe(400);
    expect((await q(`select count(*)::int as n from streams where ref like 'b-many-%'`))[0].n).toBe(0);
    expect(await account('alice.w')).toEqual(before);
  });
});

describe('operators', () => {
  const opOpen = (ref: string, extra: Record<string, unknown> = {}) =>
    as('op').post('/v1/streams', { ref, fromAccountId: 'pat.w', toAccountId: 'shop.w', ratePerTick: 10, maxTotal: 600, tickIntervalMs: 250, ...extra });

  test('grant, list and who manages a party’s operators', async () => {
    const grant = await as('pat').post('/v1/parties/pat/operators', { operator: 'op', scopes: ['open', 'pause'], dailyLimit: 1000 });
    expect(grant.status).toBe(201);
    expect(grant.body).toMatchObject({ payer: 'pat', operator: 'op', scopes: ['open', 'pause'], dailyLimit: 1000, spentToday: 0 });
    expect(grant.body.revokedAt).toBeUndefined();
    expect((await as('pat').get('/v1/parties/pat/operators')).body.grants).toEqual([grant.body]);
    expect((await as('op').get('/v1/parties/op/operators?as=operator')).body.grants).toEqual([grant.body]);
    expect((await as('op').get('/v1/parties/op/operators')).body.grants).toEqual([]);
    // another party does not manage (or see) pat's operators: to it, pat's list is not found
    expect((await as('stranger').post('/v1/parties/pat/operators', { operator: 'stranger', dailyLimit: 10 })).status).toBe(404);
    expect((await as('op').post('/v1/parties/pat/operators', { operator: 'op', dailyLimit: 99_999 })).status).toBe(404);
    expect((await as('stranger').get('/v1/parties/pat/operators')).status).toBe(404);
    expect((await as('stranger').post('/v1/parties/pat/operators/op/revoke')).status).toBe(404);
    // no self-operator, no unknown operator, a limit is required
    expect((await as('pat').post('/v1/parties/pat/operators', { operator: 'pat', dailyLimit: 10 })).status).toBe(400);
    expect((await as('pat').post('/v1/parties/pat/operators', { operator: 'nobody', dailyLimit: 10 })).status).toBe(404);
    expect((await as('pat').post('/v1/parties/pat/operators', { operator: 'op' })).status).toBe(400);
    expect((await as('pat').get('/v1/parties/pat/operators')).body.grants).toEqual([grant.body]);
  });

  test('an operator opens, pauses and (once granted) cancels for the payer within its daily limit; all recorded', async () => {
    const o1 = await opOpen('o-1');
    expect(o1.status).toBe(201);
    expect(o1.body).toMatchObject({ ref: 'o-1', payer: 'pat', payee: 'shop', openedBy: 'op', ticks: 1, totalPaid: 10, maxTotal: 600 });
    // o-1 ticks every 250 ms from here on: pat's account is read with what o-1 has paid, in one snapshot
    const patMovedOnlyByO1 = async () => {
      const [pat] = await q(`select a.balance, a.held, (select paid from streams where ref = 'o-1') as paid from accounts a where a.id = 'pat.w'`);
      expect(Number(pat.paid)).toBeGreaterThanOrEqual(10);
      expect({ balance: Number(pat.balance), held: Number(pat.held) }).toEqual({ balance: 10_000 - Number(pat.paid), held: 600 - Number(pat.paid) });
    };
    await patMovedOnlyByO1();
    expect((await as('pat').get('/v1/parties/pat/operators')).body.grants[0]).toMatchObject({ spentToday: 600 });

    // 600 + 500 > 1000: refused, nothing charged, nothing counted
    const over = await opOpen('o-2', { maxTotal: 500 });
    expect(over.status).toBe(422);
    expect(over.body.error).toMatchObject({ code: 'limit_exceeded', details: { operator: 'op', payer: 'pat', dailyLimit: 1000 } });
    await patMovedOnlyByO1();
    expect(await streamRow('o-2')).toBeUndefined();
    expect((await as('pat').get('/v1/parties/pat/operators')).body.grants[0]).toMatchObject({ spentToday: 600 });
    // exactly up to the limit is fine
    const o3 = await opOpen('o-3', { maxTotal: 400, tickIntervalMs: 60_000, ratePerTick: 4 });
    expect(o3.status).toBe(201);
    expect(o3.body).toMatchObject({ openedBy: 'op', totalPaid: 4 });
    expect((await as('op').get('/v1/parties/op/operators?as=operator')).body.grants[0]).toMatchObject({ spentToday: 1000 });
    expect((await opOpen('o-4', { maxTotal: 1 })).body.error).toMatchObject({ code: 'limit_exceeded' });
    // an open-ended stream cannot count against a limit
    const openEnded = await opOpen('o-5', { maxTotal: undefined, mode: 'payg' });
    expect(openEnded.status).toBe(400);
    expect(await streamRow('o-5')).toBeUndefined();
    // o-1 ticks on meanwhile: what pat's two streams paid and what is still held, read in one snapshot
    const [pat] = await q(`select a.balance, a.held, (select sum(paid) from streams where ref in ('o-1', 'o-3')) as paid from accounts a where a.id = 'pat.w'`);
    expect({ balance: Number(pat.balance), held: Number(pat.held) }).toEqual({ balance: 10_000 - Number(pat.paid), held: 600 + 400 - Number(pat.paid) });

    // a stranger neither opens from pat's account nor touches pat's streams: to it they are not found
    expect((await as('stranger').post('/v1/streams', { ref: 'o-x', fromAccountId: 'pat.w', toAccountId: 'stranger.w', ratePerTick: 1, maxTotal: 5, tickIntervalMs: 300 })).status).toBe(404);
    expect((await as('stranger').post('/v1/streams/o-1/pause')).status).toBe(404);
    expect((await as('stranger').post('/v1/streams/o-1/cancel', {})).status).toBe(404);
    expect((await as('stranger').get('/v1/streams/o-1')).status).toBe(404);
    // the operator sees the stream it opened
    expect((await as('op').get('/v1/streams/o-1')).status).toBe(200);

    await untilTicks('o-1', 2);
    const paused = await as('op').post('/v1/streams/o-1/pause');
    expect(paused.status).toBe(200);
    expect(paused.body.pauses).toEqual([expect.objectContaining({ by: 'op' })]);
    expect(await q(`select action, by_party, on_behalf_of from stream_controls where stream_ref = 'o-1' order by id`)).toEqual([
      { action: 'pause', by_party: 'op', on_behalf_of: 'pat' },
    ]);
    // without the cancel scope
    const noScope = await as('op').post('/v1/streams/o-1/cancel', {});
    expect(noScope.status).toBe(403);
    expect((await streamRow('o-1')).status).toBe('open');
    const resumed = await as('op').post('/v1/streams/o-1/resume');
    expect(resumed.status).toBe(200);

    // re-granted with cancel (and a new limit): the operator cancels, recorded as closedBy
    const regrant = await as('pat').post('/v1/parties/pat/operators', { operator: 'op', scopes: ['open', 'pause', 'cancel'], dailyLimit: 2000 });
    expect(regrant.body).toMatchObject({ scopes: ['open', 'pause', 'cancel'], dailyLimit: 2000, spentToday: 1000 });
    const ticksBefore = (await untilTicks('o-1', resumed.body.ticks + 1)).ticks;
    expect(ticksBefore).toBeGreaterThan(resumed.body.ticks);
    const cancelled = await as('op').post('/v1/streams/o-1/cancel', { reason: 'operator stop' });
    expect(cancelled.status).toBe(200);
    const r1 = cancelled.body;
    expect(r1).toMatchObject({ status: 'CONFIRMED', reason: 'cancelled', closedBy: 'op', openedBy: 'op', payer: 'pat' });
    expect(r1.totalPaid).toBe(10 * r1.ticks);
    expect(await q(`select action, by_party, on_behalf_of from stream_controls where stream_ref = 'o-1' order by id`)).toEqual([
      { action: 'pause', by_party: 'op', on_behalf_of: 'pat' },
      { action: 'resume', by_party: 'op', on_behalf_of: 'pat' },
    ]);
    expect((await admin.get('/v1/streams/o-1')).body).toMatchObject({ closedBy: 'op', openedBy: 'op', pauses: [{ by: 'op' }] });
    expect((await admin.get('/v1/streams/o-1')).body.pauses[0].resumedAt).toBeDefined();
    expect(await account('pat.w')).toMatchObject({ balance: 10_000 - r1.totalPaid - 4, held: 396 });
    expect((await account('shop.w')).balance).toBe(r1.totalPaid + 4);

    // an operator granted only `open` may not pause or cancel
    expect((await as('pat').post('/v1/parties/pat/operators', { operator: 'op2', scopes: ['open'], dailyLimit: 100 })).status).toBe(201);
    expect((await as('op2').post('/v1/streams/o-3/pause')).status).toBe(403);
    expect((await as('op2').post('/v1/streams/o-3/cancel', {})).status).toBe(403);
    expect((await streamRow('o-3')).paused_at).toBeNull();

    // revoked: no more opens, pauses or cancels (or views) by the operator; its stream runs on
    const revoked = await as('pat').post('/v1/parties/pat/operators/op/revoke');
    expect(revoked.status).toBe(200);
    expect(revoked.body.revokedAt).toBeDefined();
    expect((await as('pat').post('/v1/parties/pat/operators/op/revoke')).body).toEqual(revoked.body);
    expect((await opOpen('o-6', { maxTotal: 5 })).status).toBe(403);
    expect(await streamRow('o-6')).toBeUndefined();
    // revoked, the operator no longer sees pat's streams: not found (opening from pat.w above: 403, the grant it knows was revoked)
    expect((await as('op').post('/v1/streams/o-3/pause')).status).toBe(404);
    expect((await as('op').post('/v1/streams/o-3/cancel', {})).status).toBe(404);
    expect((await streamRow('o-3')).status).toBe('open');
    const r3 = (await as('pat').post('/v1/streams/o-3/cancel', {})).body;
    expect(r3).toMatchObject({ status: 'CONFIRMED', closedBy: 'pat', openedBy: 'op', ticks: 1, totalPaid: 4 });
    expect(await account('pat.w')).toMatchObject({ balance: 10_000 - r1.totalPaid - 4, held: 0 });
    const events = (await q(`select type from events where subject = 'pat/op' order by id`)).map((e: any) => e.type);
    expect(events).toEqual(['operator.granted', 'operator.granted', 'operator.revoked']);
    expect(await q(`select count(*)::int as n from stream_controls where stream_ref = 'o-3'`)).toEqual([{ n: 0 }]);
  });
});

describe('distribution streams', () => {
  const dopen = (body: Record<string, unknown>, by = 'dora') => as(by).post('/v1/streams', { fromAccountId: 'dora.w', ratePerTick: 10, maxTotal: 1000, tickIntervalMs: 250, ...body });

  test('refused shapes: duplicate members, the payer as member, a liveness timeout, members with a payee', async () => {
    const before = await account('dora.w');
    const dup = await dopen({ ref: 'd-dup', members: [{ accountId: 'm1.w', weight: 1 }, { accountId: 'm1.w', weight: 2 }] });
    expect(dup.status).toBe(400);
    expect((await dopen({ ref: 'd-self', members: [{ accountId: 'dora.w', weight: 1 }, { accountId: 'm1.w', weight: 2 }] })).status).toBe(400);
    expect((await dopen({ ref: 'd-live', members: [{ accountId: 'm1.w', weight: 1 }], livenessTimeoutMs: 1000 })).status).toBe(400);
    expect((await dopen({ ref: 'd-both', members: [{ accountId: 'm1.w', weight: 1 }], toAccountId: 'm2.w' })).status).toBe(400);
    expect((await dopen({ ref: 'd-none', members: [] })).status).toBe(400);
    expect((await dopen({ ref: 'd-w0', members: [{ accountId: 'm1.w', weight: 0 }] })).status).toBe(400);
    expect((await q(`select count(*)::int as n from streams where ref in ('d-dup', 'd-self', 'd-live', 'd-both', 'd-none', 'd-w0')`))[0].n).toBe(0);
    expect(await account('dora.w')).toEqual(before);
  });

  test('escrow: each tick split exactly by weight; members join and leave between ticks; cancel releases the rest', async () => {
    const before = await account('dora.w');
    const opened = await dopen({ ref: 'd-1', members: [{ accountId: 'm1.w', weight: 1 }, { accountId: 'm2.w', weight: 2 }, { accountId: 'm3.w', weight: 7 }] });
    expect(opened.status).toBe(201);
    expect(opened.body).toMatchObject({ ref: 'd-1', kind: 'distribution', payer: 'dora', status: 'STREAMING', ticks: 1, totalPaid: 10 });
    expect(opened.body.payee).toBeUndefined();
    expect(opened.body.members).toEqual([
      { accountId: 'm1.w', party: 'm1', weight: 1, received: 1 },
      { accountId: 'm2.w', party: 'm2', weight: 2, received: 2 },
      { accountId: 'm3.w', party: 'm3', weight: 7, received: 7 },
    ]);
    expect(await account('dora.w')).toMatchObject({ balance: before.balance - 10, held: 990 });

    // members see the stream (and are refused what is the payer's: 403); to a stranger it is not found (404)
    expect((await as('m2').get('/v1/streams/d-1')).body).toMatchObject({ kind: 'distribution', status: 'STREAMING' });
    expect((await as('stranger').get('/v1/streams/d-1')).status).toBe(404);
    expect((await as('stranger').post('/v1/streams/d-1/members', { members: [{ accountId: 'stranger.w', weight: 5 }] })).status).toBe(404);
    expect((await as('m1').post('/v1/streams/d-1/members', { members: [{ accountId: 'm1.w', weight: 50 }] })).status).toBe(403);
    expect((await as('stranger').post('/v1/streams/d-1/members/m1.w/leave')).status).toBe(404);
    expect((await as('m1').post('/v1/streams/d-1/members/m2.w/leave')).status).toBe(403);
    // membership changes that make no sense
    expect((await as('dora').post('/v1/streams/d-1/members', { members: [{ accountId: 'dora.w', weight: 1 }] })).status).toBe(400);
    expect((await as('dora').post('/v1/streams/d-1/members', { members: [{ accountId: 'm4.w', weight: 1 }, { accountId: 'm4.w', weight: 2 }] })).status).toBe(400);
    expect((await as('dora').post('/v1/streams/d-1/members/m4.w/leave')).status).toBe(404);

    await untilTicks('d-1', 3);
    // phase 2: m4 joins (weights 1, 2, 7, 10)
    const joined = await as('dora').post('/v1/streams/d-1/members', { members: [{ accountId: 'm4.w', weight: 10 }] });
    expect(joined.status).toBe(200);
    const joinedAt = joined.body.ticks;
    expect(joined.body.members.map((m: any) => m.accountId)).toEqual(['m1.w', 'm2.w', 'm3.w', 'm4.w']);
    expect(joined.body.members[3]).toEqual({ accountId: 'm4.w', party: 'm4', weight: 10, received: 0 });
    await untilTicks('d-1', joinedAt + 3);
    // phase 3: m2 leaves by itself
    const left = await as('m2').post('/v1/streams/d-1/members/m2.w/leave');
    expect(left.status).toBe(200);
    const m2LeftAt = left.body.ticks;
    expect(left.body.members.find((m: any) => m.accountId === 'm2.w')).toMatchObject({ left: true });
    expect((await as('m2').post('/v1/streams/d-1/members/m2.w/leave')).status).toBe(404);
    await untilTicks('d-1', m2LeftAt + 3);
    // phase 4: the payer takes m3 out
    const out = await as('dora').post('/v1/streams/d-1/members/m3.w/leave');
    expect(out.status).toBe(200);
    const m3LeftAt = out.body.ticks;
    await untilTicks('d-1', m3LeftAt + 3);

    const cancel = await as('dora').post('/v1/streams/d-1/cancel', {});
    expect(cancel.status).toBe(200);
    const r = cancel.body;
    expect(r).toMatchObject({ status: 'CONFIRMED', kind: 'distribution', reason: 'cancelled', closedBy: 'dora' });
    expect(r.totalPaid).toBe(10 * r.ticks);

    // per tick: the members of that tick, each its exact share rounded down or one more, the parts summing to the tick
    const ticks = await ticksOf('d-1');
    expect(ticks.map((t: any) => t.tick)).toEqual(Array.from({ length: r.ticks }, (_, i) => i + 1));
    const splits = await splitsOf('d-1');
    const weightsAt = (tick: number): Record<string, number> => {
      const w: Record<string, number> = { 'm1.w': 1, 'm2.w': 2, 'm3.w': 7 };
      if (tick > joinedAt) w['m4.w'] = 10;
      if (tick > m2LeftAt) delete w['m2.w'];
      if (tick > m3LeftAt) delete w['m3.w'];
      return w;
    };
    for (const t of ticks) {
      const parts = splits.filter((s: any) => s.tick === t.tick);
      expect(parts.reduce((s: number, p: any) => s + p.amount, 0)).toBe(t.amount);
      const w = weightsAt(t.tick);
      const W = Object.values(w).reduce((a, b) => a + b, 0);
      for (const p of parts) expect(Object.keys(w)).toContain(p.account);
      for (const [acc, weight] of Object.entries(w)) {
        const part = parts.find((p: any) => p.account === acc)?.amount ?? 0;
        const exact = Math.floor((t.amount * weight) / W);
        expect([exact, exact + 1]).toContain(part);
        if ((t.amount * weight) % W === 0) expect(part).toBe(exact);
      }
    }
    // weights 1, 2, 7 at rate 10: exactly 1, 2, 7 every tick
    for (let tick = 1; tick <= joinedAt; tick++) {
      expect(splits.filter((s: any) => s.tick === tick).map((s: any) => [s.account, s.amount])).toEqual([['m1.w', 1], ['m2.w', 2], ['m3.w', 7]]);
    }
    // m4 paid only after it joined (every tick: 10 of 20 → 5 while m2 was in), m2 and m3 nothing after leaving
    const ticksOfMember = (acc: string) => splits.filter((s: any) => s.account === acc).map((s: any) => s.tick);
    expect(Math.min(...ticksOfMember('m4.w'))).toBe(joinedAt + 1);
    expect(ticksOfMember('m4.w')).toHaveLength(r.ticks - joinedAt);
    for (let tick = joinedAt + 1; tick <= m2LeftAt; tick++) expect(splits.find((s: any) => s.tick === tick && s.account === 'm4.w').amount).toBe(5);
    expect(Math.max(...ticksOfMember('m2.w'))).toBe(m2LeftAt);
    expect(Math.max(...ticksOfMember('m3.w'))).toBe(m3LeftAt);
    // after m3 left only m1 (1) and m4 (10) remain: 10 by 1:10 → 0 or 1 and 9 or 10
    // each member's transfers sum to its received; the received sum to totalPaid; balances match
    expect(r.members.reduce((s: number, m: any) => s + m.received, 0)).toBe(r.totalPaid);
    for (const m of r.members) {
      expect(splits.filter((s: any) => s.account === m.accountId).reduce((s: number, p: any) => s + p.amount, 0)).toBe(m.received);
      expect((await account(m.accountId)).balance).toBe(m.received);
    }
    expect(r.members.map((m: any) => [m.accountId, !!m.left])).toEqual([['m1.w', false], ['m2.w', true], ['m3.w', true], ['m4.w', false]]);
    // the escrow remainder released
    expect(await account('dora.w')).toMatchObject({ balance: before.balance - r.totalPaid, held: 0 });
    const hold = (await q(`select h.* from holds h join streams s on s.hold_id = h.id where s.ref = 'd-1'`))[0];
    expect(hold).toMatchObject({ amount: 1000, captured: r.totalPaid, released: 1000 - r.totalPaid, status: 'released' });
    expect(await q(`select action, by_party from stream_controls where stream_ref = 'd-1' order by id`)).toEqual([
      { action: 'member_joined', by_party: 'dora' },
      { action: 'member_left', by_party: 'm2' },
      { action: 'member_left', by_party: 'dora' },
    ]);
    // a member that left still sees the stream it was paid by
    expect((await as('m2').get('/v1/streams/d-1')).status).toBe(200);
  });

  test('a tick that waited for the stream lock while a member left bills the membership after the leave', async () => {
    // a minute between ticks: the workflow stays out of the way; tick 2 is billed here
    expect((await dopen({ ref: 'd-race', tickIntervalMs: 60_000, members: [{ accountId: 'r1.w', weight: 1 }, { accountId: 'r2.w', weight: 1 }] })).status).toBe(201);
    // the real leave queues for the stream's lock behind a holder, the tick queues behind the leave:
    // the tick's statement starts (its snapshot taken) before the leave commits
    const holder = await stack.db.pool.connect();
    let leave: ReturnType<typeof leaveDistribution>;
    let tick2: ReturnType<typeof billTick>;
    try {
      await holder.query('begin');
      await holder.query(`select 1 from streams where ref = 'd-race' for update`);
      leave = leaveDistribution(stack.db.pool, { ref: 'd-race', accountId: 'r2.w', by: 'dora' });
      await sleep(200);
      tick2 = billTick(stack.db.pool, 'd-race', 2);
      await sleep(200);
      await holder.query('commit');
    } finally {
      holder.release();
    }
    expect((await leave).members).toEqual([expect.objectContaining({ accountId: 'r1.w' }), expect.objectContaining({ accountId: 'r2.w', left: true })]);
    expect(await tick2).toMatchObject({ kind: 'billed', amount: 10 });
    expect((await splitsOf('d-race')).map((s: any) => [s.tick, s.account, s.amount])).toEqual([[1, 'r1.w', 5], [1, 'r2.w', 5], [2, 'r1.w', 10]]);
    const r = (await as('dora').post('/v1/streams/d-race/cancel', {})).body;
    expect(r).toMatchObject({ ticks: 2, totalPaid: 20, members: [{ accountId: 'r1.w', received: 15 }, { accountId: 'r2.w', received: 5, left: true }] });
  });

  test('payg at rate 1 over equal weights: the members take turns, the stream completes at maxTotal', async () => {
    const before = await account('dora.w');
    const opened = await dopen({ ref: 'd-turns', ratePerTick: 1, maxTotal: 6, mode: 'payg', tickIntervalMs: 200, members: ['e1.w', 'e2.w', 'e3.w'].map((accountId) => ({ accountId, weight: 3 })) });
    expect(opened.status).toBe(201);
    expect(opened.body).toMatchObject({ kind: 'distribution', mode: 'payg', ticks: 1, totalPaid: 1 });
    expect(await account('dora.w')).toMatchObject({ balance: before.balance - 1, held: 0 });
    const result = await stack.client.workflow.getHandle(streamWorkflowId('d-turns')).result();
    expect(result).toMatchObject({ status: 'CONFIRMED', reason: 'completed', ticks: 6, totalPaid: 6 });
    const splits = await splitsOf('d-turns');
    // one unit per tick, to one member; every three ticks each member once
    expect(splits.map((s: any) => s.tick)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(splits.every((s: any) => s.amount === 1)).toBe(true);
    for (const window of [splits.slice(0, 3), splits.slice(3, 6)]) expect(window.map((s: any) => s.account).sort()).toEqual(['e1.w', 'e2.w', 'e3.w']);
    expect(result.members.map((m: any) => m.received)).toEqual([2, 2, 2]);
    for (const acc of ['e1.w', 'e2.w', 'e3.w']) expect((await account(acc)).balance).toBe(2);
    expect(await account('dora.w')).toMatchObject({ balance: before.balance - 6, held: 0 });
  });

  test('payg: a member joining mid-stream is paid from the next tick; the payer cancels', async () => {
    const before = await account('dora.w');
    const e1 = (await account('e1.w')).balance;
    const opened = await dopen({ ref: 'd-payg', ratePerTick: 9, maxTotal: 900, mode: 'payg', members: [{ accountId: 'e1.w', weight: 1 }] });
    expect(opened.status).toBe(201);
    await untilTicks('d-payg', 2);
    const joined = await as('dora').post('/v1/streams/d-payg/members', { members: [{ accountId: 'e2.w', weight: 2 }] });
    const at = joined.body.ticks;
    await untilTicks('d-payg', at + 2);
    const r = (await as('dora').post('/v1/streams/d-payg/cancel', {})).body;
    expect(r).toMatchObject({ status: 'CONFIRMED', mode: 'payg', totalPaid: 9 * r.ticks });
    const splits = await splitsOf('d-payg');
    for (let tick = 1; tick <= r.ticks; tick++) {
      const parts = splits.filter((s: any) => s.tick === tick).map((s: any) => [s.account, s.amount]);
      expect(parts).toEqual(tick <= at ? [['e1.w', 9]] : [['e1.w', 3], ['e2.w', 6]]);
    }
    expect(r.members).toEqual([
      { accountId: 'e1.w', party: 'e1', weight: 1, received: 9 * at + 3 * (r.ticks - at) },
      { accountId: 'e2.w', party: 'e2', weight: 2, received: 6 * (r.ticks - at) },
    ]);
    expect((await account('e1.w')).balance).toBe(e1 + r.members[0].received);
    expect(await account('dora.w')).toMatchObject({ balance: before.balance - r.totalPaid, held: 0 });
  });
});

describe('distribution streams: what a member may be', () => {
  test('a member in another currency, the pool, or past 100 members is refused before any tick; rateConsent payee has no payee to ask', async () => {
    await createAccount(stack.db.pool, { id: 'bob.eur', ownerId: 'bob', kind: 'user', currency: 'EUR' });
    const open = (ref: string, extra: Record<string, unknown>) =>
      as('alice').post('/v1/streams', { ref, fromAccountId: 'alice.w', ratePerTick: 3, maxTotal: 300, tickIntervalMs: 60_000, ...extra });
    expect((await open('dm-eur', { members: [{ accountId: 'bob.eur', weight: 1 }] })).body.error.code).toBe('currency_mismatch');
    expect((await open('dm-consent', { members: [{ accountId: 'bob.w', weight: 1 }], rateConsent: 'payee' })).status).toBe(400);
    const opened = await open('dm-cap', { members: [{ accountId: 'bob.w', weight: 1 }] });
    expect(opened.status).toBe(201);
    const join = (accountId: string) => as('alice').post('/v1/streams/dm-cap/members', { members: [{ accountId, weight: 1 }] });
    expect((await join('bob.eur')).status).toBe(422);
    const pool = (await q(`select id from accounts where kind = 'pool' limit 1`))[0].id;
    expect((await join(pool)).status).toBe(400);
    // 99 more members fill the group to 100; the 101st is refused
    for (let i = 0; i < 100; i++) await createAccount(stack.db.pool, { id: `bob.m${i}`, ownerId: 'bob', kind: 'user' });
    const more = Array.from({ length: 99 }, (_, i) => ({ accountId: `bob.m${i}`, weight: 1 }));
    expect((await as('alice').post('/v1/streams/dm-cap/members', { members: more })).status).toBe(200);
    const over = await join('bob.m99');
    expect(over).toMatchObject({ status: 422, body: { error: { code: 'limit_exceeded' } } });
    expect((await q(`select count(*)::int as n from stream_members where stream_ref = 'dm-cap' and left_at is null`))[0].n).toBe(100);
    expect((await as('alice').post('/v1/streams/dm-cap/cancel', {})).body).toMatchObject({ status: 'CONFIRMED', totalPaid: 3 });
  });

  test('a tick the ledger refuses for good closes the stream (tick_refused) and gives the escrow back, instead of failing the run with it held', async () => {
    const before = await account('alice.w');
    expect((await as('alice').post('/v1/streams', { ref: 'dm-refused', fromAccountId: 'alice.w', members: [{ accountId: 'bob.w', weight: 1 }], ratePerTick: 2, maxTotal: 200, tickIntervalMs: 300 })).status).toBe(201);
    // past the API's checks (the ledger call itself): a member no tick can credit
    await joinDistribution(stack.db.pool, { ref: 'dm-refused', members: [{ accountId: 'bob.eur', party: 'bob', weight: 1 }], by: 'test' });
    const receipt = await stack.client.workflow.getHandle(streamWorkflowId('dm-refused')).result();
    expect(receipt).toMatchObject({ status: 'CONFIRMED', reason: 'tick_refused', closedBy: 'system' });
    expect(await account('alice.w')).toMatchObject({ balance: before.balance - receipt.totalPaid, held: before.held });
    expect((await runAudit(stack.db.pool)).checks.filter((c) => !c.ok)).toEqual([]);
  });
});

describe('the auditor after the suite', () => {
  test('every check is green, through runAudit and GET /v1/audit', async () => {
    const report = await runAudit(stack.db.pool);
    expect(report.checks.filter((c) => !c.ok)).toEqual([]);
    const names = report.checks.map((c) => c.name);
    expect(names).toEqual(expect.arrayContaining(['streams.split_matches_members', 'operators.within_daily_limit', 'streams.paid_is_sum_of_ticks']));
    const viaApi = await admin.get('/v1/audit');
    expect(viaApi.status).toBe(200);
    expect(viaApi.body.ok).toBe(true);
    expect((await as('stranger').get('/v1/audit')).status).toBe(403);
  });
});
