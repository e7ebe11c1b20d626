import { randomBytes } from 'node:crypto';
import type { Command } from 'commander';
import type { Config } from '../config';
import { caller, fields, int, page, print, query, show, units, withOutput, type Call, type Common } from './client';
import { ago, at, plural } from './format';

/**
 * `sluice parties …`, `sluice accounts …`, `sluice deposit`, `sluice transfer` and
 * `sluice events tail`: the ledger from a shell, through the HTTP API.
 */
export function ledgerCommands(program: Command, config: () => Config): void {
  const api = caller(config);
  const enc = encodeURIComponent;

  const parties = program.command('parties').description('parties: who holds accounts and API keys (admin key)');
  withOutput(parties.command('create <id>').description("register a party: prints its API key, once"))
    .option('--name <name>', 'display name (default: the id)')
    .action((id: string, o: Common & { name?: string }) =>
      show(
        api,
        o,
        (p) =>
          `${fields([['party', p.id], ['name', p.name], ['api key', p.apiKey]])}\n` +
          // only the key's hash is stored: a lost key is replaced by the admin (sluice keys create --party), so say so now
          'Keep the API key now: it will not be shown again.',
        'POST',
        '/v1/parties',
        { id, name: o.name ?? id },
      ),
    );
  withOutput(parties.command('list').description('every party by id, a page at a time'))
    .option('--after <id>', 'the last id of the previous page')
    .option('--limit <n>', 'at most this many', int)
    .action((o: Common & { after?: string; limit?: number }) =>
      show(
        api,
        o,
        (b) => page(['PARTY', 'NAME', 'CREATED'], b.parties.map((p: any) => [p.id, p.name, ago(p.createdAt)]), plural(b.parties.length, 'party', 'parties'), b.next),
        'GET',
        `/v1/parties${query({ after: o.after, limit: o.limit })}`,
      ),
    );

  const accounts = program.command('accounts').description('accounts: balance, held, available');
  const account = (a: any) =>
    fields([
      ['account', `${a.id} (${a.kind}, ${a.currency})`],
      ['owner', a.ownerId],
      ['balance', a.balance],
      ['held', a.held],
      ['available', a.available],
      ['created', at(a.createdAt)],
    ]);
  withOutput(accounts.command('show <id>').description("an account's balance, held and available")).action((id: string, o: Common) => show(api, o, account, 'GET', `/v1/accounts/${enc(id)}`));
  withOutput(accounts.command('create <id>').description("open an account (a party's key opens its own; the admin names --owner)"))
    .option('--owner <party>', 'the owning party (admin)')
    .option('--currency <code>', 'e.g. USD (default: the ledger default)')
    .action((id: string, o: Common & { owner?: string; currency?: string }) =>
      show(api, o, account, 'POST', '/v1/accounts', { id, ...(o.owner && { ownerId: o.owner }), ...(o.currency && { currency: o.currency }) }),
    );

  withOutput(program.command('deposit <accountId> <amount>').description('money in from the outside world (admin key)'))
    .option('--memo <text>')
    .option('--idempotency-key <key>', 'repeat a deposit safely (default: a new key, printed)')
    .action((accountId: string, amount: string, o: Common & { memo?: string; idempotencyKey?: string }) =>
      move(api, o, '/v1/deposits', { accountId, amount: units(amount), ...(o.memo && { memo: o.memo }) }),
    );
  withOutput(program.command('transfer <from> <to> <amount>').description("move money from one of your accounts to any account"))
    .option('--memo <text>')
    .option('--idempotency-key <key>', 'repeat a transfer safely (default: a new key, printed)')
    .action((from: string, to: string, amount: string, o: Common & { memo?: string; idempotencyKey?: string }) =>
      move(api, o, '/v1/transfers', { fromAccountId: from, toAccountId: to, amount: units(amount), ...(o.memo && { memo: o.memo }) }),
    );

  const events = program.command('events').description('the event log: every transfer, stream, hold, job … in commit order');
  withOutput(events.command('tail').description('events after a cursor (a party sees its own); --follow keeps printing new ones until Ctrl-C'))
    .option('--after <id>', 'the cursor: events after this id (0: from the start)', int, 0)
    .option('--subject <subject>', "only this subject's events (a transfer id, a stream ref, an account id …)")
    .option('--type <type>', 'only this type, e.g. transfer.posted, stream.tick')
    .option('--limit <n>', 'events per page', int)
    .option('--follow', 'keep polling every second for new events')
    .action((o: Common & { after: number; subject?: string; type?: string; limit?: number; follow?: boolean }) => tailEvents(api, o));
}

/**
 * A deposit or transfer. The idempotency key is printed (on stderr, so --json stays
 * JSON) before the call: if the answer is lost (a timeout, a dropped connection) the
 * same command with `--idempotency-key` repeats it without moving the money twice.
 */
async function move(api: Call, o: Common & { idempotencyKey?: string }, path: string, body: object) {
  const key = o.idempotencyKey ?? `cli-${randomBytes(8).toString('hex')}`;
  if (!o.idempotencyKey) console.error(`idempotency key: ${key} (to retry safely, repeat with --idempotency-key ${key})`);
  return show(
    api,
    o,
    (t) => fields([['transfer', `${t.id} (${t.kind})`], ['amount', t.amount], ['from → to', `${t.debitAccountId} → ${t.creditAccountId}`], ['memo', t.memo], ['at', at(t.createdAt)]]),
    'POST',
    path,
    body,
    key,
  );
}

/** One event on one line: when, what, about what, and the amount when it moved money. */
export const eventLine = (e: { createdAt: string; type: string; subject: string; payload: Record<string, unknown> }, now = Date.now()) =>
  [e.createdAt, `(${ago(e.createdAt, now)})`, e.type, e.subject, typeof e.payload.amount === 'number' ? `amount ${e.payload.amount}` : undefined].filter(Boolean).join('  ');

/**
 * `events tail`: a page of events after the cursor; with --follow every page up to the
 * end, then a poll each second from the last cursor (the API never skips nor repeats
 * an event across pages), until Ctrl-C. --json prints the page as the API answered it,
 * or with --follow each event as one JSON line.
 */
async function tailEvents(api: Call, o: Common & { after: number; subject?: string; type?: string; limit?: number; follow?: boolean }): Promise<void> {
  const human = (b: any) => [...b.events.map((e: any) => eventLine(e)), `${plural(b.events.length, 'event')}; next: --after ${b.next}`].join('\n');
  let after = o.after;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let wake = () => {};
  // Ctrl-C ends a follow cleanly (exit 0): it is how a follow is meant to end
  if (o.follow) {
    process.once('SIGINT', () => {
      stopped = true;
      clearTimeout(timer);
      wake();
    });
    console.error(`following events after ${after}${o.subject ? ` about ${o.subject}` : ''}${o.type ? ` of type ${o.type}` : ''} (Ctrl-C to stop)`);
  }
  while (!stopped) {
    const res = await api(o, 'GET', `/v1/events${query({ after, limit: o.limit, subject: o.subject, type: o.type })}`);
    if (!o.follow || res.status >= 400) return void print(res, o, human);
    for (const e of res.body.events) console.log(o.json ? JSON.stringify(e) : eventLine(e));
    after = res.body.next;
    // a page came back: there may be more at once; none: wait a second (or for Ctrl-C)
    if (!res.body.events.length) {
      await new Promise<void>((done) => {
        wake = done;
        timer = setTimeout(done, 1000);
      });
    }
  }
}
