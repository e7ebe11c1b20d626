import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { ADMIN_KEY, api, startTestStack, type TestStack } from '../support/stack';

/**
 * `sluice keys create|list|revoke` run as the real CLI against the stack's API on a
 * port: a rotation from the command line (create, switch, revoke), in human output
 * and --json; the admin's --party.
 */
const run = promisify(execFile);
const CLI = resolve(__dirname, '../../src/cli.ts');
let stack: TestStack;
let base: string;
let env: NodeJS.ProcessEnv;

async function sluice(key: string, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, ['--import', 'tsx', CLI, ...args, '--api', base, '--key', key], { env });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

beforeAll(async () => {
  stack = await startTestStack();
  base = await stack.app.listen({ port: 0, host: '127.0.0.1' });
  env = { ...process.env, LOG_LEVEL: 'silent', XDG_CONFIG_HOME: mkdtempSync(join(tmpdir(), 'sluice-cli-config-')) };
  for (const name of ['SLUICE_API_URL', 'SLUICE_API_KEY', 'SLUICE_API_HOST', 'SLUICE_API_PORT']) delete env[name];
}, 60_000);
afterAll(() => stack.stop());

test('a rotation from the command line: create prints the key once, list shows both, the old one revoked is refused and the new one works', async () => {
  const old = (await api(stack.app, ADMIN_KEY).post('/v1/parties', { id: 'clk', name: 'clk' })).body.apiKey as string;

  const created = await sluice(old, 'keys', 'create');
  expect(created.code).toBe(0);
  const fresh = /^api key: (sk_clk_\S+)$/m.exec(created.stdout)?.[1];
  expect(fresh).toBeDefined();
  expect(created.stdout).toMatch(/^key: \d+ \(sk_clk_.{6}…\)$/m);
  expect(created.stdout).toContain('it will not be shown again');

  const listed = await sluice(fresh!, 'keys', 'list');
  expect(listed.code).toBe(0);
  expect(listed.stdout).toMatch(/^ID\s+PARTY\s+PREFIX\s+CREATED\s+LAST USED\s+REVOKED/m);
  expect(listed.stdout).toContain('2 keys');
  expect(listed.stdout).not.toContain(fresh!);
  const ids = JSON.parse((await sluice(fresh!, 'keys', 'list', '--json')).stdout).keys.map((k: { id: number }) => k.id);
  expect(ids).toHaveLength(2);

  // the old key, revoked with the new one
  const revoked = await sluice(fresh!, 'keys', 'revoke', String(ids[0]), '--json');
  expect(revoked.code).toBe(0);
  expect(JSON.parse(revoked.stdout)).toMatchObject({ id: ids[0], party: 'clk', revokedAt: expect.any(String) });
  expect(await sluice(old, 'keys', 'list')).toMatchObject({ code: 1, stderr: expect.stringContaining('error 401 unauthorized') });
  // the last active key, revoked with itself: the API's 409, exit 1, still working
  expect(await sluice(fresh!, 'keys', 'revoke', String(ids[1]))).toMatchObject({ code: 1, stderr: expect.stringContaining('error 409 invalid_state') });
  expect((await sluice(fresh!, 'keys', 'list')).code).toBe(0);
});

test('the admin issues and revokes a key for a party with --party', async () => {
  await api(stack.app, ADMIN_KEY).post('/v1/parties', { id: 'clk-lost', name: 'lost' });
  const created = JSON.parse((await sluice(ADMIN_KEY, 'keys', 'create', '--party', 'clk-lost', '--json')).stdout);
  expect(created).toMatchObject({ party: 'clk-lost', apiKey: expect.stringMatching(/^sk_clk-lost_/) });
  expect((await sluice(created.apiKey, 'keys', 'list')).code).toBe(0);
  const revoked = await sluice(ADMIN_KEY, 'keys', 'revoke', String(created.id), '--party', 'clk-lost');
  expect(revoked.code).toBe(0);
  expect(revoked.stdout).toMatch(/^revoked: .*\(\d{4}-\d\d-\d\dT/m);
  expect(await sluice(created.apiKey, 'keys', 'list')).toMatchObject({ code: 1, stderr: expect.stringContaining('error 401') });
});
