import type { Command } from 'commander';
import type { Config } from '../config';
import { apiBase, caller, errorLine, httpCaller, withCommon, type Common } from './client';
import { profilePath, removeProfile, saveProfile } from './profile';

/** Who a key is, as GET /v1/console/config answers it (any valid key may ask). */
const who = (actor: { kind: string; party?: string }) => (actor.kind === 'admin' ? 'the admin' : `party ${actor.party}`);

/**
 * `sluice login`, `sluice logout` and `sluice whoami`: a saved API and key, so the
 * other commands need neither --api nor --key (flags and SLUICE_API_URL /
 * SLUICE_API_KEY still come first).
 */
export function loginCommands(program: Command, config: () => Config): void {
  program
    .command('login')
    .description('check a key against the API, then save both for the other commands')
    .option('--api <url>', 'API base URL (default SLUICE_API_URL, then the saved login, then the local API)')
    .requiredOption('--key <key>', 'the API key (a party\'s, or the admin\'s)')
    .action(async (o: { api?: string; key: string }) => {
      const api = apiBase(o, config());
      // a key is saved only once the API has said whose it is: a typo fails here, not on the next command
      const res = await httpCaller(api)('GET', '/v1/console/config', undefined, o.key);
      if (res.status >= 400) {
        console.error(`${errorLine(res)}\nnot logged in: the API at ${api} refused this key`);
        process.exitCode = 1;
        return;
      }
      const path = saveProfile({ api, key: o.key });
      console.log(`logged in to ${api} as ${who(res.body.actor)} (saved to ${path})`);
    });

  program
    .command('logout')
    .description('forget the saved API and key')
    .action(() => console.log(removeProfile() ? `logged out (removed ${profilePath()})` : `not logged in (no ${profilePath()})`));

  withCommon(program.command('whoami').description('which API and whose key the other commands use')).action(async (o: Common) => {
    const api = apiBase(o, config());
    const res = await caller(config)(o, 'GET', '/v1/console/config');
    if (res.status >= 400) {
      console.error(errorLine(res));
      process.exitCode = 1;
    } else console.log(`${who(res.body.actor)} at ${api}`);
  });
}
