import { SluiceError } from '../domain/errors';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import fastifyStatic from '@fastify/static';
import { z } from 'zod';
import type { Api } from './app';
import * as S from './schemas';

/** Where `npm run build:console` (Vite) writes the console: public files, no secrets in them. */
export const CONSOLE_DIR = resolve(__dirname, '..', '..', 'dist', 'console');
export const CONSOLE_PATH = '/console/';

/** Whether the console has been built into `root` (what the API serves, and what the launcher tells). */
export const isConsoleBuilt = (root = CONSOLE_DIR) => existsSync(join(root, 'index.html'));

/**
 * The operator console: its static files at /console/ (public: they hold no data;
 * every number on screen comes from the API with the key pasted into the page),
 * and GET /v1/console/config, what the page needs to know about its surroundings.
 * Unbuilt, /console/ answers 404 saying how to build it.
 */
export async function consoleRoutes(app: Api) {
  const { temporalUiUrl, namespace = 'default' } = app.deps;

  app.get('/v1/console/config', {
    schema: {
      tags: ['console'],
      summary: "What the operator console needs: the Temporal UI's base URL and namespace (for links to a stream's workflow), and who the key is",
      response: {
        200: z.object({
          temporalUiUrl: z.string().optional().describe('left out when the API does not know where the Temporal UI is'),
          namespace: z.string(),
          actor: z.object({ kind: z.enum(['admin', 'party']), party: z.string().optional() }),
        }),
        401: S.ErrorBody,
      },
    },
    handler: async (req) => ({
      ...(temporalUiUrl && { temporalUiUrl }),
      namespace,
      actor: req.actor.kind === 'admin' ? { kind: 'admin' as const } : { kind: 'party' as const, party: req.actor.party },
    }),
  });

  const root = app.deps.consoleDir ?? CONSOLE_DIR;
  if (!isConsoleBuilt(root)) {
    // thrown, so it leaves through the error handler in the one error shape
    app.get(`${CONSOLE_PATH}*`, { config: { auth: 'public' }, schema: { hide: true } }, async () => {
      throw new SluiceError('not_found', 'the console is not built: run `npm run build:console`');
    });
    return;
  }
  // its own scope: @fastify/swagger-ui registers the same plugin for the docs page
  await app.register(async (scope) => {
    scope.addHook('onRoute', (route) => {
      route.config = { ...(route.config as object), auth: 'public' };
      route.schema = { ...route.schema, hide: true };
    });
    // the prefix without its slash: the plugin then also answers /console with a redirect to /console/
    await scope.register(fastifyStatic, { root, prefix: '/console', decorateReply: false, redirect: true, index: 'index.html' });
  });
}
