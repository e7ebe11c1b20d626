import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { runAudit } from '../../src/audit';
import { createLogger } from '../../src/logger';
import { ADMIN_KEY, api, startTestStack, type TestStack } from '../support/stack';
import { sleep, until } from '../support/parties';

/**
 * The first hour with the CLI: `sluice parties …`, `accounts …`, `deposit`,
 * `transfer`, `streams list`, `events tail [--follow]` and `login`/`logout`, run as
 * the real CLI against the stack's API on a port; each outcome is checked through the
 * API or the ledger. Every run has its own config directory (XDG_CONFIG_HOME), so a
 * login saved on this machine never leaks in, and none of SLUICE_API_URL/KEY is set.
 */
const run = promisify(execFile);
const CLI = resolve(__dirname, '../../src/cli.ts');
let stack: TestStack;
let base: string;
let env: NodeJS.ProcessEnv;
let configHome: string;
const aliceKey = { value: '' };
/** The API's log lines (JSON), to find a request by the id an error line printed. */
const apiLog: Record<string, any>[] = [];

interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

/** The CLI as a user runs it: args as given (no --api or --key added). */
async function cli(...args: string[]): Promise<Ran> {
  try {
    const { stdout, stderr } = await run(process.execPath, ['--import', 'tsx', CLI, ...args], { env });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as Ran;
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}
/** The CLI with this stack's API and a key. */
const sluice = (key: string, ...args: string[]) => cli(...args, '--api', base, '--key', key);
const json = async (key: string, ...args: string[]) => {
  const r = await sluice(key, ...args, '--json');
  return { ...r, json: JSON.parse(r.stdout) };
};
const balance = async (account: string) => (await stack.db.pool.query<{ balance: number }>('select balance from accounts where id = $1', [account])).rows[0]!.balance;

beforeAll(async () => {
  stack = await startTestStack({ logger: createLogger('info', 'sluice-api', { write: (line: string) => void apiLog.push(JSON.parse(line)) }) });
  base = await stack.app.listen({ port: 0, host: '127.0.0.1' });
  configHome = mkdtempSync(join(tmpdir(), 'sluice-cli-config-'));
  env = { ...process.env, LOG_LEVEL: 'silent', XDG_CONFIG_HOME: configHome };
  for (const name of ['SLUICE_API_URL', 'SLUICE_API_KEY', 'SLUICE_API_HOST', 'SLUICE_API_PORT']) delete env[name];
}, 60_000);
afterAll(() => stack.stop());

test('parties create prints the key once; parties list pages through parties and never shows a key', async () => {
  const created = await sluice(ADMIN_KEY, 'parties', 'create', 'cll-alice', '--name', 'Alice');
  expect(created.code).toBe(0);
  expect(created.stdout).toMatch(/^party: cll-alice\nname: Alice\napi key: sk_cll-alice_\S+\nKeep the API key now: it will not be shown again.\n$/);
  aliceKey.value = /api key: (\S+)/.exec(created.stdout)![1]!;
  // the printed key is the party's
  expect((await api(stack.app, aliceKey.value).post('/v1/accounts', { id: 'cll-alice.w' })).status).toBe(201);
  expect((await json(ADMIN_KEY, 'parties', 'create', 'cll-bob')).json).toMatchObject({ id: 'cll-bob', name: 'cll-bob', apiKey: expect.stringMatching(/^sk_cll-bob_/) });
  expect((await api(stack.app, ADMIN_KEY).post('/v1/accounts', { id: 'cll-bob.w', ownerId: 'cll-bob' })).status).toBe(201);
  // an id taken: the API's 409, exit 1
  expect(await sluice(ADMIN_KEY, 'parties', 'create', 'cll-alice')).toMatchObject({ code: 1, stderr: expect.stringContaining('error 409 already_exists') });

  const listed = await json(ADMIN_KEY, 'parties', 'list', '--after', 'cll-', '--limit', '1');
  expect(listed.json).toEqual({ parties: [{ id: 'cll-alice', name: 'Alice', createdAt: expect.any(String) }], next: 'cll-alice' });
  const rest = await json(ADMIN_KEY, 'parties', 'list', '--after', 'cll-alice');
  expect(rest.json.parties.map((p: { id: string }) => p.id)).toContain('cll-bob');
  expect(rest.json.next).toBeUndefined();
  expect(rest.stdout).not.toMatch(/sk_|apiKey|hash/i);
  const human = (await sluice(ADMIN_KEY, 'parties', 'list', '--after', 'cll-', '--limit', '1')).stdout.split('\n');
  expect(human).toEqual([expect.stringMatching(/^PARTY +NAME +CREATED$/), expect.stringMatching(/^cll-alice +Alice +(\d+ s ago|just now)$/), '1 party; more with --after cll-alice', '']);
  // the admin's list only
  expect(await sluice(aliceKey.value, 'parties', 'list')).toMatchObject({ code: 1, stderr: expect.stringContaining('error 403 forbidden') });
}, 60_000);

test('deposit and transfer move money once per idempotency key; accounts show and create', async () => {
  const deposited = await sluice(ADMIN_KEY, 'deposit', 'cll-alice.w', '1000', '--memo', 'first');
  expect(deposited.code).toBe(0);
  // the generated key is printed, with how to retry with it
  const key = /idempotency key: (cli-[0-9a-f]{16}) \(to retry safely, repeat with --idempotency-key \1\)/.exec(deposited.stderr)![1]!;
  expect(deposited.stdout).toMatch(/^transfer: \d+ \(deposit\)\namount: 1000\nfrom → to: \S+ → cll-alice\.w\nmemo: first\nat: /);
  expect(await balance('cll-alice.w')).toBe(1000);
  // the retry with the printed key: the same transfer, no second deposit
  const retried = await json(ADMIN_KEY, 'deposit', 'cll-alice.w', '1000', '--memo', 'first', '--idempotency-key', key);
  expect(retried.json).toMatchObject({ id: Number(/transfer: (\d+)/.exec(deposited.stdout)![1]), amount: 1000 });
  expect(retried.stderr).toBe('');
  expect(await balance('cll-alice.w')).toBe(1000);

  const moved = await json(aliceKey.value, 'transfer', 'cll-alice.w', 'cll-bob.w', '250', '--idempotency-key', 'cll-t1');
  expect(moved).toMatchObject({ code: 0, json: { kind: 'transfer', debitAccountId: 'cll-alice.w', creditAccountId: 'cll-bob.w', amount: 250 } });
  expect(await sluice(aliceKey.value, 'transfer', 'cll-alice.w', 'cll-bob.w', '250', '--idempotency-key', 'cll-t1')).toMatchObject({ code: 0 });
  expect([await balance('cll-alice.w'), await balance('cll-bob.w')]).toEqual([750, 250]);
  // from another party's account: the API's 404 (not found, as a missing one), exit 1, nothing moved
  expect(await sluice(aliceKey.value, 'transfer', 'cll-bob.w', 'cll-alice.w', '5')).toMatchObject({ code: 1, stderr: expect.stringContaining('error 404 not_found') });

  const shown = await sluice(aliceKey.value, 'accounts', 'show', 'cll-alice.w');
  expect(shown.stdout).toMatch(/^account: cll-alice\.w \(user, [A-Z]+\)\nowner: cll-alice\nbalance: 750\nheld: 0\navailable: 750\ncreated: (\d+ s ago|just now) \(\S+Z\)\n$/);
  expect((await json(aliceKey.value, 'accounts', 'create', 'cll-alice.spare')).json).toMatchObject({ id: 'cll-alice.spare', ownerId: 'cll-alice', balance: 0 });
  expect((await json(ADMIN_KEY, 'accounts', 'create', 'cll-bob.spare', '--owner', 'cll-bob')).json).toMatchObject({ id: 'cll-bob.spare', ownerId: 'cll-bob' });
  expect(await sluice(aliceKey.value, 'accounts', 'show', 'cll-bob.w')).toMatchObject({ code: 1, stderr: expect.stringContaining('error 404 not_found') });
  expect((await runAudit(stack.db.pool)).ok).toBe(true);
}, 60_000);

test('an amount that is not a whole number of minor units is refused before anything is sent: exit 1, nothing changed', async () => {
  const before = [await balance('cll-alice.w'), await balance('cll-bob.w')];
  const events = (await stack.db.pool.query<{ n: number }>('select count(*)::int as n from events')).rows[0]!.n;
  for (const [args, bad] of [
    [['deposit', 'cll-alice.w', '12.50'], '12.50'],
    [['transfer', 'cll-alice.w', 'cll-bob.w', '-5'], '-5'],
    [['transfer', 'cll-alice.w', 'cll-bob.w', '0'], '0'],
    [['deposit', 'cll-alice.w', '1e3'], '1e3'],
  ] as const) {
    const r = await sluice(ADMIN_KEY, ...args);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`amounts are positive whole numbers of minor units (500 for 5.00), not "${bad}"`);
    expect(r.stderr).not.toContain('idempotency key');
  }
  expect([await balance('cll-alice.w'), await balance('cll-bob.w')]).toEqual(before);
  expect((await stack.db.pool.query<{ n: number }>('select count(*)::int as n from events')).rows[0]!.n).toBe(events);
}, 60_000);

