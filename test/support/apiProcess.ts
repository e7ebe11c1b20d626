import { spawn } from 'node:child_process';
import { join, resolve } from 'node:path';
import { freePort } from '../../src/dev/ports';

const ROOT = resolve(__dirname, '../..');

export interface ServiceProcess {
  /** The API's base URL (an API process). */
  url: string;
  /** Resolves once the process answers /healthz (an API), or rejects with its stderr if it exits first. */
  ready: Promise<void>;
  /** Its exit code and what it wrote to stderr, once it has exited. */
  exited: Promise<{ code: number | null; stderr: string }>;
  stop(): Promise<void>;
}

/**
 * `sluice api` or `sluice worker` as its own process, on the test's Temporal server and
 * the given database URL, with `env` on top (a loopback API on a free port, outside dev mode).
 */
export async function startServiceProcess(command: 'api' | 'worker', databaseUrl: string, env: NodeJS.ProcessEnv = {}): Promise<ServiceProcess> {
  const port = await freePort();
  const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'src', 'cli.ts'), command], {
    cwd: ROOT,
    env: {
      ...process.env,
      DATABASE_URL: databaseUrl,
      SLUICE_DEV_MODE: 'false',
      SLUICE_ADMIN_KEY: 'process-test-admin-key-0123456789',
      SLUICE_API_HOST: '127.0.0.1',
      SLUICE_API_PORT: String(port),
      TEMPORAL_ADDRESS: process.env.SLUICE_TEST_TEMPORAL_ADDRESS,
      SLUICE_TASK_QUEUE: `process-test-${port}`,
      SLUICE_DAILY_CHECKPOINTS: 'false',
      LOG_LEVEL: 'silent',
      ...env,
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  const exited = new Promise<{ code: number | null; stderr: string }>((r) => child.once('exit', (code) => r({ code, stderr })));
  const url = `http://127.0.0.1:${port}`;
  const ready = (async () => {
    for (;;) {
      if (child.exitCode !== null) throw new Error(`sluice ${command} exited ${child.exitCode}: ${stderr}`);
      if (await fetch(`${url}/healthz`).then((r) => r.ok, () => false)) return;
      await new Promise((r) => setTimeout(r, 200));
    }
  })();
  ready.catch(() => undefined);
  return {
    url,
    ready,
    exited,
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}
