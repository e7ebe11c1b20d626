/**
 * How a bench runs: its progress lines and phase bar on stderr, Ctrl-C, and its main
 * with a failure turned into a message and a non-zero exit code.
 */
import { barUnderLog } from '../../src/cli/progress';

/**
 * Progress goes to stderr; results alone go to stdout (so `--json` can be piped). On a
 * terminal a bar over the measured phases stays under the log lines; piped, the log
 * lines alone.
 */
const run = barUnderLog(process.stderr, 'bench');
export const log = run.log;

/** Moves the phase bar (terminals only): `done` of `total` phases, what runs now. */
export const phaseProgress = (done: number, total: number, text: string) => run.update(`bench: ${text}`, done, total);

/** Ends the phase bar's line before the results are printed. */
export const phasesDone = run.finish;

/**
 * Ctrl-C or a kill aborts the returned signal (pgbench is killed, the loops stop) instead
 * of ending the process, so the bench still cleans up (drops its database).
 */
export function abortOnInterrupt(): AbortController {
  const abort = new AbortController();
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => abort.abort(new Error(`interrupted (${sig})`)));
  return abort;
}

/** Runs a bench's main; a failure is printed and sets a non-zero exit code. */
export function runBench(main: () => Promise<void>): void {
  main().catch((error: unknown) => {
    console.error('bench failed:', error instanceof Error ? error.message : error);
    process.exitCode = 1;
  });
}
