import { createScratchDatabase, type ScratchDatabase, type ScratchOptions } from '../../src/ledger/scratch';

/** The server tests create their databases on (trust auth on this machine kind). */
export const SERVER_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

/** A fresh, migrated database for one test file; `drop()` removes it. */
export type TestDatabase = ScratchDatabase;
export type TestDatabaseOptions = Omit<ScratchOptions, 'prefix'>;

/** A fresh, migrated database for one test file (src/ledger/scratch.ts); `drop()` removes it. */
export const createTestDatabase = (options: TestDatabaseOptions = {}): Promise<TestDatabase> => createScratchDatabase(SERVER_URL, { prefix: 'sluice_test', ...options });
