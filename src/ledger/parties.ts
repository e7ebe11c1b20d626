import { createHash, randomBytes } from 'node:crypto';
import { inTransaction, type Queryable } from '../db/pool';
import { SluiceError } from '../domain/errors';
import { appendEvent } from './events';

export const hashApiKey = (key: string) => createHash('sha256').update(key).digest('hex');

export interface NewParty {
  id: string;
  name: string;
  /** Shown once; only its hash is stored. */
  apiKey: string;
}

/** Inserts a party and its party.created event, in one transaction (the caller's, or its own). */
export function createParty(db: Queryable, input: { id: string; name: string }): Promise<NewParty> {
  const apiKey = `sk_${input.id}_${randomBytes(24).toString('base64url')}`;
  return inTransaction(db, async (client) => {
    try {
      await client.query('insert into parties (id, name, api_key_hash) values ($1, $2, $3)', [input.id, input.name, hashApiKey(apiKey)]);
    } catch (error) {
      if ((error as { code?: string }).code === '23505') throw new SluiceError('already_exists', `party ${input.id} already exists`, { party: input.id });
      throw error;
    }
    await appendEvent(client, { type: 'party.created', subject: input.id, payload: { party: input.id, name: input.name }, parties: [input.id] });
    return { id: input.id, name: input.name, apiKey };
  });
}

/** The party an API key belongs to, or undefined. Keys are compared by hash. */
export async function partyForKey(db: Queryable, apiKey: string): Promise<string | undefined> {
  const { rows } = await db.query<{ id: string }>('select id from parties where api_key_hash = $1', [hashApiKey(apiKey)]);
  return rows[0]?.id;
}
