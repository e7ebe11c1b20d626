import { randomBytes } from 'node:crypto';
import type { Command } from 'commander';
import type { Config } from '../config';
import { caller, errorLine, fields, int, page, print, query, show, table, units, withOutput, type Common } from './client';
import { ago, at, plural } from './format';
import { progress } from './progress';

/**
 * `sluice streams …` and `sluice operators …`: the stream controls from a shell,
 * through the HTTP API (the same routes, the same authorisation). The key is
 * --key or SLUICE_API_KEY; the API --api or SLUICE_API_HOST/PORT. Each command
 * prints a human summary (--json: the API's JSON answer) and exits 1 on an error answer.
 */
export function streamCommands(program: Command, config: () => Config): void {
  const api = caller(config);
  const call = (opts: Common, method: 'GET' | 'POST', path: string, body?: unknown, idempotencyKey?: string) => show(api, opts, streamSummary, method, path, body, idempotencyKey);
  const grantCall = (opts: Common, method: 'GET' | 'POST', path: string, body?: unknown) => show(api, opts, grantSummary, method, path, body);
  const ref = (r: string) => encodeURIComponent(r);

  const streams = program.command('streams').description('open, watch and control streams through the API');
  withOutput(streams.command('open').description('open a stream (to --to, to --best, or split among --member account=weight …)'))
    .requiredOption('--from <account>', "the payer's account")
    .option('--to <account>', 'the payee account')
    .option('--best', 'route to a current crown holder')
    .option('--member <account=weight...>', 'a distribution member (repeat)')
    .requiredOption('--rate <units>', 'units per tick', units)
    .option('--max <units>', 'maxTotal (leave out with --payg for an open-ended stream)', units)
    .option('--interval-ms <ms>', 'tick interval', int, 1000)
    .option('--payg', 'pay as you go instead of escrow')
    .option('--ref <ref>', 'the stream ref (default: a new one, printed; open again with it and you get the same stream, never a second)')
    .option('--rate-consent <who>', "'payee': rate changes wait for the payee")
    .option('--low-balance-ticks <n>', 'warn this many ticks before the money runs out', int)
    .action((o) =>
      call(o, 'POST', '/v1/streams', {
        fromAccountId: o.from,
        ...(o.to && { toAccountId: o.to }),
        ...(o.best && { payee: 'best' }),
        ...(o.member && {
          members: (o.member as string[]).map((m) => {
            const [accountId, weight] = m.split('=');
            return { accountId, weight: int(weight ?? '1') };
          }),
        }),
        ratePerTick: o.rate,
        ...(o.max !== undefined && { maxTotal: o.max }),
        tickIntervalMs: o.intervalMs,
        mode: o.payg ? 'payg' : 'escrow',
        // a ref of its own: the API refuses an open without one (a retry must not open twice)
        ref: o.ref ?? `cli-${randomBytes(6).toString('hex')}`,
        ...(o.rateConsent && { rateConsent: o.rateConsent }),
        ...(o.lowBalanceTicks !== undefined && { lowBalanceTicks: o.lowBalanceTicks }),
      }),
    );
  withOutput(streams.command('list').description("your streams, newest first (the admin's: everyone's)"))
    .option('--status <status>', 'open (streaming or paused), paused, closed or failed')
    .option('--party <party>', 'only streams this party pays, is paid by or is a member of')
    .option('--ref-prefix <prefix>', 'only streams whose ref starts with this')
    .option('--after <ref>', 'the last ref of the previous page')
    .option('--limit <n>', 'at most this many', int)
    .action((o: Common & { status?: string; party?: string; refPrefix?: string; after?: string; limit?: number }) =>
      show(api, o, streamList, 'GET', `/v1/streams${query({ status: o.status, party: o.party, refPrefix: o.refPrefix, after: o.after, limit: o.limit })}`),
    );
  withOutput(streams.command('status <ref>').description('paid so far, ticks, next tick, when the money runs out')).action((r: string, o: Common) => call(o, 'GET', `/v1/streams/${ref(r)}`));
  withOutput(streams.command('ticks <ref>').description('its billed ticks in order: amount, paid so far, when billed'))
    .option('--after <tick>', 'ticks after this one (0: from the first)', int)
    .option('--limit <n>', 'ticks per page', int)
    .option('--all', 'every page, to the last tick')
    .action((r: string, o: Common & { after?: number; limit?: number; all?: boolean }) => listTicks(api, o, r));
  withOutput(streams.command('watch <ref>').description('a live paid-so-far line (a bar toward maxTotal) while the stream is open, paused or not; its receipt once it closes'))
    .option('--every-ms <ms>', 'how often to look', int, 500)
    .action((r: string, o: Common & { everyMs: number }) => watchStream(api, o, r, o.everyMs));
  withOutput(streams.command('cancel <ref>').description('close a stream; prints the receipt'))
    .option('--reason <text>')
    .action((r: string, o: Common & { reason?: string }) => call(o, 'POST', `/v1/streams/${ref(r)}/cancel`, o.reason ? { reason: o.reason } : {}));
  for (const action of ['pause', 'resume'] as const) {
    withOutput(streams.command(`${action} <ref>`).description(`${action} a stream`)).action((r: string, o: Common) => call(o, 'POST', `/v1/streams/${ref(r)}/${action}`));
  }
  withOutput(streams.command('deposit <ref>').description("top a stream up from one of your accounts (maxTotal grows by the amount)"))
    .requiredOption('--from <account>')
    .requiredOption('--amount <units>', 'units', units)
    .option('--idempotency-key <key>', 'repeat a top-up safely (default: a fresh key)')
    .action((r: string, o: Common & { from: string; amount: number; idempotencyKey?: string }) =>
      call(o, 'POST', `/v1/streams/${ref(r)}/deposits`, { fromAccountId: o.from, amount: o.amount }, o.idempotencyKey ?? `cli-${randomBytes(8).toString('hex')}`),
    );
  withOutput(streams.command('rate <ref> <units>').description('change the rate from the next tick (or propose it, if the payee must agree)')).action((r: string, units: string, o: Common) =>
    call(o, 'POST', `/v1/streams/${ref(r)}/rate`, { ratePerTick: int(units) }),
  );
  withOutput(streams.command('accept-rate <ref> <units>').description("the payee agrees to the payer's proposed rate")).action((r: string, units: string, o: Common) =>
    call(o, 'POST', `/v1/streams/${ref(r)}/rate/accept`, { ratePerTick: int(units) }),
  );
  withOutput(streams.command('batch <file>').description('open or cancel up to 100 streams from a JSON file of items ([{op: "open", ...}, {op: "cancel", ref}])')).action(
    async (file: string, o: Common) => {
      const { readFileSync } = await import('node:fs');
      return show(api, o, batchSummary, 'POST', '/v1/streams/batch', { items: JSON.parse(readFileSync(file, 'utf8')) });
    },
  );

  const operators = program.command('operators').description('let another party open, pause or cancel your streams');
  withOutput(operators.command('grant <payer> <operator>'))
    .requiredOption('--daily-limit <units>', 'what its streams may commit per UTC day', int)
    .option('--scopes <list>', 'comma-separated: open,pause,cancel', 'open,pause,cancel')
    .action((payer: string, operator: string, o: Common & { dailyLimit: number; scopes: string }) =>
      grantCall(o, 'POST', `/v1/parties/${payer}/operators`, { operator, dailyLimit: o.dailyLimit, scopes: o.scopes.split(',') }),
    );
  withOutput(operators.command('revoke <payer> <operator>')).action((payer: string, operator: string, o: Common) => grantCall(o, 'POST', `/v1/parties/${payer}/operators/${operator}/revoke`));
  withOutput(operators.command('list <party>')).option('--as <role>', 'payer or operator', 'payer').action((party: string, o: Common & { as: string }) =>
    grantCall(o, 'GET', `/v1/parties/${party}/operators?as=${o.as}`),
  );
}

