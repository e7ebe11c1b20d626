import type { Command } from 'commander';
import type { Config } from '../config';
import { caller, fields, int, page, query, show, withOutput, type Common } from './client';
import { ago, at, plural } from './format';

/**
 * `sluice keys create|list|revoke`: a party's API keys. A party manages its own; with
 * the admin key, `--party` names whose. A rotation is three commands: create the new
 * key, switch every caller to it, revoke the old one (at most two keys are active at
 * once, and the key you call with is revoked only while another is active).
 */
export function keyCommands(program: Command, config: () => Config): void {
  const api = caller(config);
  const enc = encodeURIComponent;
  const key = (k: any) =>
    fields([
      ['key', `${k.id} (${k.prefix}…)`],
      ['party', k.party],
      ['created', at(k.createdAt)],
      ['last used', k.lastUsedAt && at(k.lastUsedAt)],
      ['revoked', k.revokedAt ? at(k.revokedAt) : 'no'],
    ]);

  const keys = program.command('keys').description("API keys: create a second key, switch to it, revoke the old one");
  withOutput(keys.command('create').description('issue a new API key, printed once (at most 2 active: revoke one first)'))
    .option('--party <id>', "the party whose key it is (admin key; a party's key issues its own)")
    .action((o: Common & { party?: string }) =>
      show(
        api,
        o,
        (k) =>
          `${key(k)}\napi key: ${k.apiKey}\n` +
          // only its hash is stored
          `Keep the API key now: it will not be shown again. Switch your callers to it, then revoke the old key: sluice keys revoke <id>`,
        'POST',
        '/v1/keys',
        o.party ? { party: o.party } : {},
      ),
    );
  withOutput(keys.command('list').description('your keys by id, revoked ones too (never the key itself); the admin sees every party’s'))
    .option('--party <id>', "only this party's keys (admin key)")
    .option('--after <id>', 'the last id of the previous page', int)
    .option('--limit <n>', 'at most this many', int)
    .action((o: Common & { party?: string; after?: number; limit?: number }) =>
      show(
        api,
        o,
        (b) =>
          page(
            ['ID', 'PARTY', 'PREFIX', 'CREATED', 'LAST USED', 'REVOKED'],
            b.keys.map((k: any) => [k.id, k.party, `${k.prefix}…`, ago(k.createdAt), k.lastUsedAt ? ago(k.lastUsedAt) : '-', k.revokedAt ? ago(k.revokedAt) : '-']),
            plural(b.keys.length, 'key'),
            b.next === undefined ? undefined : String(b.next),
          ),
        'GET',
        `/v1/keys${query({ party: o.party, after: o.after, limit: o.limit })}`,
      ),
    );
  withOutput(keys.command('revoke <id>').description('revoke a key: refused at once on every route (the key you call with only while another is active)'))
    .option('--party <id>', "the party whose key it is (admin key)")
    .action((id: string, o: Common & { party?: string }) => show(api, o, key, 'POST', o.party ? `/v1/parties/${enc(o.party)}/keys/${enc(id)}/revoke` : `/v1/keys/${enc(id)}/revoke`));
}
