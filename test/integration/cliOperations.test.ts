import { execFile, spawn } from 'node:child_process';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import { runAudit } from '../../src/audit';
import { tickAt } from '../../src/domain/crown';
import { ADMIN_KEY, api, startTestStack, type TestStack } from '../support/stack';
import { testParties } from '../support/parties';

/**
 * `sluice streams watch`, `sluice entities …`, `sluice jobs …` and `sluice crown`
 * against the stack's API on a port: the human output (the default), the --json
 * output scripts read, exit codes on error answers, and what each changed in the ledger.
 */
const run = promisify(execFile);
let stack: TestStack;
let base: string;
const { keys, as, party } = testParties(() => stack);

async function sluice(key: string, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, ['--import', 'tsx', resolve(__dirname, '../../src/cli.ts'), ...args, '--api', base, '--key', key], {
      env: { ...process.env, LOG_LEVEL: 'silent' },
    });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}
/** The CLI as a running process: its first line of output, and its end. */
function spawnSluice(key: string, ...args: string[]) {
  const child = spawn(process.execPath, ['--import', 'tsx', resolve(__dirname, '../../src/cli.ts'), ...args, '--api', base, '--key', key], { env: { ...process.env, LOG_LEVEL: 'silent' } });
  let stdout = '';
  let stderr = '';
  let sawLine: () => void;
  const firstLine = new Promise<void>((resolve) => (sawLine = resolve));
  child.stdout.on('data', (chunk: Buffer) => {
    stdout += chunk.toString();
    if (stdout.includes('\n')) sawLine();
  });
  child.stderr.on('data', (chunk: Buffer) => void (stderr += chunk.toString()));
  const exited = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => child.on('close', (code) => (sawLine(), resolve({ code, stdout, stderr }))));
  return { firstLine, exited };
}
const json = async (key: string, ...args: string[]) => {
  const r = await sluice(key, ...args, '--json');
  return { code: r.code, json: JSON.parse(r.stdout) };
};
const balance = async (account: string) => (await stack.db.pool.query<{ balance: number; held: number }>('select balance, held from accounts where id = $1', [account])).rows[0]!;

beforeAll(async () => {
  stack = await startTestStack();
  base = await stack.app.listen({ port: 0, host: '127.0.0.1' });
  await party('clo-payer', 10_000);
  await party('clo-payee');
}, 60_000);
afterAll(() => stack.stop());

