import { randomBytes } from 'node:crypto';
import type { Command } from 'commander';
import type { Config } from '../config';
import { caller, fields, show, table, units, withOutput, type Common } from './client';
import { at, plural } from './format';

/**
 * `sluice sessions open|request|close|show`: prepaid sessions (docs/pool-and-jobs.md,
 * "Sessions") from a shell, through the HTTP API.
 */

/** 202: the workflow had not answered within the API's wait; the same command again waits again. */
const pending = (b: any, again: string) => `still running: ${b.message ?? 'the API stopped waiting'}\nsee ${b.statusUrl}, or run ${again} again to wait again`;

/** A session for people: where its money is, its requests by outcome, when it opened and closed. */
export const sessionSummary = (s: any, now = Date.now()) =>
  fields([
    ['session', `${s.sessionId} (${s.status})`],
    ['payer', `${s.payer} (${s.payerAccountId})`],
    ['account', s.accountId],
    ['funded', s.funded],
    ['debited', s.debited],
    ['refunded', s.status === 'closed' ? `${s.refunded} to ${s.payerAccountId}` : s.refunded],
    ['balance', s.balance],
    [
      'requests',
      `${plural(s.totals.requests, 'request')}` +
        (s.totals.requests ? ` (${[`${s.totals.settled} settled`, s.totals.failed && `${s.totals.failed} failed`, s.totals.running && `${s.totals.running} running`].filter(Boolean).join(', ')})` : ''),
    ],
    ['pool absorbed', s.totals.absorbed || undefined],
    ['opened', at(s.createdAt, now)],
    ['closed', s.closedAt && at(s.closedAt, now)],
  ]);

/** The session and, for `show`, a line per request: how each was decided and where its money went. */
const sessionWithRequests = (s: any) =>
  s.requests?.length
    ? `${sessionSummary(s)}\n\n${table(
        ['REQUEST', 'DECISION', 'STATUS', 'ESTIMATE', 'ABSORBED', 'PAID', 'REFUNDED', 'ACTUAL'],
        s.requests.map((g: any) => [g.requestId, g.decision, g.status, g.estimatedCost, g.absorbed, g.paid, g.refunded, g.actualCost ?? '-']),
      )}`
    : sessionSummary(s);

/** A request (a grant) for people: its decision on the estimate, its status, and where the money went. */
export const requestSummary = (g: any) =>
  fields([
    ['request', `${g.requestId} of session ${g.sessionId}`],
    ['payer', `${g.payer} (${g.tier})`],
    ['decision', `${g.decision}: the pool absorbs up to ${g.advisoryAbsorb} of ${g.estimatedCost}`],
    ['status', g.status],
    ['reserved', g.reserved],
    ['absorbed', g.absorbed],
    ['returned to the pool', g.returned || undefined],
    ['paid from the session', g.paid],
    ['refunded to the session', g.refunded || undefined],
    ['credited to the pool', g.credited || undefined],
    ['actual cost', g.actualCost],
    ['failure', g.failure],
    ['reason', g.reason],
  ]);

/** An actual cost: a whole number of minor units, 0 allowed (work that cost nothing). */
const cost = (v: string) => (v === '0' ? 0 : units(v));

/** A fresh id, printed (on stderr, so --json stays JSON) before the call, with how to repeat the call safely. */
function generated(given: string | undefined, what: string, flag: string, note = ''): string {
  if (given !== undefined) return given;
  const id = `cli-${randomBytes(6).toString('hex')}`;
  console.error(`${what}: ${id} (to retry safely, repeat with ${flag} ${id}${note})`);
  return id;
}

export function sessionCommands(program: Command, config: () => Config): void {
  const api = caller(config);
  const enc = encodeURIComponent;
  const sessions = program.command('sessions').description("prepaid sessions: a balance paid in once, requests charged to it, the rest back at the close");

  withOutput(sessions.command('open').description("open a session: the amount moves from the payer's account into the session's balance"))
    .requiredOption('--from <account>', "the payer's account: funds the session, gets back what remains at the close")
    .requiredOption('--amount <units>', 'moved into the session at once (minor units)')
    .option('--id <sessionId>', 'the session id (default: a new id, printed): opening it again with the same terms is the same session')
    .action((o: Common & { from: string; amount: string; id?: string }) => {
      // checked here rather than by commander: the deposit's one-line refusal, and before an id is made up
      const amount = units(o.amount);
      const sessionId = generated(o.id, 'session id', '--id');
      return show(api, o, (b) => (b.status === 'PENDING' ? pending(b, 'the same open') : sessionSummary(b)), 'POST', '/v1/sessions', { sessionId, accountId: o.from, amount });
    });

  withOutput(sessions.command('request <sessionId>').description('send a request: decided free, partial or gate on its estimate, worked, settled on its actual cost'))
    .requiredOption('--cost <units>', 'the estimate (minor units): decides it, and the most the session pays')
    .option('--request-id <id>', 'the request id within the session (default: a new id, printed): sending it again is the same request')
    .option('--actual <units>', "the simulated work's actual cost (minor units; default: the estimate moved by up to ±20%, the same for the same request)")
    .option('--description <text>', 'what the work is', 'cli request')
    .action((sessionId: string, o: Common & { cost: string; requestId?: string; actual?: string; description: string }) => {
      const estimatedCost = units(o.cost);
      const actual = o.actual === undefined ? undefined : cost(o.actual);
      // the request's terms include its work: a retry must send the same description and --actual
      const requestId = generated(o.requestId, 'request id', '--request-id', ' and the same options');
      const work = { description: o.description, ...(actual !== undefined && { simulate: { actualCost: actual } }) };
      return show(api, o, (b) => (b.status === 'PENDING' ? pending(b, 'the same request') : requestSummary(b)), 'POST', `/v1/sessions/${enc(sessionId)}/requests`, {
        requestId,
        estimatedCost,
        work,
      });
    });

  withOutput(sessions.command('close <sessionId>').description("close a session: new requests refused, what remains back to the payer's account (closing again changes nothing)")).action(
    (sessionId: string, o: Common) => show(api, o, (b) => (b.status === 'PENDING' ? pending(b, 'the same close') : sessionSummary(b)), 'POST', `/v1/sessions/${enc(sessionId)}/close`),
  );

  withOutput(sessions.command('show <sessionId>').description('a session: its balance, totals and every request')).action((sessionId: string, o: Common) =>
    show(api, o, sessionWithRequests, 'GET', `/v1/sessions/${enc(sessionId)}`),
  );
}
