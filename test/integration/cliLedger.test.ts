import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { runAudit } from '../../src/audit';
import { ADMIN_KEY, api, startTestStack, type TestStack } from '../support/stack';
import { until } from '../support/parties';

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
  stack = await startTestStack();
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
  // from another party's account: the API's 403, exit 1, nothing moved
  expect(await sluice(aliceKey.value, 'transfer', 'cll-bob.w', 'cll-alice.w', '5')).toMatchObject({ code: 1, stderr: expect.stringContaining('error 403 forbidden') });

  const shown = await sluice(aliceKey.value, 'accounts', 'show', 'cll-alice.w');
  expect(shown.stdout).toMatch(/^account: cll-alice\.w \(user, [A-Z]+\)\nowner: cll-alice\nbalance: 750\nheld: 0\navailable: 750\ncreated: (\d+ s ago|just now) \(\S+Z\)\n$/);
  expect((await json(aliceKey.value, 'accounts', 'create', 'cll-alice.spare')).json).toMatchObject({ id: 'cll-alice.spare', ownerId: 'cll-alice', balance: 0 });
  expect((await json(ADMIN_KEY, 'accounts', 'create', 'cll-bob.spare', '--owner', 'cll-bob')).json).toMatchObject({ id: 'cll-bob.spare', ownerId: 'cll-bob' });
  expect(await sluice(aliceKey.value, 'accounts', 'show', 'cll-bob.w')).toMatchObject({ code: 1, stderr: expect.stringContaining('error 403 forbidden') });
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
});
