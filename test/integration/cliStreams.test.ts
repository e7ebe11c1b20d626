import { execFile } from 'node:child_process';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import { runAudit } from '../../src/audit';
import { ADMIN_KEY, api, startTestStack, type TestStack } from '../support/stack';

/**
 * `sluice streams …` and `sluice operators …` drive the real API over HTTP (the
 * stack's API listening on a port): every command's JSON answer (--json; the human
 * output is checked in cliOperations.test.ts), its exit code on an error answer,
 * and what it changed in the ledger.
 */
const run = promisify(execFile);
let stack: TestStack;
let base: string;
const keys: Record<string, string> = {};

async function sluice(key: string, ...args: string[]): Promise<{ code: number; json: any }> {
  try {
    const { stdout } = await run(process.execPath, ['--import', 'tsx', resolve(__dirname, '../../src/cli.ts'), ...args, '--json', '--api', base, '--key', key], {
      env: { ...process.env, LOG_LEVEL: 'silent' },
    });
    return { code: 0, json: JSON.parse(stdout) };
  } catch (error) {
    const e = error as { code: number; stdout: string };
    return { code: e.code, json: JSON.parse(e.stdout) };
  }
}

beforeAll(async () => {
  stack = await startTestStack();
  base = await stack.app.listen({ port: 0, host: '127.0.0.1' });
  const admin = api(stack.app, ADMIN_KEY);
  for (const id of ['cli-payer', 'cli-payee', 'cli-ops']) {
    keys[id] = (await admin.post('/v1/parties', { id, name: id })).body.apiKey;
    await api(stack.app, keys[id]).post('/v1/accounts', { id: `${id}.w` });
  }
  await admin.post('/v1/deposits', { accountId: 'cli-payer.w', amount: 10_000 }, 'cli-fund');
}, 60_000);
afterAll(() => stack.stop());

const held = async (account: string) => (await stack.db.pool.query<{ held: number }>('select held from accounts where id = $1', [account])).rows[0]!.held;

test('open, pause, status, deposit, rate, resume and cancel a stream from the command line', async () => {
  const opened = await sluice(keys['cli-payer']!, 'streams', 'open', '--ref', 'cli-1', '--from', 'cli-payer.w', '--to', 'cli-payee.w', '--rate', '10', '--max', '500', '--interval-ms', '300');
  expect(opened).toMatchObject({ code: 0, json: { ref: 'cli-1', status: 'STREAMING', ticks: 1, totalPaid: 10 } });
  expect((await sluice(keys['cli-payer']!, 'streams', 'pause', 'cli-1')).json.pauses).toHaveLength(1);
  const paused = await sluice(keys['cli-payee']!, 'streams', 'status', 'cli-1');
  expect(paused.json.pausedAt).toBeDefined();
  expect(paused.json.nextTickAt).toBeUndefined();
  // pausing twice is refused with the API's 409 and exit code 1
  expect(await sluice(keys['cli-payer']!, 'streams', 'pause', 'cli-1')).toMatchObject({ code: 1, json: { error: { code: 'invalid_state' } } });
  const topped = await sluice(keys['cli-payer']!, 'streams', 'deposit', 'cli-1', '--from', 'cli-payer.w', '--amount', '100', '--idempotency-key', 'cli-top-1');
  expect(topped.json).toMatchObject({ maxTotal: 600, deposited: 100 });
  expect(await held('cli-payer.w')).toBe(600 - paused.json.totalPaid);
  expect((await sluice(keys['cli-payer']!, 'streams', 'rate', 'cli-1', '20')).json.rates.map((r: { ratePerTick: number }) => r.ratePerTick)).toEqual([10, 20]);
  expect((await sluice(keys['cli-payer']!, 'streams', 'resume', 'cli-1')).json.pauses[0].resumedAt).toBeDefined();
  const receipt = await sluice(keys['cli-payee']!, 'streams', 'cancel', 'cli-1', '--reason', 'done');
  expect(receipt.json).toMatchObject({ status: 'CONFIRMED', reason: 'cancelled', closedBy: 'cli-payee', maxTotal: 600 });
  const { rows } = await stack.db.pool.query<{ tick: number; amount: number }>('select tick, amount from stream_ticks where stream_ref = $1 order by tick', ['cli-1']);
  expect(rows.reduce((s, r) => s + r.amount, 0)).toBe(receipt.json.totalPaid);
  expect(rows.map((r) => r.tick)).toEqual(rows.map((_, i) => i + 1));
  expect(await held('cli-payer.w')).toBe(0);
  expect((await runAudit(stack.db.pool)).ok).toBe(true);
}, 60_000);

test('operators grant, list and revoke from the command line; the operator opens within its limit', async () => {
  const granted = await sluice(keys['cli-payer']!, 'operators', 'grant', 'cli-payer', 'cli-ops', '--daily-limit', '300', '--scopes', 'open,cancel');
  expect(granted).toMatchObject({ code: 0, json: { operator: 'cli-ops', scopes: ['open', 'cancel'], dailyLimit: 300 } });
  const opened = await sluice(keys['cli-ops']!, 'streams', 'open', '--ref', 'cli-ops-1', '--from', 'cli-payer.w', '--to', 'cli-payee.w', '--rate', '5', '--max', '200', '--interval-ms', '3000');
  expect(opened.json).toMatchObject({ status: 'STREAMING', openedBy: 'cli-ops', payer: 'cli-payer' });
  expect((await sluice(keys['cli-ops']!, 'operators', 'list', 'cli-ops', '--as', 'operator')).json.grants[0]).toMatchObject({ payer: 'cli-payer', spentToday: 200 });
  expect((await sluice(keys['cli-payer']!, 'operators', 'revoke', 'cli-payer', 'cli-ops')).json.revokedAt).toBeDefined();
  // revoked, the operator no longer sees the stream: not found, as a missing one
  expect(await sluice(keys['cli-ops']!, 'streams', 'cancel', 'cli-ops-1')).toMatchObject({ code: 1, json: { error: { code: 'not_found' } } });
  expect((await sluice(keys['cli-payer']!, 'streams', 'cancel', 'cli-ops-1')).json).toMatchObject({ status: 'CONFIRMED', closedBy: 'cli-payer' });
  expect((await runAudit(stack.db.pool)).ok).toBe(true);
}, 60_000);

test('an API it cannot reach is named in the error, with why and what to do; exit code 1', async () => {
  // a port nothing listens on: one the OS just handed out and took back
  const { createServer } = await import('node:net');
  const probe = createServer();
  const port = await new Promise<number>((done) => probe.listen(0, '127.0.0.1', () => done((probe.address() as { port: number }).port)));
  await new Promise((done) => probe.close(done));
  const url = `http://127.0.0.1:${port}`;
  const failed = await run(process.execPath, ['--import', 'tsx', resolve(__dirname, '../../src/cli.ts'), 'streams', 'status', 'any', '--api', url, '--key', 'k'], {
    env: { ...process.env, LOG_LEVEL: 'silent' },
  }).then(
    () => undefined,
    (error: { code: number; stderr: string }) => error,
  );
  expect(failed?.code).toBe(1);
  expect(failed?.stderr).toContain(`cannot reach the Sluice API at ${url} (ECONNREFUSED)`);
  expect(failed?.stderr).toMatch(/--api URL/);
});