/** A stream's view or receipt, for people. */
export function streamSummary(v: any): string {
  const to = v.payee ?? (v.members ? v.members.map((m: any) => `${m.party}×${m.weight}`).join(', ') : '?');
  return fields([
    ['stream', `${v.ref} (${v.mode}${v.kind ? `, ${v.kind}` : ''})`],
    ['status', v.status + (v.pausedAt && v.status !== 'PAUSED' ? ', paused' : '')],
    ['from → to', `${v.payer} → ${to}`],
    ['accounts', v.fromAccountId && `${v.fromAccountId} → ${v.toAccountId ?? (v.members ? v.members.map((m: any) => m.accountId).join(', ') : '?')}`],
    ['rate', `${v.ratePerTick} per tick`],
    ['paid', `${v.totalPaid}${v.maxTotal !== undefined ? ` of ${v.maxTotal}` : ''} in ${plural(v.ticks, 'tick')}`],
    ['deposited', v.deposited || undefined],
    ['opened', v.openedAt && at(v.openedAt)],
    ['paused', v.pausedAt && at(v.pausedAt)],
    ['next tick', v.nextTickAt && at(v.nextTickAt)],
    ['runs out', v.depletion ? `${plural(v.depletion.ticksLeft, 'tick')} left (${v.depletion.limitedBy})${v.depletion.at ? `, ${ago(v.depletion.at)}` : ''}` : undefined],
    ['closed', v.closedAt ? `${at(v.closedAt)}: ${v.reason ?? ''}${v.closedBy ? ` by ${v.closedBy}` : ''}` : undefined],
    ['escrow returned', v.escrowReturned],
    ['failure', v.failure],
  ]);
}

