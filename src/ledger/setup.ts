import { ConfigSchema } from '../config';
import { migrate } from '../db/migrate';
import type { RoleOptions } from '../db/roles';
import { ensurePoolStripes, POOL_SEED_UNITS_DEFAULT, seedPool } from './pool';
import { ensureWorldStripes } from './world';
import { ensurePartitionsAhead } from '../db/partitions';

export interface LedgerSetupOptions extends RoleOptions {
  /** Units the free-tier pool is seeded with, once (a keyed deposit; later runs leave it). */
  poolSeedUnits?: number;
  /** Stripe accounts the pool is held as, at least (default: SLUICE_POOL_STRIPES, else 8; more are added, none taken away). */
  poolStripes?: number;
  /** Stripe accounts each currency's world account is held as, at least (default: SLUICE_WORLD_STRIPES, else 8). */
  worldStripes?: number;
}

/**
 * A ledger database brought up to date: the schema's migrations (src/db/migrate.ts),
 * then, under the migrator's lock, the accounts the ledger needs beside its tables
 * (the world's and the pool's stripes, the pool's seed, the monthly partitions of the
 * months ahead). Returns the migrations applied.
 */
export async function migrateLedger(url: string, options: LedgerSetupOptions = {}): Promise<number[]> {
  const poolStripes = options.poolStripes ?? ConfigSchema.shape.SLUICE_POOL_STRIPES.parse(process.env.SLUICE_POOL_STRIPES);
  const worldStripes = options.worldStripes ?? ConfigSchema.shape.SLUICE_WORLD_STRIPES.parse(process.env.SLUICE_WORLD_STRIPES);
  return migrate(url, {
    readonlyRole: options.readonlyRole,
    runtimeRole: options.runtimeRole,
    runtimePassword: options.runtimePassword,
    afterSchema: async (client) => {
      await ensureWorldStripes(client, worldStripes);
      await ensurePoolStripes(client, poolStripes);
      await seedPool(client, options.poolSeedUnits ?? POOL_SEED_UNITS_DEFAULT);
      await ensurePartitionsAhead(client);
    },
  });
}
