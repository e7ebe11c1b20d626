import { createHash } from 'node:crypto';
import type { PoolClient } from '../db/pool';
import { canonicalJson } from '../domain/canonical';
import { SluiceError } from '../domain/errors';

/**
 * The longest key a caller may send. It is stored with a prefix (`party:<id ≤63>:`
 * from the API, `refund:<ref ≤128>:` for refunds) in a column that holds at most 300
 * characters, so 128 always fits.
 */
export const IDEMPOTENCY_KEY_CHARS_MAX = 128;

export function requestHash(operation: string, request: unknown): string {
  return createHash('sha256').update(operation).update('\0').update(canonicalJson(request)).digest('hex');
}

/**
 * Runs `run` once per key, inside the caller's transaction. The key row is inserted
 * first: a concurrent request with the same key blocks on the unique index until
 * this transaction ends, then sees the stored result. Same key and same request:
 * the first result. Same key, different request (or operation): idempotency_conflict.
 * If `run` throws, the transaction rolls back and the key is free again.
 */
export async function idempotent<T>(
  client: PoolClient,
  key: string,
  operation: string,
  request: unknown,
  run: () => Promise<T>,
): Promise<T> {
  const hash = requestHash(operation, request);
  const inserted = await client.query(
    `insert into idempotency_keys (key, operation, request_hash) values ($1, $2, $3)
     on conflict (key) do nothing returning key`,
    [key, operation, hash],
  );
  if (inserted.rowCount === 1) {
    const result = await run();
    await client.query('update idempotency_keys set result = $2 where key = $1', [key, JSON.stringify(result ?? null)]);
    return result;
  }
  const { rows } = await client.query('select operation, request_hash, result from idempotency_keys where key = $1', [key]);
  const prior = rows[0];
  if (!prior || prior.operation !== operation || prior.request_hash !== hash) {
    throw new SluiceError('idempotency_conflict', `idempotency key ${key} was already used for a different request`, {
      key,
      operation: prior?.operation,
    });
  }
  return prior.result as T;
}