const grantLine = (g: any) => [g.payer, g.operator, g.scopes.join(','), g.dailyLimit, g.spentToday, g.revokedAt ? 'revoked' : 'active'];
const GRANT_HEADER = ['PAYER', 'OPERATOR', 'SCOPES', 'DAILY LIMIT', 'SPENT TODAY', 'STATE'];
/** An operator grant, or a list of them. */
export const grantSummary = (b: any) => table(GRANT_HEADER, (b.grants ?? [b]).map(grantLine));

/** A page of streams: one line each, newest first. */
export const streamList = (b: any) =>
  page(
    ['REF', 'STATUS', 'PAYER', 'PAYEE', 'RATE', 'PAID', 'OPENED'],
    b.streams.map((v: any) => [v.ref, v.status, v.payer, v.payee ?? plural(v.members?.length ?? 0, 'member'), v.ratePerTick, `${v.totalPaid}${v.maxTotal !== undefined ? ` of ${v.maxTotal}` : ''}`, ago(v.openedAt)]),
    plural(b.streams.length, 'stream'),
    b.next,
  );

/** A batch's outcome: one line per item. */
export const batchSummary = (b: any) =>
  `${b.succeeded} succeeded, ${b.failed} failed\n` +
  table(['#', 'OP', 'STATUS', 'RESULT'], b.results.map((r: any) => [r.index, r.op, r.status, r.body.error ? `${r.body.error.code}: ${r.body.error.message}` : `${r.body.ref} ${r.body.status}`]));

/** How a stream's progress reads in one line. */
export const streamLine = (v: { ref: string; status?: string; totalPaid: number; maxTotal?: number; ticks: number; accruedUnbilled?: number; nextTickAt?: string; pausedAt?: string }) =>
  `${v.ref}: paid ${v.totalPaid}${v.maxTotal !== undefined ? ` of ${v.maxTotal}` : ''}, ${plural(v.ticks, 'tick')}` +
  (v.status === 'PAUSED' || v.pausedAt ? `, paused${v.pausedAt ? ` ${ago(v.pausedAt)}` : ''}` : v.nextTickAt ? `, next tick ${ago(v.nextTickAt)}` : '') +
  (v.accruedUnbilled ? `, ${v.accruedUnbilled} accrued` : '');

