import { errorLine } from '../../src/cli/client';
import { entitySummary } from '../../src/cli/entities';
import { closedLine, streamLine, tickList } from '../../src/cli/streams';

/** The CLI's human output for API answers (src/cli/client.ts, streams.ts, entities.ts), without a stack. */
const now = Date.parse('2025-06-01T12:00:00.000Z');

test('an error answer: status, code and message, then the request id and the doc link on the next line', () => {
  const body = { error: { code: 'not_found', message: 'stream x not found', details: {}, request_id: 'req_0123456789abcdef', doc_url: 'http://h/errors#not_found' } };
  expect(errorLine({ status: 404, body })).toBe('error 404 not_found: stream x not found\n  request req_0123456789abcdef, see http://h/errors#not_found');
  // a param the message does not name is added; one it names is not repeated
  expect(errorLine({ status: 400, body: { error: { ...body.error, code: 'invalid_request', message: 'must be at most 100', param: 'limit' } } }).split('\n')[0]).toBe('error 400 invalid_request: must be at most 100 (limit)');
  expect(errorLine({ status: 400, body: { error: { ...body.error, message: 'limit must be at most 100', param: 'limit' } } }).split('\n')[0]).toBe('error 400 not_found: limit must be at most 100');
  // an error without request id or link (an older API): one line
  expect(errorLine({ status: 409, body: { error: { code: 'invalid_state', message: 'already paused' } } })).toBe('error 409 invalid_state: already paused');
  // not the API's error shape: the body as it came
  expect(errorLine({ status: 502, body: undefined })).toBe('error 502: no answer body');
});

test('a paused stream says so; a closed one says what its escrow gave back', () => {
  expect(streamLine({ ref: 'r', status: 'PAUSED', totalPaid: 10, maxTotal: 40, ticks: 1, pausedAt: new Date(Date.now() - 3_500).toISOString() })).toBe('r: paid 10 of 40, 1 tick, paused 3 s ago');
  expect(closedLine({ ref: 'r', status: 'CONFIRMED', totalPaid: 30, ticks: 3, reason: 'cancelled', closedBy: 'alice', escrowReturned: 10 })).toBe('r CONFIRMED: paid 30 in 3 ticks, cancelled by alice; escrow returned 10');
  expect(closedLine({ ref: 'r', status: 'FAILED', totalPaid: 0, ticks: 0, failure: 'no funds' })).toBe('r FAILED: paid 0 in 0 ticks, no funds');
});

test('a page of ticks: tick, amount, running total, billed at, how long ago; the cursor for more', () => {
  const ticks = [
    { tick: 1, amount: 5, paid: 5, billedAt: '2025-06-01T11:59:58.000Z', transferId: 1 },
    { tick: 2, amount: 5, paid: 10, billedAt: '2025-06-01T11:59:59.000Z', transferId: 2 },
  ];
  expect(tickList({ ref: 'r', ticks, next: 2 }, now).split('\n')).toEqual([
    'TICK  AMOUNT  PAID  BILLED AT                 BILLED',
    '1     5       5     2025-06-01T11:59:58.000Z  2 s ago',
    '2     5       10    2025-06-01T11:59:59.000Z  1 s ago',
    '2 ticks; more with --after 2',
  ]);
  expect(tickList({ ref: 'r', ticks: [] }, now)).toBe('0 ticks');
});

test('an entity against its limits: live of cap, created of the hourly limit, and when the next creation goes through', () => {
  const e = { id: 'acme', mainAccountId: 'acme.main', collateral: 100, funding: 50, webhookUrls: [], challengeMs: 0, nextSeq: 413, subaccountCap: 500, creationsPerHour: 50, liveSubaccounts: 412, creationsLastHour: 3 };
  expect(entitySummary(e, now)).toContain('\nsubaccounts: 412 of 500 live · 3 of 50 created this hour');
  expect(entitySummary(e, now)).not.toContain('hourly limit');
  expect(entitySummary({ ...e, creationsLastHour: 50, nextCreationAt: '2025-06-01T12:12:00.000Z' }, now)).toMatch(/\nhourly limit: reached, next creation in 12 min \(2025-06-01T12:12:00\.000Z\)$/);
});