test('login checks the key and saves it (0600); later commands use it with no --api or --key; logout forgets it', async () => {
  const profile = join(configHome, 'sluice', 'config.json');
  // a wrong key is refused and nothing is saved
  expect(await cli('login', '--api', base, '--key', 'sk_nobody_x')).toMatchObject({ code: 1, stderr: expect.stringContaining(`not logged in: the API at ${base} refused this key`) });
  expect(existsSync(profile)).toBe(false);

  expect(await cli('login', '--api', `${base}/`, '--key', aliceKey.value)).toMatchObject({ code: 0, stdout: `logged in to ${base} as party cll-alice (saved to ${profile})\n` });
  expect(statSync(profile).mode & 0o777).toBe(0o600);
  expect((await cli('whoami')).stdout).toBe(`party cll-alice at ${base}\n`);
  expect((await cli('accounts', 'show', 'cll-alice.w', '--json')).stdout).toContain('"balance": 750');
  expect(await cli('transfer', 'cll-alice.w', 'cll-bob.w', '50')).toMatchObject({ code: 0 });
  expect([await balance('cll-alice.w'), await balance('cll-bob.w')]).toEqual([700, 300]);
  // a flag still comes first: the admin's key for an admin command
  expect((await cli('parties', 'list', '--key', ADMIN_KEY, '--json')).code).toBe(0);
  // the saved key is never sent to another API
  expect((await cli('accounts', 'show', 'cll-alice.w', '--api', 'http://127.0.0.1:9')).stderr).toContain(`no API key for http://127.0.0.1:9 (the saved login is for ${base})`);

  expect(await cli('logout')).toMatchObject({ code: 0, stdout: `logged out (removed ${profile})\n` });
  expect(existsSync(profile)).toBe(false);
  expect(await cli('accounts', 'show', 'cll-alice.w', '--api', base)).toMatchObject({ code: 1, stderr: expect.stringContaining('pass --key, set SLUICE_API_KEY, or log in with `sluice login') });
}, 60_000);

