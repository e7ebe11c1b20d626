/**
 * bench:streams' run: the stack (a fresh database, our own dev server, the real worker
 * and the bare one), the phases in order (latency, pgbench, capacity), the books
 * verified after the workers stop, and the report. See bench/streams.ts for what each
 * phase measures.
 */
import { setCurrentVersion } from '../../src/temporal/deployments';
import { randomBytes } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { bundleWorkflowCode, NativeConnection, Worker } from '@temporalio/worker';
import pg from 'pg';
import { createPool, type Pool } from '../../src/db/pool';
import type { StreamReceipt } from '../../src/domain/streams';
import { migrateLedger } from '../../src/ledger/setup';
import { PRECISE_TIMERS } from '../../src/temporal/devServer';
import { createWorker } from '../../src/worker';
import { serverVersion, withBenchDatabase } from '../support/database';
import { runPgbench, type PgbenchRun } from '../support/pgbench';
import { printJson, printLines } from '../support/report';
import { log, phaseProgress, phasesDone } from '../support/runner';
import { interruptibleRun, TemporalStack, temporalCli } from '../support/stack';
import { bareActivities, bareStarts, cancelThroughApi, openThroughApi, retried } from './calls';
import { capacityPhase, type CapacityResult } from './capacity';
import { machineBusyCores } from './cpu';
import { latencyPhase } from './latency';
import { parseOptions } from './options';
import { lines, type Report } from './report';
import { PoolRecorder } from './sql';
import { setUpPairs, type Stack } from './stack';
import { verify } from './verify';

const NAMESPACE = 'default';

