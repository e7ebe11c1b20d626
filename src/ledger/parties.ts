import { inTransaction, type Queryable } from '../db/pool';
import { SluiceError } from '../domain/errors';
import { createApiKey } from './apiKeys';
import { appendEvent } from './events';

export interface NewParty {
  id: string;
  name: string;
  /** Shown once; only its hash is stored (api_keys). */
  apiKey: string;
}

/** Inserts a party, its first API key and their events (party.created, key.created), in one transaction (the caller's, or its own). */
export function createParty(db: Queryable, input: { id: string; name: string }): Promise<NewParty> {
  return inTransaction(db, async (client) => {
    try {
      await client.query('insert into parties (id, name) values ($1, $2)', [input.id, input.name]);
    } catch (error) {
      if ((error as { code?: string }).code === '23505') throw new SluiceError('already_exists', `party ${input.id} already exists`, { party: input.id });
      throw error;
    }
    await appendEvent(client, { type: 'party.created', subject: input.id, payload: { party: input.id, name: input.name }, parties: [input.id] });
    const { apiKey } = await createApiKey(client, { party: input.id, by: 'admin' });
    return { id: input.id, name: input.name, apiKey };
  });
}