test('streams list: the caller\'s streams, newest first, with a count; --status narrows it', async () => {
  const alice = api(stack.app, aliceKey.value);
  for (const ref of ['cll-s1', 'cll-s2']) {
    expect((await alice.post('/v1/streams', { ref, fromAccountId: 'cll-alice.w', toAccountId: 'cll-bob.w', ratePerTick: 1, maxTotal: 10, tickIntervalMs: 3_600_000 })).status).toBe(201);
  }
  const human = (await sluice(aliceKey.value, 'streams', 'list')).stdout.split('\n');
  expect(human[0]).toMatch(/^REF +STATUS +PAYER +PAYEE +RATE +PAID +OPENED$/);
  expect(human.slice(1, 3).map((l) => l.split(/ {2,}/))).toEqual([
    ['cll-s2', 'STREAMING', 'cll-alice', 'cll-bob', '1', '1 of 10', expect.stringMatching(/^(\d+ s ago|just now)$/)],
    ['cll-s1', 'STREAMING', 'cll-alice', 'cll-bob', '1', '1 of 10', expect.stringMatching(/^(\d+ s ago|just now)$/)],
  ]);
  expect(human[3]).toBe('2 streams');
  expect((await sluice(aliceKey.value, 'streams', 'list', '--limit', '1')).stdout).toContain('1 stream; more with --after cll-s2');
  expect((await json(aliceKey.value, 'streams', 'list', '--status', 'closed')).json).toEqual({ streams: [] });
  expect((await sluice(aliceKey.value, 'streams', 'list', '--status', 'closed')).stdout).toBe('0 streams\n');
  expect((await json(aliceKey.value, 'streams', 'list', '--after', 'cll-s2')).json.streams.map((s: { ref: string }) => s.ref)).toEqual(['cll-s1']);
}, 60_000);