/** How a closed stream ends, in one line: its status, what it paid, why, and what its escrow gave back. */
export const closedLine = (v: { ref: string; status: string; totalPaid: number; ticks: number; reason?: string; failure?: string; closedBy?: string; escrowReturned?: number }) =>
  `${v.ref} ${v.status}: paid ${v.totalPaid} in ${plural(v.ticks, 'tick')}, ${v.reason ?? v.failure ?? 'closed'}${v.closedBy ? ` by ${v.closedBy}` : ''}` +
  (v.escrowReturned !== undefined ? `; escrow returned ${v.escrowReturned}` : '');

/** Streams that are still open: billing (STREAMING) or with the clock stopped (PAUSED). A watch ends at any other status. */
const OPEN = new Set(['STREAMING', 'PAUSED']);

/** A page of a stream's ticks: tick, amount, the running total, when it was billed. */
export const tickList = (b: any, now = Date.now()) =>
  page(
    ['TICK', 'AMOUNT', 'PAID', 'BILLED AT', 'BILLED'],
    b.ticks.map((t: any) => [t.tick, t.amount, t.paid, t.billedAt, ago(t.billedAt, now)]),
    plural(b.ticks.length, 'tick'),
    b.next === undefined ? undefined : String(b.next),
  );

/**
 * `streams ticks`: a page of the stream's billed ticks after --after; with --all every
 * page from there to the last tick (the API's cursor, never skipping nor repeating a
 * tick), printed as one list (--json: one answer with every tick).
 */
async function listTicks(api: ReturnType<typeof caller>, o: Common & { after?: number; limit?: number; all?: boolean }, ref: string): Promise<void> {
  const get = (after?: number) => api(o, 'GET', `/v1/streams/${encodeURIComponent(ref)}/ticks${query({ after, limit: o.limit })}`);
  let res = await get(o.after);
  if (o.all && res.status < 400) {
    const ticks = [...res.body.ticks];
    while (res.body.next !== undefined) {
      res = await get(res.body.next);
      if (res.status >= 400) break;
      ticks.push(...res.body.ticks);
    }
    if (res.status < 400) res = { status: res.status, body: { ref: res.body.ref, ticks } };
  }
  print(res, o, (b) => tickList(b));
}

/**
 * `streams watch`: polls the stream's live view until it is closed, printing its
 * progress (a line per change; redrawn in place on a terminal), through pauses (a
 * PAUSED stream is open and may resume), then its closing line once CONFIRMED or FAILED.
 * --json prints each view that changed as one JSON line instead.
 */
async function watchStream(api: ReturnType<typeof caller>, o: Common, ref: string, everyMs: number): Promise<void> {
  const line = progress();
  let seen = '';
  for (;;) {
    const res = await api(o, 'GET', `/v1/streams/${encodeURIComponent(ref)}`);
    if (res.status >= 400) {
      if (o.json) console.log(JSON.stringify(res.body));
      else console.error(errorLine(res));
      process.exitCode = 1;
      return;
    }
    const v = res.body;
    const key = `${v.status}:${v.ticks}:${v.totalPaid}:${v.pausedAt ?? ''}`;
    if (key !== seen) {
      seen = key;
      if (o.json) console.log(JSON.stringify(v));
      else if (OPEN.has(v.status)) line.update(streamLine(v), v.totalPaid, v.maxTotal);
    }
    // a paused stream is still open: it may resume (or be cancelled), so the watch goes on
    if (!OPEN.has(v.status)) {
      if (!o.json) line.finish(closedLine(v));
      return;
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