test('streams watch prints a line per change until the stream completes, then the receipt; --json prints the views', async () => {
  const payer = as('clo-payer');
  const open = (ref: string) => payer.post('/v1/streams', { ref, fromAccountId: 'clo-payer.w', toAccountId: 'clo-payee.w', ratePerTick: 10, maxTotal: 40, tickIntervalMs: 1500 });
  // the stream waits, paused, until the watch has printed its first line: however slowly the CLI starts, it sees the stream open
  expect((await open('clo-w1')).status).toBe(201);
  expect((await payer.post('/v1/streams/clo-w1/pause')).status).toBe(200);
  const watch = spawnSluice(keys['clo-payer']!, 'streams', 'watch', 'clo-w1', '--every-ms', '50');
  await watch.firstLine;
  const resumed = await payer.post('/v1/streams/clo-w1/resume');
  expect({ status: resumed.status, body: resumed.body }).toMatchObject({ status: 200 });
  const watched = await watch.exited;
  expect(watched.code).toBe(0);
  const lines = watched.stdout.trim().split('\n');
  // not a terminal: plain lines, a bar toward maxTotal, paid never going back
  expect(lines.at(-1)).toBe('clo-w1 CONFIRMED: paid 40 in 4 ticks, completed by system; escrow returned 0');
  const progress = lines.slice(0, -1);
  expect(progress[0]).toMatch(/^\[[#-]{24}\] +\d+% clo-w1: paid [123]0 of 40, [123] ticks?, paused/);
  expect(progress.length).toBeGreaterThanOrEqual(2);
  for (const l of progress) expect(l).toMatch(/^\[[#-]{24}\] +\d+% clo-w1: paid \d+ of 40, \d ticks?/);
  const paid = progress.map((l) => Number(/paid (\d+)/.exec(l)![1]));
  expect(paid).toEqual([...paid].sort((a, b) => a - b));

  // the other stream commands print a human summary too
  const status = await sluice(keys['clo-payer']!, 'streams', 'status', 'clo-w1');
  expect(status.stdout).toContain('stream: clo-w1 (escrow)\nstatus: CONFIRMED\nfrom → to: clo-payer → clo-payee\naccounts: clo-payer.w → clo-payee.w\nrate: 10 per tick\npaid: 40 of 40 in 4 ticks\n');
  // times read relative to now, the exact time beside them; a closed escrow says what it gave back
  expect(status.stdout).toMatch(/\nopened: \d+ s ago \(\S+Z\)\nclosed: (\d+ s ago|just now) \(\S+Z\): completed by system\nescrow returned: 0\n/);
  expect((await sluice(keys['clo-payer']!, 'operators', 'grant', 'clo-payer', 'clo-payee', '--daily-limit', '300', '--scopes', 'pause')).stdout.split('\n')).toEqual([
    expect.stringMatching(/^PAYER +OPERATOR +SCOPES +DAILY LIMIT +SPENT TODAY +STATE$/),
    expect.stringMatching(/^clo-payer +clo-payee +pause +300 +0 +active$/),
    '',
  ]);

  expect((await open('clo-w2')).status).toBe(201);
  const asJson = await sluice(keys['clo-payee']!, 'streams', 'watch', 'clo-w2', '--every-ms', '50', '--json');
  const views = asJson.stdout.trim().split('\n').map((l) => JSON.parse(l));
  expect(views.at(-1)).toMatchObject({ ref: 'clo-w2', status: 'CONFIRMED', totalPaid: 40, ticks: 4 });
  expect(await balance('clo-payee.w')).toMatchObject({ balance: 80 });
  // an unknown stream: the API's 404, exit 1
  expect(await sluice(keys['clo-payer']!, 'streams', 'watch', 'nope')).toMatchObject({ code: 1, stderr: expect.stringContaining('error 404 not_found') });
}, 60_000);

test('entities: register, show, create subaccounts, list, dashboard and eliminate from the command line', async () => {
  const registered = await json(ADMIN_KEY, 'entities', 'register', 'clo-ent', '--name', 'CLI entity', '--collateral', '100', '--funding', '50');
  expect(registered).toMatchObject({ code: 0, json: { id: 'clo-ent', mainAccountId: 'clo-ent.main' } });
  const key = registered.json.apiKey as string;
  await api(stack.app, ADMIN_KEY).post('/v1/deposits', { accountId: 'clo-ent.main', amount: 1_000 }, 'clo-ent-fund');
  expect((await sluice(key, 'entities', 'show', 'clo-ent')).stdout).toContain('entity: clo-ent\nmain account: clo-ent.main\ncollateral: 100\nfunding: 50');

  expect((await sluice(key, 'entities', 'subaccounts', 'create', 'clo-ent', '--request-id', 'a')).stdout.trim()).toBe('subaccount clo-ent/1: active, account clo-ent/1, funding 50');
  expect((await json(key, 'entities', 'subaccounts', 'create', 'clo-ent', '--request-id', 'b')).json.subaccount).toMatchObject({ id: 'clo-ent/2', status: 'active' });
  // the same request id is the same creation
  expect((await json(key, 'entities', 'subaccounts', 'create', 'clo-ent', '--request-id', 'a')).json.subaccount.id).toBe('clo-ent/1');
  expect(await balance('clo-ent.main')).toEqual({ balance: 1_000 - 100, held: 200 });

  const list = (await sluice(key, 'entities', 'subaccounts', 'list', 'clo-ent')).stdout.split('\n');
  expect(list[0]).toMatch(/^SUBACCOUNT +STATUS +FUNDING +CREATED$/);
  expect(list.slice(1).filter(Boolean).map((l) => l.split(/ +/).slice(0, 3))).toEqual([
    ['clo-ent/1', 'active', '50'],
    ['clo-ent/2', 'active', '50'],
  ]);

  const dashboard = (await sluice(key, 'entities', 'dashboard', 'clo-ent')).stdout;
  expect(dashboard).toContain('entity clo-ent: 2 active');
  expect(dashboard).toContain('totals: balance 100, held 0, open streams 0, paid 0, received 0; main 900 (held 200, collateral 200)');

  const eliminated = await sluice(key, 'entities', 'eliminate', 'clo-ent/2', '--reason', 'retired');
  expect(eliminated.stdout).toContain('subaccount clo-ent/2: eliminated');
  expect(eliminated.stdout).toContain('swept 50 to the entity, collateral released, 0 streams closed');
  expect(await balance('clo-ent.main')).toEqual({ balance: 950, held: 100 });
  // another party's key: the API's 404 (another's entity is not found, as a missing one), exit 1
  expect(await sluice(keys['clo-payer']!, 'entities', 'show', 'clo-ent')).toMatchObject({ code: 1, stderr: expect.stringContaining('error 404 not_found') });
  expect((await runAudit(stack.db.pool)).ok).toBe(true);
}, 60_000);

test('jobs: estimate, start, status, pay and cancel; crown: holders and crown time', async () => {
  const key = keys['clo-payer']!;
  // tier new: budget 0, so every job is gated: the payer pays all
  expect((await sluice(key, 'jobs', 'estimate', '--units', '3')).stdout).toMatch(/decision: gate: pool absorbs 0, you pay \d+/);
  const started = await json(key, 'jobs', 'start', '--account', 'clo-payer.w', '--cost', '40', '--job-id', 'clo-j1');
  expect(started).toMatchObject({ code: 0, json: { jobId: 'clo-j1', decision: 'gate', status: 'awaiting_payment' } });
  const before = await balance('clo-payer.w');
  const paid = await sluice(key, 'jobs', 'pay', 'clo-j1');
  expect(paid.stdout).toContain('paid: 40');
  expect((await balance('clo-payer.w')).balance).toBe(before.balance - 40);
  let status = '';
  for (let i = 0; i < 100 && !status.includes('status: settled'); i++) status = (await sluice(key, 'jobs', 'status', 'clo-j1')).stdout;
  expect(status).toContain('status: settled');

  expect((await json(key, 'jobs', 'start', '--account', 'clo-payer.w', '--cost', '25', '--job-id', 'clo-j2')).json.status).toBe('awaiting_payment');
  const cancelled = await sluice(key, 'jobs', 'cancel', 'clo-j2', '--reason', 'changed my mind');
  expect(cancelled.stdout).toContain('status: cancelled');
  expect(await sluice(key, 'jobs', 'pay', 'clo-j2')).toMatchObject({ code: 1 });

  await party('clo-seller');
  const seller = as('clo-seller');
  // a window in the future: deterministic whatever the clock does (as rates.test.ts)
  const base = tickAt(Date.now()) + 1000;
  expect((await seller.post('/v1/sellers/clo-seller/rates', { ratePerTick: 3, atTick: base + 100, accountId: 'clo-seller.w' })).status).toBe(201);
  expect((await seller.post('/v1/sellers/clo-seller/state', { active: true, atTick: base + 100 })).status).toBe(201);
  const window = ['--from', String(base), '--to', String(base + 150)];
  const crown = (await sluice(key, 'crown', ...window)).stdout.split('\n');
  expect(crown[0]).toBe('market: default (ask: lowest rate wins)');
  // times, not board tick numbers
  expect(crown[1]).toMatch(/^holders now \(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z\): nobody$/);
  expect(crown[2]).toBe(`window ${new Date(base * 1000).toISOString()} to ${new Date((base + 150) * 1000).toISOString()}: 150 ticks, 2 intervals`);
  expect(crown[3]).toMatch(/^SELLER +CROWN TICKS +SHARE$/);
  expect(crown[4]).toMatch(/^clo-seller +50 +33\.3%$/);
  expect(crown.join('\n')).not.toContain(String(base));
  // --market reads another market's crown: the seller posted to the default one only
  expect((await api(stack.app, ADMIN_KEY).post('/v1/markets', { id: 'clo-bids', direction: 'bid' })).status).toBe(201);
  const bids = (await sluice(key, 'crown', '--market', 'clo-bids', ...window)).stdout.split('\n');
  expect(bids[0]).toBe('market: clo-bids (bid: highest rate wins)');
  expect(bids.slice(3)).not.toContainEqual(expect.stringContaining('clo-seller'));
  expect((await json(key, 'crown', ...window)).json.crownTime).toEqual({ 'clo-seller': 50 });
  expect((await runAudit(stack.db.pool)).ok).toBe(true);
}, 90_000);
