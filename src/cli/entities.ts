import type { Command } from 'commander';
import type { Config } from '../config';
import { caller, errorLine, fields, int, page, print, query, show, table, withOutput, type Common } from './client';
import { ago, at, plural } from './format';

/**
 * `sluice entities …`: register (admin key), show, the dashboard, subaccounts
 * (create through the saga, list) and elimination, through the HTTP API.
 */
export function entityCommands(program: Command, config: () => Config): void {
  const api = caller(config);
  const enc = encodeURIComponent;
  const sub = (s: any) =>
    `subaccount ${s.id}: ${s.status}${s.accountId ? `, account ${s.accountId}` : ''}, funding ${s.funding}` + (s.failedStep ? `, failed at ${s.failedStep}: ${s.failure ?? ''}` : '');

  const entities = program.command('entities').description('entities and their subaccounts');
  withOutput(entities.command('register <id>').description('register an entity (admin key): prints its API key and webhook secret, once'))
    .requiredOption('--name <name>')
    .requiredOption('--collateral <units>', 'held on the main account per live subaccount', int)
    .requiredOption('--funding <units>', 'moved into each new subaccount', int)
    .option('--webhook <url...>', 'webhook URLs (up to 5)')
    .option('--challenge-ms <ms>', 'challenge period of new subaccounts (0: active at once)', int)
    .option('--cap <n>', 'live subaccounts at most', int)
    .option('--creations-per-hour <n>', 'subaccount creations per rolling hour at most', int)
    .action((id: string, o: Common & { name: string; collateral: number; funding: number; webhook?: string[]; challengeMs?: number; cap?: number; creationsPerHour?: number }) =>
      show(api, o, (e) => fields([['entity', e.id], ['main account', e.mainAccountId], ['api key', e.apiKey], ['webhook secret', e.webhookSecret]]), 'POST', '/v1/entities', {
        id,
        name: o.name,
        collateral: o.collateral,
        funding: o.funding,
        webhookUrls: o.webhook ?? [],
        ...(o.challengeMs !== undefined && { challengeMs: o.challengeMs }),
        ...(o.cap !== undefined && { subaccountCap: o.cap }),
        ...(o.creationsPerHour !== undefined && { creationsPerHour: o.creationsPerHour }),
      }),
    );
  withOutput(entities.command('list').description('every entity by id with its live subaccounts, a page at a time (admin key)'))
    .option('--after <id>', 'the last id of the previous page')
    .option('--limit <n>', 'at most this many', int)
    .action((o: Common & { after?: string; limit?: number }) => show(api, o, (b) => entityList(b), 'GET', `/v1/entities${query({ after: o.after, limit: o.limit })}`));
  withOutput(entities.command('show <id>').description("an entity's terms, webhook URLs, and where it stands against its subaccount limits")).action((id: string, o: Common) =>
    show(api, o, (e) => entitySummary(e), 'GET', `/v1/entities/${enc(id)}`),
  );
  withOutput(entities.command('dashboard <id>').description('every subaccount at once: balances, held, open streams, paid, received; totals and status counts'))
    .option('--after <n>', 'rows after this subaccount number', int)
    .action((id: string, o: Common & { after?: number }) =>
      show(
        api,
        o,
        (d) => {
          const t = d.totals;
          const counts = Object.entries(d.statusCounts as Record<string, number>).filter(([, n]) => n > 0).map(([s, n]) => `${n} ${s}`).join(', ') || 'no subaccounts';
          return [
            `entity ${d.entity}: ${counts}`,
            `totals: balance ${t.balance}, held ${t.held}, open streams ${t.openStreams}, paid ${t.paid}, received ${t.received}; main ${t.mainBalance} (held ${t.mainHeld}, collateral ${t.collateralHeld})`,
            table(['SUBACCOUNT', 'STATUS', 'BALANCE', 'HELD', 'STREAMS', 'PAID', 'RECEIVED'], d.subaccounts.map((s: any) => [s.id, s.status, s.balance, s.held, s.openStreams, s.paid, s.received])),
          ].join('\n');
        },
        'GET',
        `/v1/entities/${enc(id)}/dashboard${o.after !== undefined ? `?after=${o.after}` : ''}`,
      ),
    );
  const subaccounts = entities.command('subaccounts').description("an entity's subaccounts");
  withOutput(subaccounts.command('create <entity>').description('create one through the creation saga; a failure prints the failed step and what was rolled back'))
    .option('--request-id <id>', 'the same request id returns the same creation')
    .action(async (entity: string, o: Common & { requestId?: string }) =>
      print(await api(o, 'POST', `/v1/entities/${enc(entity)}/subaccounts`, o.requestId ? { requestId: o.requestId } : {}), o, (b) => sub(b.subaccount), (res) => {
        if (res.body?.error?.code !== 'creation_failed') return errorLine(res);
        const d = res.body.error.details;
        return `creation failed at ${d.failedStep}: ${res.body.error.message}; rolled back: ${d.compensated.join(', ')}${d.subaccount ? ` (${d.subaccount.id} stays failed)` : ''}`;
      }),
    );
  withOutput(subaccounts.command('list <entity>').description('by number, a page at a time'))
    .option('--after <n>', 'after this number', int)
    .option('--limit <n>', 'at most this many', int)
    .action((entity: string, o: Common & { after?: number; limit?: number }) => {
      const q = new URLSearchParams({ ...(o.after !== undefined && { after: String(o.after) }), ...(o.limit !== undefined && { limit: String(o.limit) }) });
      return show(api, o, (b) => table(['SUBACCOUNT', 'STATUS', 'FUNDING', 'CREATED'], b.subaccounts.map((s: any) => [s.id, s.status, s.funding, ago(s.createdAt)])), 'GET', `/v1/entities/${enc(entity)}/subaccounts${q.size ? `?${q}` : ''}`);
    });
  withOutput(entities.command('eliminate <subaccount>').description('close its streams, sweep its balance to the entity, release its collateral'))
    .option('--reason <text>')
    .action((id: string, o: Common & { reason?: string }) =>
      show(api, o, (r) => `${sub(r.subaccount)}\nswept ${r.swept} to the entity, collateral ${r.collateralReleased ? 'released' : 'not held'}, ${plural(r.streams.length, 'stream')} closed`, 'POST', `/v1/subaccounts/${enc(id)}/eliminate`, o.reason ? { reason: o.reason } : {}),
    );
}

