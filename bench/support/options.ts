/**
 * The command line every bench shares: commander, integer options with a lower bound,
 * and the two options every bench takes (the server to run on, JSON output).
 */
import { Command, InvalidArgumentError } from 'commander';

/** A commander parser for an integer option with a lower bound. */
export function integerAtLeast(min: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isSafeInteger(n) || n < min) throw new InvalidArgumentError(`expected an integer >= ${min}`);
    return n;
  };
}

/** The server a benchmark runs on: --database-url, else TEST_DATABASE_URL, DATABASE_URL, the local server. */
export const DEFAULT_BENCH_SERVER = process.env.TEST_DATABASE_URL ?? process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

/** The options every bench takes: where to run, and JSON output. */
export interface BenchOptions {
  databaseUrl: string;
  json: boolean;
}

/** A bench's command line, named as its npm script (`bench:ledger`); add its own options, then parseBenchOptions. */
export const benchCommand = (name: string, description: string) => new Command().name(name).description(description);

/**
 * Adds --database-url and --json after the bench's own options, parses the command
 * line and returns the options. `refine` checks them together or fills in presets; it
 * may end the run with `command.error`.
 */
export function parseBenchOptions<O extends BenchOptions>(command: Command, refine?: (o: O, command: Command) => void): O {
  command
    .option('--database-url <url>', 'the server to benchmark on (a database sluice_bench_* is created there and dropped after)', DEFAULT_BENCH_SERVER)
    .option('--json', 'print one JSON object instead of the table', false)
    .parse();
  const o = command.opts<O>();
  refine?.(o, command);
  return o;
}

/** The options a report shows: all but where the bench ran and how it prints. */
export function shownOptions<O extends BenchOptions>(o: O): Omit<O, keyof BenchOptions> {
  const { databaseUrl: _url, json: _json, ...shown } = o;
  return shown;
}