test('events tail prints the deposit\'s event; --follow prints one that happens after it started, until Ctrl-C', async () => {
  const deposit = await json(ADMIN_KEY, 'deposit', 'cll-bob.w', '70', '--idempotency-key', 'cll-d2');
  const id = String(deposit.json.id);
  const tail = await sluice(ADMIN_KEY, 'events', 'tail', '--subject', id, '--type', 'transfer.posted');
  expect(tail.code).toBe(0);
  expect(tail.stdout).toMatch(new RegExp(`^\\S+Z  \\((\\d+ s ago|just now)\\)  transfer\\.posted  ${id}  amount 70\\n1 event; next: --after \\d+\\n$`));
  // a party sees its own events only: bob's deposit is not alice's
  expect((await json(aliceKey.value, 'events', 'tail', '--subject', id)).json.events).toEqual([]);

  const cursor = (await api(stack.app, ADMIN_KEY).get('/v1/events?after=0&limit=1000')).body.next as number;
  const child = spawn(process.execPath, ['--import', 'tsx', CLI, 'events', 'tail', '--follow', '--type', 'transfer.posted', '--after', String(cursor), '--api', base, '--key', ADMIN_KEY], { env });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((done) => child.on('exit', (code) => done(code)));
  await until('the follow to start', async () => (stderr.includes(`following events after ${cursor} of type transfer.posted (Ctrl-C to stop)`) ? true : undefined));
  // after it started: only this event can be printed
  const later = (await api(stack.app, ADMIN_KEY).post('/v1/deposits', { accountId: 'cll-bob.w', amount: 33 }, 'cll-d3')).body;
  await until('the new event', async () => (stdout.includes(`transfer.posted  ${later.id}  amount 33`) ? true : undefined));
  child.kill('SIGINT');
  expect(await exited).toBe(0);
  expect(stdout.trim().split('\n')).toHaveLength(1);
}, 60_000);

test('an API it cannot reach is named with the fix; a deposit has printed its key first, so the retry is safe', async () => {
  // a port nothing listens on: one the OS just handed out and took back
  const { createServer } = await import('node:net');
  const probe = createServer();
  const port = await new Promise<number>((done) => probe.listen(0, '127.0.0.1', () => done((probe.address() as { port: number }).port)));
  await new Promise((done) => probe.close(done));
  const r = await cli('deposit', 'cll-alice.w', '5', '--api', `http://127.0.0.1:${port}`, '--key', ADMIN_KEY);
  expect(r.code).toBe(1);
  expect(r.stderr).toMatch(/^idempotency key: cli-[0-9a-f]{16} /);
  expect(r.stderr).toContain(`cannot reach the Sluice API at http://127.0.0.1:${port} (ECONNREFUSED)`);
  expect(r.stderr).toMatch(/--api URL/);
  // and every other way to point at it: the environment, or a saved login
  expect(r.stderr).toContain('SLUICE_API_URL');
  expect(r.stderr).toContain('`sluice login --api URL --key KEY`');
});

test('streams list --status paused, --party and --ref-prefix narrow the list as the API does', async () => {
  const alice = api(stack.app, aliceKey.value);
  expect((await alice.post('/v1/streams', { ref: 'cll-p1', fromAccountId: 'cll-alice.w', toAccountId: 'cll-bob.w', ratePerTick: 1, maxTotal: 10, tickIntervalMs: 3_600_000 })).status).toBe(201);
  expect((await alice.post('/v1/streams/cll-p1/pause')).status).toBe(200);
  const paused = await sluice(aliceKey.value, 'streams', 'list', '--status', 'paused');
  expect(paused.stdout.split('\n').slice(1)).toEqual([expect.stringMatching(/^cll-p1 +PAUSED +cll-alice +cll-bob +1 +1 of 10 +(\d+ s ago|just now)$/), '1 stream', '']);
  for (const [args, q] of [
    [['--status', 'paused'], 'status=paused'],
    [['--ref-prefix', 'cll-s'], 'refPrefix=cll-s'],
    [['--party', 'cll-bob', '--limit', '2'], 'party=cll-bob&limit=2'],
    [['--party', 'cll-nobody'], 'party=cll-nobody'],
  ] as const) {
    const listed = await json(aliceKey.value, 'streams', 'list', ...args);
    expect(listed.json).toEqual((await alice.get(`/v1/streams?${q}`)).body);
  }
  expect((await json(aliceKey.value, 'streams', 'list', '--ref-prefix', 'cll-s')).json.streams.map((s: { ref: string }) => s.ref)).toEqual(['cll-s2', 'cll-s1']);
  expect((await json(aliceKey.value, 'streams', 'list', '--party', 'cll-nobody')).json.streams).toEqual([]);
  expect((await alice.post('/v1/streams/cll-p1/cancel')).status).toBe(200);
}, 60_000);

