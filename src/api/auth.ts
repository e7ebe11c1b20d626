import { timingSafeEqual, createHash } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import type { Pool } from '../db/pool';
import { forbidden, SluiceError } from '../domain/errors';
import { partyForKey } from '../ledger/apiKeys';
import type { Actor } from '../services/actors';

declare module 'fastify' {
  interface FastifyRequest {
    actor: Actor;
  }
  interface FastifyContextConfig {
    /** 'public': no key; 'party': a party key or the admin key; 'admin': the admin key only. */
    auth?: 'public' | 'party' | 'admin';
  }
}

const digest = (s: string) => createHash('sha256').update(s).digest();
/** Two secrets compared in constant time (their digests: equal lengths, and no length told either). */
export const sameSecret = (a: string, b: string) => timingSafeEqual(digest(a), digest(b));

/**
 * The key of an `Authorization: Bearer <key>` header. The scheme is matched without
 * regard to case (RFC 9110 §11.1), and spaces or tabs may separate it from the key;
 * anything else (another scheme, no key, a key with spaces in it) is no key.
 */
export function bearerKey(header: string | undefined): string | undefined {
  return header === undefined ? undefined : /^bearer[ \t]+([^\s]+)[ \t]*$/i.exec(header)?.[1];
}

export function createAuthenticator(pool: Pool, adminKey: string) {
  return async function authenticate(request: FastifyRequest): Promise<void> {
    const required = request.routeOptions.config.auth ?? 'party';
    if (required === 'public') return;
    const key = bearerKey(request.headers.authorization);
    if (!key) throw new SluiceError('unauthorized', 'missing API key: send Authorization: Bearer <key>');
    if (sameSecret(key, adminKey)) {
      request.actor = { kind: 'admin' };
      return;
    }
    // a revoked key is no key: refused here, on every route, from the moment its revocation commits
    const owner = key.length <= 200 ? await partyForKey(pool, key) : undefined;
    if (!owner) throw new SluiceError('unauthorized', 'unknown API key');
    if (required === 'admin') throw forbidden('this route needs the admin key');
    request.actor = { kind: 'party', party: owner.party, keyId: owner.keyId };
  };
}
