/**
 * bench:streams' command line: the phases to run, their sizes and windows, the billing
 * clock's settings and the dev server's; `--quick` for a small run.
 */
import { InvalidArgumentError, Option } from 'commander';
import { BILLING_ROWS_MAX_DEFAULT, BILLING_SHARDS_DEFAULT } from '../../src/domain/billing';
import { benchCommand, integerAtLeast, parseBenchOptions, type BenchOptions } from '../support/options';

export interface Options extends BenchOptions {
  quick: boolean;
  only?: 'capacity' | 'latency';
  capacityStreams: number;
  capacityIntervalMs: number;
  capacitySeconds: number;
  capacityWarmupSeconds: number;
  capacityOpen: 'ledger' | 'api';
  latencyStreams: number;
  latencyIntervalMs: number;
  latencySeconds: number;
  cancels: number;
  cancelRate: number;
  openConcurrency: number;
  bareStarts: number;
  plainStarts: number;
  streamsPerPair: number;
  shards: number;
  rowsMax: number;
  poolSize: number;
  pgbenchClients?: number;
  pgbenchSeconds: number;
  pgbenchScale?: number;
  timerShiftMs?: number;
  dynamicConfig: Record<string, unknown>;
}

/** --quick: a smoke run of about a minute (each option given explicitly still wins). */
const QUICK: Partial<Options> = {
  capacityStreams: 1000,
  capacitySeconds: 8,
  capacityWarmupSeconds: 4,
  latencyStreams: 200,
  bareStarts: 200,
  latencySeconds: 8,
  cancels: 30,
  pgbenchSeconds: 8,
};

/** `KEY=VALUE` of --dynamic-config, added to those before it (the value is JSON if it parses, else a string). */
function dynamicConfigValue(v: string, acc: Record<string, unknown>): Record<string, unknown> {
  const eq = v.indexOf('=');
  if (eq <= 0) throw new InvalidArgumentError('expected KEY=VALUE');
  const raw = v.slice(eq + 1);
  let value: unknown = raw;
  try {
    value = JSON.parse(raw);
  } catch {
    // a plain string, e.g. 10ms
  }
  return { ...acc, [v.slice(0, eq)]: value };
}

export const parseOptions = () =>
  parseBenchOptions<Options>(
    benchCommand('bench:streams', 'billing clock: billed ticks/s against pgbench tps, tick lag and cancel latency, stream opens against bare workflow starts')
      .option('--quick', 'a small smoke run (~1 minute)', false)
      .addOption(new Option('--only <phase>', 'run one phase only').choices(['capacity', 'latency']))
      .option('--capacity-streams <n>', 'streams offered to the capacity phase', integerAtLeast(1), 5000)
      .option('--capacity-interval-ms <n>', "capacity streams' tick interval (the API's lower bound is 100)", integerAtLeast(100), 100)
      .option('--capacity-seconds <n>', 'capacity measurement window', integerAtLeast(1), 20)
      .option('--capacity-warmup-seconds <n>', 'billing before the capacity window opens', integerAtLeast(0), 10)
      .addOption(new Option('--capacity-open <how>', 'ledger: openStream straight on the database, then wake the clocks; api: startStreamWorkflow (the real path)').choices(['ledger', 'api']).default('ledger'))
      .option('--latency-streams <n>', 'streams of the latency phase (and bare workflows)', integerAtLeast(1), 2000)
      .option('--latency-interval-ms <n>', "latency streams' tick interval", integerAtLeast(100), 1000)
      .option('--latency-seconds <n>', 'tick lag measurement window', integerAtLeast(1), 30)
      .option('--cancels <n>', 'streams cancelled with their cancel → receipt time measured', integerAtLeast(1), 100)
      .option('--cancel-rate <n>', 'measured cancels started per second', integerAtLeast(1), 20)
      .option('--open-concurrency <n>', 'update-with-start calls in flight (stream opens and bare starts alike)', integerAtLeast(1), 50)
      // the ratio compares the bare starts with as many of the first stream opens
      .option('--bare-starts <n>', 'bare workflows started (at most --latency-streams)', integerAtLeast(1), 500)
      .option('--plain-starts <n>', 'plain workflow.start calls of a bare workflow, for context (0: none)', integerAtLeast(0), 0)
      // Every billing transaction locks the accounts of its streams: streams sharing payers
      // and payees make shards wait on each other. By default each group of 10 streams has
      // a payer and a payee of its own; stream i belongs to group i % groups.
      .option('--streams-per-pair <n>', 'streams sharing one payer and one payee', integerAtLeast(1), 10)
      .option('--shards <n>', "billing clock shards (SLUICE_BILLING_SHARDS)", integerAtLeast(1), BILLING_SHARDS_DEFAULT)
      .option('--rows-max <n>', 'ticks one billing transaction writes at most (SLUICE_BILLING_ROWS_MAX)', integerAtLeast(1), BILLING_ROWS_MAX_DEFAULT)
      // createPool's default max, as `sluice worker` runs
      .option('--pool-size <n>', "the worker's PostgreSQL pool size", integerAtLeast(1), 10)
      .option('--pgbench-clients <n>', 'pgbench -c (default: the shard count)', integerAtLeast(1))
      .option('--pgbench-seconds <n>', 'pgbench -T', integerAtLeast(1), 20)
      .option('--pgbench-scale <n>', 'pgbench -i -s (default: the client count)', integerAtLeast(1))
      .option('--timer-shift-ms <n>', "the dev server's history.timerProcessorMaxTimeShift (default: startDevServer's, 10 ms)", integerAtLeast(1))
      // e.g. --dynamic-config history.timerProcessorMaxPollRPS=1000
      .option('--dynamic-config <key=value>', 'a dynamic config value for the dev server (repeatable)', dynamicConfigValue, {}),
    (o, command) => {
      if (!o.quick) return;
      for (const [key, value] of Object.entries(QUICK)) {
        if (command.getOptionValueSource(key) === 'default') (o as unknown as Record<string, unknown>)[key] = value;
      }
    },
  );
