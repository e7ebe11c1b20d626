#!/usr/bin/env node
import { Command, Option } from 'commander';
import { databaseUrl, loadConfig, migrationDatabaseUrl, roleOptions, type Config } from './config';
import { createPool, redactUrl } from './db/pool';
import { migrateLedger } from './ledger/setup';
import { ensureTemporalTools } from './temporal/tools';
import { streamCommands } from './cli/streams';
import { entityCommands } from './cli/entities';
import { jobCommands } from './cli/jobs';
import { ledgerCommands } from './cli/ledger';
import { keyCommands } from './cli/keys';
import { loginCommands } from './cli/login';
import { sessionCommands } from './cli/sessions';


/** `sluice` — the dev stack, the services, and the operator's commands. */
const program = new Command('sluice').description('Sluice: per-tick payments between machines').showHelpAfterError();

program
  .command('dev')
  .description('bring up PostgreSQL, Temporal, the worker and the API, and run the demo (same as npm start)')
  .option('--no-demo', 'skip the demo')
  .option('--exit-after-demo', 'stop what was started once the demo has run')
  .action(async (opts: { demo: boolean; exitAfterDemo?: boolean }) => {
    const { launch } = await import('./dev/launcher');
    await launch(loadConfig(), { demo: opts.demo, exitAfterDemo: opts.exitAfterDemo ?? false });
  });

/** A child of the launcher has an IPC channel open, which alone would keep the process alive after a clean shutdown. */
const leaveLauncher = () => process.connected && process.disconnect();

program
  .command('worker')
  .description('run a Temporal worker (workflows + activities) on the task queue')
  .action(async () => {
    const config = loadConfig();
    const { runWorker } = await import('./worker');
    const { createLogger } = await import('./logger');
    const { installTemporalLogging, temporalLevel } = await import('./temporal/logging');
    const log = createLogger(config.LOG_LEVEL, 'sluice-worker');
    installTemporalLogging(log, temporalLevel(config.LOG_LEVEL));
    const pool = createPool(databaseUrl(config));
    const { runtimeRoleRefusal } = await import('./db/roles');
    const refusal = await runtimeRoleRefusal(pool, config.SLUICE_DEV_MODE);
    if (refusal) {
      await pool.end();
      throw new Error(refusal);
    }
    // started by the launcher: leave with it, never outlive it as an orphan
    process.once('disconnect', () => process.kill(process.pid, 'SIGTERM'));
    await runWorker(
      { pool, address: config.TEMPORAL_ADDRESS, namespace: config.TEMPORAL_NAMESPACE, taskQueue: config.SLUICE_TASK_QUEUE,
        budgets: config.SLUICE_TIER_BUDGETS,
        limits: { cap: config.SLUICE_SUBACCOUNT_CAP, perHour: config.SLUICE_SUBACCOUNT_CREATIONS_PER_HOUR },
        streamQuotas: config.SLUICE_TIER_STREAM_QUOTAS,
        faults: config.SLUICE_FAULTS,
        billing: { shards: config.SLUICE_BILLING_SHARDS, rowsMax: config.SLUICE_BILLING_ROWS_MAX },
        reconcileIntervalMs: config.SLUICE_RECONCILE_INTERVAL_MS,
        dailyCheckpoints: config.SLUICE_DAILY_CHECKPOINTS,
        version: { deploymentName: config.SLUICE_WORKER_DEPLOYMENT, buildId: config.SLUICE_WORKER_BUILD_ID },
        devMode: config.SLUICE_DEV_MODE,
      },
      log,
    );
    await pool.end();
    leaveLauncher();
  });

program
  .command('api')
  .description('run the HTTP API')
  .action(async () => {
    const { runApi } = await import('./api/server');
    await runApi(loadConfig());
    leaveLauncher();
  });

program
  .command('migrate')
  .description("apply the database migrations as the tables' owner (SLUICE_MIGRATION_DATABASE_URL, else DATABASE_URL) and grant the runtime and read-only roles")
  .action(async () => {
    const config = loadConfig();
    const url = migrationDatabaseUrl(config);
    const applied = await migrateLedger(url, { ...roleOptions(config), poolSeedUnits: config.SLUICE_POOL_SEED_UNITS });
    console.log(`${applied.length ? `applied migrations ${applied.join(', ')}` : 'migrations up to date'} (database ${redactUrl(url)})`);
  });