/** A page of entities: id, name, main account, live subaccounts, created. */
export const entityList = (b: any, now = Date.now()) =>
  page(
    ['ENTITY', 'NAME', 'MAIN ACCOUNT', 'LIVE SUBACCOUNTS', 'CREATED'],
    b.entities.map((e: any) => [e.id, e.name, e.mainAccountId, e.liveSubaccounts, ago(e.createdAt, now)]),
    plural(b.entities.length, 'entity', 'entities'),
    b.next,
  );

/**
 * An entity for people: its terms, then its limits in one line ("412 of 500 live · 3 of
 * 50 created this hour") and, at the hourly limit, when the next creation is let through.
 */
export const entitySummary = (e: any, now = Date.now()) =>
  fields([
    ['entity', e.id],
    ['main account', e.mainAccountId],
    ['collateral', e.collateral],
    ['funding', e.funding],
    ['challenge ms', e.challengeMs],
    ['webhooks', e.webhookUrls],
    ['next subaccount', e.nextSeq],
    ['subaccounts', e.subaccountCap !== undefined ? `${e.liveSubaccounts} of ${e.subaccountCap} live · ${e.creationsLastHour} of ${e.creationsPerHour} created this hour` : undefined],
    ['hourly limit', e.nextCreationAt && `reached, next creation ${at(e.nextCreationAt, now)}`],
  ]);
