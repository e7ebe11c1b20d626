import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createTestDatabase, type TestDatabase } from '../support/db';
import { freePort } from '../support/globalSetup';
import { streamWorkflowId } from '../../src/domain/streams';
import { connectClient } from '../../src/temporal/connection';
import { startDevServer } from '../../src/temporal/devServer';
import { resolveTool, TEMPORAL_CLI } from '../../src/temporal/tools';

const ROOT = resolve(__dirname, '..', '..');

/** Runs `sluice dev` as `npm start` does, collecting its output. */
function launcher(env: NodeJS.ProcessEnv, args: string[] = []) {
  const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'src/cli.ts'), 'dev', ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (d) => (output += d));
  child.stderr!.on('data', (d) => (output += d));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const waitFor = async (text: string, timeoutMs = 150_000) => {
    const deadline = Date.now() + timeoutMs;
    while (!output.includes(text)) {
      if (child.exitCode !== null) throw new Error(`launcher exited (${child.exitCode}) before "${text}":\n${output}`);
      if (Date.now() > deadline) throw new Error(`no "${text}" within ${timeoutMs} ms:\n${output}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  };
  return { child, exited, waitFor, output: () => output };
}

const portOpen = (port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => (socket.destroy(), resolve(true)));
    socket.once('error', () => resolve(false));
  });

let db: TestDatabase;
let dataDir: string;
let first: ChildProcess | undefined;

beforeAll(async () => {
  db = await createTestDatabase();
  dataDir = mkdtempSync(join(tmpdir(), 'sluice-launcher-'));
});
afterAll(async () => {
  first?.kill('SIGKILL');
  await db.drop();
  rmSync(dataDir, { recursive: true, force: true });
});

test('npm start brings up Temporal, worker and API, runs the demo, a second start reuses them, and Ctrl-C leaves no process behind', async () => {
  const [temporalPort, uiPort, apiPort] = [await freePort(), await freePort(), await freePort()];
  const env = {
    ...process.env,
    DATABASE_URL: db.url,
    TEMPORAL_ADDRESS: `127.0.0.1:${temporalPort}`,
    TEMPORAL_UI_PORT: String(uiPort),
    SLUICE_API_PORT: String(apiPort),
    SLUICE_DATA_DIR: dataDir,
    SLUICE_ADMIN_KEY: 'launcher-test-admin-key',
  };
  const one = launcher(env);
  first = one.child;
  await one.waitFor('ready; Ctrl-C stops everything');
  const out = one.output();
  expect(out).toContain(`Temporal: dev server at 127.0.0.1:${temporalPort}`);
  // the demo's headline, with real figures: two keys, a stream ticking, its receipt and the escrow it gave back
  expect(out).toMatch(/alice-\w+\s+sk_alice-\w+_\S+\s+\(buyer agent; 10,000 deposited\)/);
  expect(out).toMatch(/bob-\w+\s+sk_bob-\w+_\S+\s+\(GPU seller\)/);
  for (let t = 1; t <= 5; t++) expect(out).toMatch(new RegExp(`tick ${t}  paid\\s+${25 * t}  escrow left ${(2000 - 25 * t).toLocaleString('en-US')}`));
  const receipt = out.match(/CONFIRMED after (\d+) ticks: paid ([\d,]+), escrow returned ([\d,]+) \(cancelled by alice-\w+\)/);
  expect(receipt).not.toBeNull();
  const [ticks, paid, returned] = receipt!.slice(1).map((n) => Number(n.replace(/,/g, ''))) as [number, number, number];
  expect([paid, paid + returned]).toEqual([25 * ticks, 2000]);
  expect(out).toMatch(new RegExp(`alice-\\w+\\.wallet\\s+balance\\s+${(10_000 - paid).toLocaleString('en-US')}\\s+held 0`));
  expect(out).toMatch(/subaccount fleet-\w+\/1 active, account fleet-\w+\/1 \(saga subaccount-create-fleet-\w+\/\w+\); 1 of 500 live/);
  expect(out).toContain('decided free, reserved 40');
  expect(out).toContain('settled: the work cost 30, the pool absorbed 30');
  expect(out).toMatch(/the crown \(lowest qualifying rate\) is carol-\w+'s at 18/);
  expect(out).toMatch(/npx sluice login --api http:\/\/127\.0\.0\.1:\d+ --key sk_alice-/);
  expect(out).toMatch(/demo done in [\d.]+ s/);
  expect(out).toContain(`API docs   http://127.0.0.1:${apiPort}/docs`);
  expect(out).toContain(`console    http://127.0.0.1:${apiPort}/console/`);
  expect(out).toContain(`Temporal   http://127.0.0.1:${uiPort}`);
  const docs = await fetch(`http://127.0.0.1:${apiPort}/docs`);
  expect(docs.status).toBe(200);
  expect(await portOpen(uiPort)).toBe(true);

  // a second start finds everything running, runs its demo against it and starts nothing
  const two = launcher(env, ['--exit-after-demo']);
  expect(await two.exited).toBe(0);
  expect(two.output()).toContain(`Temporal: reusing the server at 127.0.0.1:${temporalPort}`);
  expect(two.output()).toContain(`API: reusing http://127.0.0.1:${apiPort}`);
  // its own parties, its own stream, and a crown of its own sellers (the first run's left the board)
  expect(two.output()).toMatch(/escrow returned/);
  const runs = [one.output(), two.output()].map((o) => o.match(/stream (gpu-job-\w+)\)/)![1]);
  expect(new Set(runs).size).toBe(2);
  expect(two.output()).toMatch(/the crown \(lowest qualifying rate\) is carol-\w+'s at 18, as of/);
  expect(two.output()).not.toMatch(/is carol-\w+, carol-/);

  // Ctrl-C: every child the first launcher started goes away with it
  one.child.kill('SIGINT');
  expect(await one.exited).toBe(0);
  expect(one.output()).toContain('stopped API');
  expect(one.output()).toContain('stopped worker');
  // each child shut down on its own (an IPC channel left open once kept them alive until SIGKILL)
  expect(one.output()).not.toContain('SIGKILL');
  for (const port of [temporalPort, uiPort, apiPort]) expect(await portOpen(port)).toBe(false);

  // both demos streamed once each, and closed their streams
  const { rows } = await db.pool.query(`select ref, status from streams order by opened_at`);
  expect(rows.map((r: any) => [r.ref, r.status])).toEqual(runs.map((ref) => [ref, 'closed']));

  // Temporal's state is the SQLite file under the data dir: a restarted server still knows the payment workflows
  const server = await startDevServer({ cliPath: resolveTool(TEMPORAL_CLI).path!, port: temporalPort, dbFile: join(dataDir, 'temporal.db') });
  try {
    const client = await connectClient(server.address, 'default');
    const described = await client.workflow.getHandle(streamWorkflowId(rows[0].ref)).describe();
    expect(described.status.name).toBe('COMPLETED');
    await client.connection.close();
  } finally {
    await server.stop();
  }
});
