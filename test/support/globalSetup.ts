import { writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bundleWorkflowCode } from '@temporalio/worker';
import { startDevServer, type DevServer } from '../../src/temporal/devServer';
import { ensureTemporalTools } from '../../src/temporal/tools';
import { freePort } from '../../src/dev/ports';
import { buildConsole } from './consoleBuild';

export { freePort };

/**
 * Once per test run: resolve the Temporal binaries (installing them into .tools/
 * if needed), start one in-memory dev server with Sluice's search attributes, and
 * bundle the workflows once. Test files share the server; each runs its own worker
 * on its own task queue against its own database.
 */
export default async function globalSetup(): Promise<void> {
  const { cli, testServer } = ensureTemporalTools((line) => process.stdout.write(`\n[tools] ${line}`));
  if (!cli.path) throw new Error('the Temporal CLI could not be found or installed (see the lines above)');
  const server = await startDevServer({ cliPath: cli.path, port: await freePort() });
  (globalThis as { __temporalDevServer?: DevServer }).__temporalDevServer = server;
  process.env.SLUICE_TEST_TEMPORAL_ADDRESS = server.address;
  if (testServer.path) process.env.SLUICE_TEST_TIME_SKIPPING_SERVER = testServer.path;

  buildConsole();
  const { code } = await bundleWorkflowCode({ workflowsPath: require.resolve('../../workflows'), logger: quietLogger });
  const dir = join(tmpdir(), 'sluice-test');
  mkdirSync(dir, { recursive: true });
  const bundlePath = join(dir, `workflow-bundle-${process.pid}.js`);
  writeFileSync(bundlePath, code);
  process.env.SLUICE_TEST_WORKFLOW_BUNDLE = bundlePath;
  process.stdout.write(`\n[temporal] dev server ${server.address}, workflow bundle ${bundlePath}\n`);
}

const noop = () => undefined;
const quietLogger = { trace: noop, debug: noop, info: noop, warn: noop, error: (m: string) => process.stderr.write(`${m}\n`), log: noop };
