import { z } from 'zod';
import { PARTIES_PAGE_MAX } from '../../ledger/partyList';
import { accountService } from '../../services/accounts';
import { PAGE_ROWS_DEFAULT } from '../limits';
import type { Api } from '../app';
import * as S from '../schemas';

/** GET /v1/parties: who is registered, for the admin (POST /v1/parties is in ledger.ts). */
export function partyRoutes(app: Api) {
  const accounts = accountService(app.deps);
  const limit = Math.min(PAGE_ROWS_DEFAULT, PARTIES_PAGE_MAX);

  app.get('/v1/parties', {
    config: { auth: 'admin' },
    schema: {
      tags: ['parties'],
      summary: 'Every party by id, a page at a time: id, name, created (admin; API keys are never shown again)',
      querystring: z.object({
        after: S.PartyId.optional().describe('the last id of the previous page'),
        limit: S.QueryInt(1, PARTIES_PAGE_MAX).default(limit).describe(`rows in the page, at most ${PARTIES_PAGE_MAX} (default ${limit})`),
      }),
      response: {
        // the schema names each field: the serializer sends nothing else, whatever the query returned
        200: z.object({
          parties: z.array(z.object({ id: z.string(), name: z.string(), createdAt: z.string() })),
          next: z.string().optional().describe('pass as `after` for the next page; left out on the last'),
        }),
        400: S.ErrorBody,
        401: S.ErrorBody,
        403: S.ErrorBody,
      },
    },
    handler: async (req) => accounts.parties(req.query),
  });
}
