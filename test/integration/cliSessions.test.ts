import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { runAudit } from '../../src/audit';
import { ADMIN_KEY, api, startTestStack, type TestStack } from '../support/stack';

/**
 * `sluice sessions open|request|close|show`, run as the real CLI against the stack's
 * API on a port; every outcome is checked through the API. Its own config directory,
 * and none of SLUICE_API_URL/KEY set, as in cliLedger.test.ts.
 */
const run = promisify(execFile);
const CLI = resolve(__dirname, '../../src/cli.ts');
let stack: TestStack;
let base: string;
let env: NodeJS.ProcessEnv;
let admin: ReturnType<typeof api>;
let key = '';

interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

async function sluice(...args: string[]): Promise<Ran> {
  try {
    const { stdout, stderr } = await run(process.execPath, ['--import', 'tsx', CLI, ...args, '--api', base, '--key', key], { env });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as Ran;
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}
const json = async (...args: string[]) => {
  const r = await sluice(...args, '--json');
  return { ...r, json: JSON.parse(r.stdout) };
};
const account = async (id: string) => (await admin.get(`/v1/accounts/${encodeURIComponent(id)}`)).body;
const session = async (id: string) => admin.get(`/v1/sessions/${encodeURIComponent(id)}`);

beforeAll(async () => {
  stack = await startTestStack();
  base = await stack.app.listen({ port: 0, host: '127.0.0.1' });
  env = { ...process.env, LOG_LEVEL: 'silent', XDG_CONFIG_HOME: mkdtempSync(join(tmpdir(), 'sluice-cli-config-')) };
  for (const name of ['SLUICE_API_URL', 'SLUICE_API_KEY', 'SLUICE_API_HOST', 'SLUICE_API_PORT']) delete env[name];
  admin = api(stack.app, ADMIN_KEY);
  key = (await admin.post('/v1/parties', { id: 'cls-ada', name: 'Ada' })).body.apiKey;
  expect((await api(stack.app, key).post('/v1/accounts', { id: 'cls-ada.w' })).status).toBe(201);
  expect((await admin.post('/v1/deposits', { accountId: 'cls-ada.w', amount: 1000 }, 'cls-fund')).status).toBe(201);
  // established: 50 free a day, so a small request is free
  expect((await admin.post('/v1/parties/cls-ada/tier', { tier: 'established' })).status).toBe(200);
}, 60_000);
afterAll(() => stack.stop());

test('open moves the amount into the session; a request is decided and settled; close refunds the rest; show lists it all', async () => {
  // open with a generated id, printed first with how to retry
  const opened = await sluice('sessions', 'open', '--from', 'cls-ada.w', '--amount', '300');
  expect(opened.code).toBe(0);
  const sessionId = /^session id: (cli-[0-9a-f]{12}) \(to retry safely, repeat with --id \1\)$/m.exec(opened.stderr)![1]!;
  expect(opened.stdout).toMatch(new RegExp(`^session: ${sessionId} \\(open\\)\\npayer: cls-ada \\(cls-ada\\.w\\)\\naccount: session:${sessionId}\\nfunded: 300\\ndebited: 0\\nrefunded: 0\\nbalance: 300\\nrequests: 0 requests\\nopened: (\\d+ s ago|just now) \\(\\S+Z\\)\\n$`));
  expect(await account('cls-ada.w')).toMatchObject({ balance: 700, held: 0 });
  expect(await account(`session:${sessionId}`)).toMatchObject({ kind: 'session', balance: 300 });
  // the retry with the printed id: the same session, nothing moved twice
  const again = await json('sessions', 'open', '--from', 'cls-ada.w', '--amount', '300', '--id', sessionId);
  expect(again).toMatchObject({ code: 0, stderr: '', json: { sessionId, status: 'open', funded: 300, balance: 300 } });
  expect(await account('cls-ada.w')).toMatchObject({ balance: 700 });

  // a free request (the pool absorbs its actual cost), then one that pays past the budget
  const free = await sluice('sessions', 'request', sessionId, '--cost', '30', '--actual', '24', '--description', 'summarise');
  expect(free.code).toBe(0);
  const r1 = /^request id: (cli-[0-9a-f]{12}) \(to retry safely, repeat with --request-id \1 and the same options\)$/m.exec(free.stderr)![1]!;
  expect(free.stdout).toBe(
    `request: ${r1} of session ${sessionId}\npayer: cls-ada (established)\ndecision: free: the pool absorbs up to 30 of 30\nstatus: settled\nreserved: 30\nabsorbed: 24\n` +
      'returned to the pool: 6\npaid from the session: 0\nactual cost: 24\n',
  );
  const paid = await json('sessions', 'request', sessionId, '--cost', '60', '--request-id', 'r2', '--actual', '60', '--description', 'translate');
  expect(paid).toMatchObject({ code: 0, stderr: '', json: { sessionId, requestId: 'r2', decision: 'partial', status: 'settled', reserved: 26, absorbed: 26, paid: 34, actualCost: 60 } });
  // sent again with the same terms: the same request, charged once
  expect((await json('sessions', 'request', sessionId, '--cost', '60', '--request-id', 'r2', '--actual', '60', '--description', 'translate')).json).toEqual(paid.json);
  // with other terms: the API's 409, exit 1
  expect(await sluice('sessions', 'request', sessionId, '--cost', '61', '--request-id', 'r2', '--actual', '60', '--description', 'translate')).toMatchObject({ code: 1, stderr: expect.stringContaining('error 409 ref_conflict') });
  expect((await session(sessionId)).body).toMatchObject({ status: 'open', funded: 300, debited: 34, balance: 266, totals: { requests: 2, settled: 2, absorbed: 50 } });

  const shown = await sluice('sessions', 'show', sessionId);
  expect(shown.code).toBe(0);
  expect(shown.stdout).toContain('requests: 2 requests (2 settled)\npool absorbed: 50\n');
  expect(shown.stdout.split('\n').slice(-4)).toEqual([
    expect.stringMatching(/^REQUEST +DECISION +STATUS +ESTIMATE +ABSORBED +PAID +REFUNDED +ACTUAL$/),
    expect.stringMatching(new RegExp(`^${r1} +free +settled +30 +24 +0 +0 +24$`)),
    expect.stringMatching(/^r2 +partial +settled +60 +26 +34 +0 +60$/),
    '',
  ]);

  // close: the rest back to the payer's account
  const closed = await sluice('sessions', 'close', sessionId);
  expect(closed.code).toBe(0);
  expect(closed.stdout).toMatch(/\nrefunded: 266 to cls-ada\.w\nbalance: 0\n/);
  expect(closed.stdout).toMatch(/^session: \S+ \(closed\)\n/);
  expect(closed.stdout).toMatch(/\nclosed: (\d+ s ago|just now) \(\S+Z\)\n$/);
  expect((await session(sessionId)).body).toMatchObject({ status: 'closed', funded: 300, debited: 34, refunded: 266, balance: 0 });
  expect(await account('cls-ada.w')).toMatchObject({ balance: 966, held: 0 });
  expect(await account(`session:${sessionId}`)).toMatchObject({ balance: 0 });
  // closing again changes nothing; a request after the close is the API's 409
  expect((await json('sessions', 'close', sessionId)).json).toMatchObject({ status: 'closed', refunded: 266 });
  expect(await sluice('sessions', 'request', sessionId, '--cost', '5')).toMatchObject({ code: 1, stderr: expect.stringContaining('error 409 invalid_state') });
  expect(await account('cls-ada.w')).toMatchObject({ balance: 966 });
  expect(await sluice('sessions', 'show', 'cls-nosuch')).toMatchObject({ code: 1, stderr: expect.stringContaining('error 404 not_found') });
  expect((await runAudit(stack.db.pool)).ok).toBe(true);
}, 120_000);

test('an amount that is not a whole number of minor units is refused before anything is sent: exit 1, nothing changed', async () => {
  const before = await account('cls-ada.w');
  const events = (await stack.db.pool.query<{ n: number }>('select count(*)::int as n from events')).rows[0]!.n;
  for (const [args, bad] of [
    [['sessions', 'open', '--from', 'cls-ada.w', '--amount', '12.50', '--id', 'cls-bad'], '12.50'],
    [['sessions', 'open', '--from', 'cls-ada.w', '--amount', '0', '--id', 'cls-bad'], '0'],
    [['sessions', 'open', '--from', 'cls-ada.w', '--amount', '1e3'], '1e3'],
    [['sessions', 'request', 'cls-bad', '--cost', '-5'], '-5'],
    [['sessions', 'request', 'cls-bad', '--cost', '10', '--actual', '2.5'], '2.5'],
  ] as const) {
    const r = await sluice(...args);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`amounts are positive whole numbers of minor units (500 for 5.00), not "${bad}"`);
    // refused before an id was made up, let alone sent
    expect(r.stderr).not.toMatch(/^(session|request) id: /m);
  }
  expect(await account('cls-ada.w')).toEqual(before);
  expect((await session('cls-bad')).status).toBe(404);
  expect((await stack.db.pool.query<{ n: number }>('select count(*)::int as n from events')).rows[0]!.n).toBe(events);
}, 60_000);