export async function main(): Promise<void> {
  const o = parseOptions();
  const runId = randomBytes(3).toString('hex');
  const runLatency = o.only !== 'capacity';
  const runCapacity = o.only !== 'latency';
  const pgbenchClients = o.pgbenchClients ?? o.shards;

  // Ctrl-C or a kill ends the run and still stops everything and drops the databases
  const run = interruptibleRun();

  // what the machine is doing before we start: on a shared box, the neighbours
  const busyBefore = await machineBusyCores(2);

  const cli = temporalCli();
  const server = await serverVersion(o.databaseUrl);

  await withBenchDatabase(o.databaseUrl, async (url, name) => {
    const temporal = new TemporalStack(run.signal);
    const sql = new PoolRecorder();
    let pool: Pool | undefined;
    let monitor: pg.Client | undefined;
    let bundlePath: string | undefined;
    try {
      log('migrations, payers, payees, deposits');
      await migrateLedger(url);
      pool = createPool(url, o.poolSize);
      sql.instrument(pool);
      const latencyPairs = runLatency ? await setUpPairs(pool, `lat-${runId}`, o.latencyStreams, o.streamsPerPair) : [];
      const capacityPairs = runCapacity ? await setUpPairs(pool, `cap-${runId}`, o.capacityStreams, o.streamsPerPair) : [];
      await pool.query('vacuum analyze');
      // a connection of its own for clocks, sampling and reading: never queued behind the activities
      monitor = new pg.Client({ connectionString: url, application_name: 'sluice-bench-monitor' });
      await monitor.connect();

      const dynamicConfig = { ...(o.timerShiftMs !== undefined && { 'history.timerProcessorMaxTimeShift': `${o.timerShiftMs}ms` }), ...o.dynamicConfig };
      const devServer = await temporal.startDevServer(cli, dynamicConfig);

      // one bundle: the real workflows (for createWorker) plus the bare one (its own worker)
      log('bundling the workflows (the real ones and the bare baseline)');
      const quiet = () => undefined;
      const { code } = await bundleWorkflowCode({
        workflowsPath: require.resolve('./workflows'),
        logger: { trace: quiet, debug: quiet, info: quiet, warn: quiet, error: (m: string) => log(m), log: quiet },
      });
      bundlePath = join(tmpdir(), `sluice-bench-streams-${process.pid}-${runId}.js`);
      writeFileSync(bundlePath, code);

      const taskQueue = `bench-streams-${runId}`;
      const bareQueue = `${taskQueue}-bare`;
      log(`worker on ${taskQueue} (createWorker: real activities, ${o.shards} billing clock shards); bare worker on ${bareQueue}`);
      const { worker, connection, version } = await createWorker({
        pool,
        address: devServer.address,
        namespace: NAMESPACE,
        taskQueue,
        workflowBundlePath: bundlePath,
        billing: { shards: o.shards, rowsMax: o.rowsMax },
      });
      temporal.run(worker, connection);
      const bareConnection = await NativeConnection.connect({ address: devServer.address });
      temporal.run(await Worker.create({ connection: bareConnection, namespace: NAMESPACE, taskQueue: bareQueue, activities: bareActivities, workflowBundle: { code } }), bareConnection);

      const client = await temporal.connectClient(NAMESPACE);
      // the worker is a version of a deployment of its own: current before any stream starts
      await setCurrentVersion(client, version!);
      const stack: Stack = {
        client,
        taskQueue,
        bareQueue,
        pool,
        sql,
        monitor,
        database: name,
        serverPid: devServer.process.pid,
        o,
        signal: run.signal,
        runId,
      };

      const steps = (runLatency ? 4 : 0) + (runCapacity ? 3 : 0) + 1;
      let done = 0;
      const step = (text: string) => phaseProgress(done++, steps, text);
      const receipts = new Map<string, StreamReceipt>();

      const body = async () => {
        // warm-up: one stream and one bare workflow through every path, the pool's connections open
        log('warm-up: a stream opened and cancelled, a bare workflow started');
        const warmPair = (latencyPairs[0] ?? capacityPairs[0])!;
        const warmRef = `warm-${runId}`;
        await openThroughApi(stack, [warmRef], [warmPair], 1000);
        await bareStarts(stack, 1, 'warm');
        await sleep(1500, undefined, { signal: run.signal });
        receipts.set(warmRef, (await cancelThroughApi(stack, warmRef, warmPair.payer)).receipt);
        const warm = await Promise.all(Array.from({ length: o.poolSize }, () => stack.pool.connect()));
        warm.forEach((c) => c.release());

        const latency = runLatency ? await latencyPhase(stack, latencyPairs, receipts, step) : undefined;
        let pgbench: PgbenchRun | undefined;
        let capacity: CapacityResult | undefined;
        if (runCapacity) {
          step(`pgbench: -c ${pgbenchClients} -T ${o.pgbenchSeconds} on a scratch database (the clock idle)`);
          pgbench = await withBenchDatabase(
            o.databaseUrl,
            (scratchUrl) => runPgbench(scratchUrl, { clients: pgbenchClients, threads: Math.min(2, pgbenchClients), seconds: o.pgbenchSeconds, scale: o.pgbenchScale ?? pgbenchClients }, run.signal),
            `${name}_pgbench`,
          );
          log(`pgbench: ${pgbench.tps.toFixed(0)} tps`);
          capacity = await capacityPhase(stack, capacityPairs, step);
        }
        step('stopping the workers, verifying the books');
        return { latency, pgbench, capacity };
      };
      const { latency, pgbench, capacity } = await temporal.untilEnded(body());

      // the clock stops billing before the books are read (the read is one snapshot anyway)
      run.stopping();
      await temporal.stopWorkers();
      const verification = await verify(monitor, runId, receipts);
      phasesDone(`${steps} phases done`);

      const ratioTicksPgbench = capacity && pgbench ? capacity.billedTicksPerSecond / pgbench.tps : undefined;
      const targets: Report['targets'] = {};
      if (ratioTicksPgbench !== undefined) targets['ratio ticks/pgbench'] = { value: ratioTicksPgbench, target: '>= 5', met: ratioTicksPgbench >= 5 };
      if (latency) {
        targets['tick lag p99'] = { value: latency.lag.p99, target: '<= 0.1 interval', met: latency.lag.p99 <= 0.1 };
        targets['cancel p99'] = { value: latency.cancel.p99, target: '<= 0.1 interval', met: latency.cancel.p99 <= 0.1 };
        targets['ratio opens/bare starts'] = { value: latency.ratioOpensBare, target: '>= 0.8', met: latency.ratioOpensBare >= 0.8 };
      }
      const report: Report = {
        temporalCli: cli.version,
        postgresVersion: server,
        devServerConfig: { ...PRECISE_TIMERS, ...dynamicConfig },
        shards: o.shards,
        rowsMax: o.rowsMax,
        poolSize: o.poolSize,
        streamsPerPair: o.streamsPerPair,
        machineBusyBeforeCores: busyBefore,
        capacity,
        pgbench,
        ratioTicksPgbench,
        latency,
        verification,
        retriedCalls: retried,
        targets,
      };
      if (o.json) printJson(report);
      else printLines(lines(report));
      if (!verification.ok) {
        log('verification failed: the books are wrong (see the books line)');
        process.exitCode = 1;
      }
    } finally {
      run.stopping(); // from here, a call failing as its connection closes is noted, not fatal
      await temporal.stop();
      await monitor?.end().catch(() => undefined);
      await pool?.end().catch(() => undefined);
      if (bundlePath) rmSync(bundlePath, { force: true });
    }
  });
}
