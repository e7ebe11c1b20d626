import { z } from 'zod';
import { keyService } from '../../services/keys';
import type { Api } from '../app';
import { API_KEYS_ACTIVE_MAX } from '../limits';
import * as S from '../schemas';

const errors = S.WriteErrors;
const readErrors = S.ReadErrors;

const ApiKey = z.object({
  id: z.number().int().describe('the key’s id, to revoke it by'),
  party: z.string(),
  prefix: z.string().describe('the key’s first characters: not secret, to tell keys apart'),
  createdAt: z.string(),
  revokedAt: z.string().optional().describe('set once revoked: from then on the key is refused (401) on every route'),
  lastUsedAt: z.string().optional().describe('when a request last came with the key (kept to the minute)'),
});
const NewApiKey = ApiKey.extend({ apiKey: z.string().describe('the key itself: shown this once, stored only as its SHA-256') });
const KeyPage = z.object({ keys: z.array(ApiKey), next: z.number().int().optional().describe('pass as `after` for the next page; left out on the last') });
const keyPageQuery = (route: 'GET /v1/keys' | 'GET /v1/parties/:id/keys') => ({ after: S.PageAfter.describe('the last id of the previous page'), limit: S.PageLimit(route) });

/**
 * API keys: a party holds up to two active keys, so it rotates one without downtime
 * (create the new key, switch to it, revoke the old one). A party manages its own under
 * /v1/keys; the admin any party's under /v1/parties/:id/keys (a party whose only key was
 * lost gets a new one there).
 */
export function keyRoutes(app: Api) {
  const keys = keyService(app.deps);

  app.post('/v1/keys', {
    schema: {
      tags: ['keys'],
      summary: `Create an API key for yourself, shown once (at most ${API_KEYS_ACTIVE_MAX} active: a third is refused until one is revoked); the admin names the party`,
      body: z.object({ party: S.PartyId.optional().describe('the admin names the party; a party may leave it out or name itself') }),
      response: { 201: NewApiKey, ...errors },
    },
    handler: async (req, reply) => reply.status(201).send(await keys.create(req.actor, req.body.party)),
  });

  app.get('/v1/keys', {
    schema: {
      tags: ['keys'],
      summary: 'Your API keys by id, revoked ones too (never a key or its hash); the admin sees every party’s, or one party’s',
      querystring: z.object({ party: S.PartyId.optional().describe('only this party’s keys (a party may name only itself)'), ...keyPageQuery('GET /v1/keys') }),
      response: { 200: KeyPage, ...readErrors },
    },
    handler: async (req) => keys.list(req.actor, req.query),
  });

  app.post('/v1/keys/:id/revoke', {
    schema: {
      tags: ['keys'],
      summary: 'Revoke one of your API keys: refused at once on every route (again: the key, unchanged). The key you call with only while you hold another active one',
      params: z.object({ id: S.SerialId }),
      response: { 200: ApiKey, ...errors },
    },
    handler: async (req) => keys.revoke(req.actor, req.params.id),
  });

  const PartyParam = z.object({ id: S.PartyId });

  app.post('/v1/parties/:id/keys', {
    config: { auth: 'admin' },
    schema: {
      tags: ['keys'],
      summary: `Create an API key for a party, shown once (admin; at most ${API_KEYS_ACTIVE_MAX} active)`,
      params: PartyParam,
      response: { 201: NewApiKey, ...errors },
    },
    handler: async (req, reply) => reply.status(201).send(await keys.create(req.actor, req.params.id)),
  });

  app.get('/v1/parties/:id/keys', {
    config: { auth: 'admin' },
    schema: { tags: ['keys'], summary: 'A party’s API keys by id (admin)', params: PartyParam, querystring: z.object(keyPageQuery('GET /v1/parties/:id/keys')), response: { 200: KeyPage, ...readErrors } },
    handler: async (req) => keys.list(req.actor, { party: req.params.id, ...req.query }),
  });

  app.post('/v1/parties/:id/keys/:keyId/revoke', {
    config: { auth: 'admin' },
    schema: {
      tags: ['keys'],
      summary: 'Revoke a party’s API key (admin; any key, its last one too)',
      params: z.object({ id: S.PartyId, keyId: S.SerialId }),
      response: { 200: ApiKey, ...errors },
    },
    handler: async (req) => keys.revoke(req.actor, req.params.keyId, req.params.id),
  });
}
