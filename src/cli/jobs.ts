import { randomBytes } from 'node:crypto';
import type { Command } from 'commander';
import type { Config } from '../config';
import { caller, fields, int, show, table, units, withOutput, type Common } from './client';
import { plural } from './format';

/** How a grant job reads: its decision, status and where the money went. */
export const jobSummary = (g: any) =>
  fields([
    ['job', g.jobId],
    ['payer', `${g.payer} (${g.tier})`],
    ['decision', `${g.decision}: the pool absorbs up to ${g.advisoryAbsorb} of ${g.estimatedCost}`],
    ['status', g.status],
    ['reserved', g.reserved],
    ['absorbed', g.absorbed],
    ['paid', g.paid],
    ['refunded', g.refunded || undefined],
    ['credited to the pool', g.credited || undefined],
    ['actual cost', g.actualCost],
    ['failure', g.failure],
  ]);

/** `sluice jobs …` (grant jobs) and `sluice crown`, through the HTTP API. */
export function jobCommands(program: Command, config: () => Config): void {
  const api = caller(config);
  const enc = encodeURIComponent;
  const jobs = program.command('jobs').description('grant jobs: the free-tier pool absorbs part of small jobs');
  withOutput(jobs.command('estimate').description('what a job of N units would cost and get now (reserves nothing)'))
    .requiredOption('--units <n>', 'units of work', int)
    .option('--payer <party>', 'for another payer (admin)')
    .action((o: Common & { units: number; payer?: string }) =>
      show(
        api,
        o,
        (e) =>
          fields([
            ['estimated cost', `${e.estimatedCost} (${e.units} units at ${e.pricePerUnit})`],
            ['decision', `${e.decision.mode}: pool absorbs ${e.decision.absorbUnits}, you pay ${e.decision.chargeUnits}`],
            ['budget today', `${e.budget.remaining} of ${e.budget.daily} left (${e.budget.tier})`],
            ['pool available', e.pool?.available],
          ]),
        'GET',
        `/v1/estimate?units=${o.units}${o.payer ? `&payer=${enc(o.payer)}` : ''}`,
      ),
    );
  withOutput(jobs.command('start').description('start a job: decided before this returns; a free job runs at once'))
    .requiredOption('--account <id>', "the payer's account")
    .option('--cost <units>', 'the estimate in minor units', units)
    .option('--units <n>', 'or units of work (priced by the API)', int)
    .option('--description <text>', 'what the work is', 'cli job')
    .option('--job-id <id>', 'the job id (default: generated)')
    .action((o: Common & { account: string; cost?: number; units?: number; description: string; jobId?: string }) =>
      show(api, o, jobSummary, 'POST', '/v1/jobs', {
        jobId: o.jobId ?? `cli-${randomBytes(6).toString('hex')}`,
        accountId: o.account,
        ...(o.cost !== undefined && { estimatedCost: o.cost }),
        ...(o.units !== undefined && { units: o.units }),
        work: { description: o.description },
      }),
    );
  withOutput(jobs.command('status <id>').description('a job and its grant')).action((id: string, o: Common) => show(api, o, jobSummary, 'GET', `/v1/jobs/${enc(id)}`));
  withOutput(jobs.command('pay <id>').description('pay a partial or gate job (paying again changes nothing)')).action((id: string, o: Common) => show(api, o, jobSummary, 'POST', `/v1/jobs/${enc(id)}/payment`));
  withOutput(jobs.command('cancel <id>').description('cancel before it settles: reservation released, payment refunded'))
    .option('--reason <text>')
    .action((id: string, o: Common & { reason?: string }) => show(api, o, jobSummary, 'POST', `/v1/jobs/${enc(id)}/cancel`, o.reason ? { reason: o.reason } : {}));

  withOutput(program.command('crown').description("who holds a market's crown now, and crown time per seller over a window of ticks [from, to) (a tick is a second)"))
    .option('--market <id>', 'the market (default: `default`)')
    .option('--from <tick>', 'first tick (default: an hour before --to)', int)
    .option('--to <tick>', 'end tick, excluded (default: now)', int)
    .action((o: Common & { market?: string; from?: number; to?: number }) => {
      const q = new URLSearchParams({
        ...(o.market !== undefined && { market: o.market }),
        ...(o.from !== undefined && { from: String(o.from) }),
        ...(o.to !== undefined && { to: String(o.to) }),
      });
      return show(
        api,
        o,
        (c) => {
          const sellers = Object.entries(c.crownTime as Record<string, number>).sort(([, a], [, b]) => b - a);
          const window = c.to - c.from;
          // times, not board tick numbers (seconds since the epoch, which nobody reads)
          return [
            `market: ${c.market} (${c.direction}: ${c.direction === 'bid' ? 'highest' : 'lowest'} rate wins)`,
            `holders now (${c.current.at}): ${c.current.holders.join(', ') || 'nobody'}${c.current.bestRate !== null ? ` at ${c.current.bestRate} per tick` : ''}`,
            `window ${c.fromAt} to ${c.toAt}: ${plural(window, 'tick')}, ${plural(c.intervalCount, 'interval')}`,
            table(['SELLER', 'CROWN TICKS', 'SHARE'], sellers.map(([s, t]) => [s, Number.isInteger(t) ? t : t.toFixed(3), `${((100 * t) / window).toFixed(1)}%`])),
          ].join('\n');
        },
        'GET',
        `/v1/crown${q.size ? `?${q}` : ''}`,
      );
    });
}