program
  .command('simulate')
  .description('run a seeded market of buyers and sellers against the running stack; exits 1 if the auditor finds a violation, 2 for a bad scenario file')
  .addOption(new Option('--scenario <file>', 'a scenario file (YAML, see scenarios/); the flags below are the built-in one').conflicts(['buyers', 'sellers', 'rounds', 'partition']))
  .option('--buyers <n>', 'buyers', (v) => Number.parseInt(v, 10), 5)
  .option('--sellers <n>', 'sellers', (v) => Number.parseInt(v, 10), 5)
  .option('--rounds <n>', 'rounds', (v) => Number.parseInt(v, 10), 100)
  .option('--seed <n>', 'seed (overrides the scenario\'s)', (v) => Number.parseInt(v, 10), 42)
  .option('--round-ms <n>', 'wall time of a round (overrides the scenario\'s)', (v) => Number.parseInt(v, 10), 100)
  .option('--partition', 'some parties go silent for a stretch, then return')
  .option('--api <url>', 'API base URL (default from SLUICE_API_HOST/PORT)')
  .action(async (opts: { scenario?: string; buyers: number; sellers: number; rounds: number; seed: number; roundMs: number; partition?: boolean; api?: string }, cmd: Command) => {
    const { scenarioFromFlags } = await import('./domain/simulation');
    const { loadScenario, ScenarioFileError } = await import('./scenario');
    let scenario;
    if (opts.scenario) {
      // a bad file is reported before anything is sent to the API
      scenario = await loadScenario(opts.scenario).catch((error: unknown) => {
        if (!(error instanceof ScenarioFileError)) throw error;
        console.error(`sluice simulate: ${error.message}`);
        return undefined;
      });
      if (!scenario) {
        process.exitCode = 2;
        return;
      }
      if (cmd.getOptionValueSource('seed') === 'cli') scenario.seed = opts.seed;
      if (cmd.getOptionValueSource('roundMs') === 'cli') scenario.roundMs = opts.roundMs;
    } else {
      scenario = scenarioFromFlags({ ...opts, partition: opts.partition ?? false });
    }
    const config = loadConfig();
    const { runSimulation, formatSimulation } = await import('./simulate');
    const { apiBase, httpCaller } = await import('./cli/client');
    const api = apiBase(opts, config);
    const { barUnderLog } = await import('./cli/progress');
    // on a terminal a bar redrawn every round under the log's lines; otherwise the log alone (a line every 20 rounds)
    const bar = barUnderLog(process.stderr, 'simulate');
    const result = await runSimulation({
      scenario,
      ...(opts.scenario ? { scenarioFile: opts.scenario } : {}),
      call: httpCaller(api),
      adminKey: config.SLUICE_ADMIN_KEY,
      log: bar.log,
      onRound: (done, rounds, opened) => bar.update(`round ${done}/${rounds}, ${opened} streams opened`, done, rounds),
    });
    bar.finish('rounds done');
    console.log(formatSimulation(result));
    if (!result.audit.ok) process.exitCode = 1;
  });

program
  .command('audit')
  .description('check every ledger and stream invariant over the whole database; exits 1 on any violation')
  .option('--json', 'print the report as JSON')
  .action(async (opts: { json?: boolean }) => {
    const config = loadConfig();
    const { runAudit, formatAudit } = await import('./audit');
    const url = databaseUrl(config);
    // which database this is, said before the verdict (on stderr with --json, so stdout stays JSON)
    (opts.json ? console.error : console.log)(`auditing ${redactUrl(url)} (DATABASE_URL, else the local default)`);
    const pool = createPool(url, 2);
    // Temporal is asked too: money held open whose workflow is gone is a violation
    const { connectClient } = await import('./temporal/connection');
    const client = await connectClient(config.TEMPORAL_ADDRESS, config.TEMPORAL_NAMESPACE).catch((error: Error) => error);
    const report = await runAudit(pool, client instanceof Error ? { unreachable: `${config.TEMPORAL_ADDRESS}: ${client.message}` } : { client, taskQueue: config.SLUICE_TASK_QUEUE });
    if (!(client instanceof Error)) await client.connection.close();
    await pool.end();
    console.log(opts.json ? JSON.stringify(report, null, 2) : formatAudit(report));
    if (!report.ok) process.exitCode = 1;
  });

program
  .command('retention')
  .description(
    "as the tables' owner (SLUICE_MIGRATION_DATABASE_URL, else DATABASE_URL): make the monthly partitions ahead, expire request " +
      'idempotency keys past SLUICE_IDEMPOTENCY_WINDOW_DAYS, and archive the months beyond SLUICE_RETENTION_MONTHS after a green audit',
  )
  .option('--before <month>', 'archive the months before this one (YYYY-MM) instead')
  .option('--dry-run', 'say what would be done, change nothing')
  .action(async (opts: { before?: string; dryRun?: boolean }) => {
    const config = loadConfig();
    const { runRetention, formatRetention } = await import('./retention');
    const url = migrationDatabaseUrl(config);
    console.log(`retention on ${redactUrl(url)}${opts.dryRun ? ' (dry run)' : ''}`);
    const pool = createPool(url, 2);
    try {
      const report = await runRetention(pool, {
        keepMonths: config.SLUICE_RETENTION_MONTHS,
        idempotencyWindowDays: config.SLUICE_IDEMPOTENCY_WINDOW_DAYS,
        before: opts.before,
        dryRun: opts.dryRun,
      });
      console.log(formatRetention(report));
    } catch (error) {
      const { SluiceError } = await import('./domain/errors');
      if (!(error instanceof SluiceError)) throw error;
      console.error(`sluice retention: ${error.message}`);
      process.exitCode = 1;
    } finally {
      await pool.end();
    }
  });

program
  .command('tools')
  .description('find (or install into .tools/) the Temporal CLI and the time-skipping test server, and print them')
  .action(() => {
    const { cli } = ensureTemporalTools();
    if (!cli.path) process.exitCode = 1;
  });

loginCommands(program, loadConfig);
ledgerCommands(program, loadConfig);
keyCommands(program, loadConfig);
streamCommands(program, loadConfig);
entityCommands(program, loadConfig);
jobCommands(program, loadConfig);
sessionCommands(program, loadConfig);

program.parseAsync().catch((error: Error) => {
  console.error(`sluice: ${error.message}`);
  process.exit(1);
});