test('streams watch keeps watching a paused stream, says so, and ends at the close with the receipt the API gives', async () => {
  const alice = api(stack.app, aliceKey.value);
  // paused at once (the open bills tick 1): the watch starts on a PAUSED stream
  expect((await alice.post('/v1/streams', { ref: 'cll-w1', fromAccountId: 'cll-alice.w', toAccountId: 'cll-bob.w', ratePerTick: 10, maxTotal: 40, tickIntervalMs: 1000 })).status).toBe(201);
  expect((await alice.post('/v1/streams/cll-w1/pause')).body.status).toBe('PAUSED');
  const child = spawn(process.execPath, ['--import', 'tsx', CLI, 'streams', 'watch', 'cll-w1', '--every-ms', '100', '--api', base, '--key', aliceKey.value], { env });
  let stdout = '';
  child.stdout.on('data', (d) => (stdout += d));
  let exitCode: number | null | undefined;
  const exited = new Promise<number | null>((done) => child.on('exit', (code) => done((exitCode = code))));
  await until('the watch to say the stream is paused', async () => (/cll-w1: paid 10 of 40, 1 tick, paused/.test(stdout) ? true : undefined));
  // paused is not closed: a second later it still watches
  await sleep(1_000);
  expect(exitCode).toBeUndefined();
  expect((await alice.post('/v1/streams/cll-w1/resume')).body.status).toBe('STREAMING');
  expect(await exited).toBe(0);
  const view = (await alice.get('/v1/streams/cll-w1')).body;
  expect(view).toMatchObject({ status: 'CONFIRMED', totalPaid: 40, ticks: 4, escrowReturned: 0 });
  const lines = stdout.trim().split('\n');
  expect(lines[0]).toMatch(/^\[[#-]{24}\] +25% cll-w1: paid 10 of 40, 1 tick, paused (just now|\d+ s ago)$/);
  // after the resume: lines of a streaming stream, then the close in the API's words
  expect(lines.slice(1, -1).every((l) => /cll-w1: paid \d+ of 40, \d ticks?, next tick/.test(l))).toBe(true);
  expect(lines.at(-1)).toBe(`cll-w1 CONFIRMED: paid ${view.totalPaid} in ${view.ticks} ticks, ${view.reason} by ${view.closedBy}; escrow returned 0`);
  // a stream cancelled early: its escrow gave back the rest, in the receipt and the status
  expect((await alice.post('/v1/streams', { ref: 'cll-w2', fromAccountId: 'cll-alice.w', toAccountId: 'cll-bob.w', ratePerTick: 3, maxTotal: 30, tickIntervalMs: 3_600_000 })).status).toBe(201);
  const cancelled = await sluice(aliceKey.value, 'streams', 'cancel', 'cll-w2');
  expect(cancelled.stdout).toContain('accounts: cll-alice.w → cll-bob.w\n');
  expect(cancelled.stdout).toMatch(/\nclosed: .*: cancelled by cll-alice\nescrow returned: 27\n$/);
  expect((await alice.get('/v1/streams/cll-w2')).body.escrowReturned).toBe(27);
  expect((await sluice(aliceKey.value, 'streams', 'status', 'cll-w2')).stdout).toContain('\nescrow returned: 27\n');
  expect((await runAudit(stack.db.pool)).ok).toBe(true);
}, 60_000);

test('streams ticks lists the ticks the API lists, a page at a time or --all', async () => {
  const alice = api(stack.app, aliceKey.value);
  expect((await alice.post('/v1/streams', { ref: 'cll-t1', fromAccountId: 'cll-alice.w', toAccountId: 'cll-bob.w', ratePerTick: 2, maxTotal: 10, tickIntervalMs: 200 })).status).toBe(201);
  await until('the stream to close', async () => ((await alice.get('/v1/streams/cll-t1')).body.status === 'CONFIRMED' ? true : undefined));
  const all = (await alice.get('/v1/streams/cll-t1/ticks')).body;
  expect(all.ticks.map((t: { tick: number; paid: number }) => [t.tick, t.paid])).toEqual([[1, 2], [2, 4], [3, 6], [4, 8], [5, 10]]);

  expect((await json(aliceKey.value, 'streams', 'ticks', 'cll-t1')).json).toEqual(all);
  const first = await json(aliceKey.value, 'streams', 'ticks', 'cll-t1', '--limit', '2');
  expect(first.json).toEqual((await alice.get('/v1/streams/cll-t1/ticks?limit=2')).body);
  expect((await json(aliceKey.value, 'streams', 'ticks', 'cll-t1', '--after', '2', '--limit', '2')).json).toEqual((await alice.get('/v1/streams/cll-t1/ticks?after=2&limit=2')).body);
  // --all follows the cursor to the last page: every tick once, in order
  expect((await json(aliceKey.value, 'streams', 'ticks', 'cll-t1', '--all', '--limit', '2')).json).toEqual({ ref: 'cll-t1', ticks: all.ticks });

  const human = (await sluice(aliceKey.value, 'streams', 'ticks', 'cll-t1', '--limit', '2')).stdout.split('\n');
  expect(human[0]).toMatch(/^TICK +AMOUNT +PAID +BILLED AT +BILLED$/);
  expect(human.slice(1, 3).map((l) => l.split(/ {2,}/))).toEqual(
    all.ticks.slice(0, 2).map((t: any) => [String(t.tick), String(t.amount), String(t.paid), t.billedAt, expect.stringMatching(/^(\d+ s ago|just now)$/)]),
  );
  expect(human.slice(3)).toEqual(['2 ticks; more with --after 2', '']);
  const everything = (await sluice(aliceKey.value, 'streams', 'ticks', 'cll-t1', '--all', '--limit', '2')).stdout.trim().split('\n');
  expect(everything.slice(1, -1).map((l) => Number(l.split(/ +/)[0]))).toEqual([1, 2, 3, 4, 5]);
  expect(everything.at(-1)).toBe('5 ticks');
  // bob is paid by it, so he reads it too; another stream's ref: the API's 404
  expect((await json(ADMIN_KEY, 'streams', 'ticks', 'cll-t1')).json).toEqual(all);
  expect(await sluice(aliceKey.value, 'streams', 'ticks', 'cll-none')).toMatchObject({ code: 1, stderr: expect.stringContaining('error 404 not_found') });
}, 60_000);

test('entities list and show print what the API answers: live subaccounts and creations against the limits', async () => {
  const admin = api(stack.app, ADMIN_KEY);
  const registered = await json(ADMIN_KEY, 'entities', 'register', 'cll-ent', '--name', 'CLI Ent', '--collateral', '10', '--funding', '5', '--cap', '3', '--creations-per-hour', '1');
  expect(registered.code).toBe(0);
  expect((await admin.post('/v1/entities', { id: 'cll-ent2', name: 'Second', collateral: 1, funding: 1 })).status).toBe(201);
  expect((await admin.post('/v1/deposits', { accountId: 'cll-ent.main', amount: 100 }, 'cll-ent-fund')).status).toBe(201);
  const key = registered.json.apiKey as string;
  expect((await api(stack.app, key).post('/v1/entities/cll-ent/subaccounts', { requestId: 'one' })).status).toBe(201);

  // the whole list, and a page of one, as the API answers them
  const listed = await json(ADMIN_KEY, 'entities', 'list', '--after', 'cll-');
  expect(listed.json).toEqual((await admin.get('/v1/entities?after=cll-')).body);
  expect(listed.json.entities.slice(0, 2)).toEqual([
    expect.objectContaining({ id: 'cll-ent', name: 'CLI Ent', liveSubaccounts: 1 }),
    expect.objectContaining({ id: 'cll-ent2', liveSubaccounts: 0 }),
  ]);
  expect((await json(ADMIN_KEY, 'entities', 'list', '--after', 'cll-', '--limit', '1')).json).toEqual((await admin.get('/v1/entities?after=cll-&limit=1')).body);
  const human = (await sluice(ADMIN_KEY, 'entities', 'list', '--after', 'cll-', '--limit', '1')).stdout.split('\n');
  expect(human).toEqual([
    expect.stringMatching(/^ENTITY +NAME +MAIN ACCOUNT +LIVE SUBACCOUNTS +CREATED$/),
    expect.stringMatching(/^cll-ent +CLI Ent +cll-ent\.main +1 +(\d+ s ago|just now)$/),
    '1 entity; more with --after cll-ent',
    '',
  ]);
  // the admin's list only
  expect(await sluice(key, 'entities', 'list')).toMatchObject({ code: 1, stderr: expect.stringContaining('error 403 forbidden') });

  // at the hourly limit: when the next creation is let through (a time the API computes at each call)
  const viewed = (await api(stack.app, key).get('/v1/entities/cll-ent')).body;
  const shown = await json(key, 'entities', 'show', 'cll-ent');
  const { nextCreationAt, ...rest } = shown.json;
  expect(rest).toEqual({ ...viewed, nextCreationAt: undefined });
  expect(rest).toMatchObject({ subaccountCap: 3, creationsPerHour: 1, liveSubaccounts: 1, creationsLastHour: 1 });
  expect(Math.abs(Date.parse(nextCreationAt) - Date.parse(viewed.nextCreationAt))).toBeLessThan(10_000);
  const text = (await sluice(key, 'entities', 'show', 'cll-ent')).stdout;
  expect(text).toContain('\nsubaccounts: 1 of 3 live · 1 of 1 created this hour\n');
  expect(text).toMatch(/\nhourly limit: reached, next creation in (59|60) min \(\S+Z\)\n$/);
  // under the limit: no such line
  const other = (await sluice(ADMIN_KEY, 'entities', 'show', 'cll-ent2')).stdout;
  const second = (await admin.get('/v1/entities/cll-ent2')).body;
  expect(other).toContain(`\nsubaccounts: 0 of ${second.subaccountCap} live · 0 of ${second.creationsPerHour} created this hour\n`);
  expect(other).not.toContain('hourly limit');
}, 90_000);

test("an error line gives the API's message, then the request id (as in the API's log and X-Request-Id) and the doc link", async () => {
  const r = await sluice(ADMIN_KEY, 'accounts', 'show', 'cll-nobody.w');
  expect(r.code).toBe(1);
  const lines = r.stderr.trim().split('\n');
  expect(lines).toEqual(['error 404 not_found: account cll-nobody.w not found', expect.stringMatching(/^ {2}request req_[0-9a-f]{16}, see http:\/\/127\.0\.0\.1:\d+\/errors#not_found$/)]);
  const id = /request (req_[0-9a-f]{16})/.exec(lines[1]!)![1]!;
  // the API logged that very request, a 404 for that account
  const logged = await until('the API to log the request', async () => apiLog.find((l) => l.requestId === id && l.res?.statusCode) ?? undefined);
  expect(logged.res.statusCode).toBe(404);
  expect(apiLog.find((l) => l.requestId === id && l.req)?.req.url).toBe('/v1/accounts/cll-nobody.w');
  // the same request answers its id in X-Request-Id, in the body's format
  const direct = await fetch(`${base}/v1/accounts/cll-nobody.w`, { headers: { authorization: `Bearer ${ADMIN_KEY}` } });
  const body = (await direct.json()) as { error: { request_id: string; doc_url: string } };
  expect(direct.headers.get('x-request-id')).toBe(body.error.request_id);
  expect(body.error.request_id).toMatch(/^req_[0-9a-f]{16}$/);
  expect(lines[1]).toContain(body.error.doc_url);
  // a refused field is named: the message names it already, so it is not repeated
  const bad = await sluice(ADMIN_KEY, 'streams', 'list', '--limit', '5000');
  expect(bad.stderr).toMatch(/^error 400 invalid_request: .*limit.*\n {2}request req_[0-9a-f]{16}, see \S+\/errors#invalid_request\n$/);
  // --json prints the API's error body whole
  expect(JSON.parse((await sluice(ADMIN_KEY, 'accounts', 'show', 'cll-nobody.w', '--json')).stdout).error).toMatchObject({ code: 'not_found', request_id: expect.stringMatching(/^req_/) });
}, 60_000);
