/**
 * The defaults of the settings src/config.ts reads from the environment, where the
 * rest of a setting's code is in a layer config may not import (the API, Temporal,
 * the ledger): config reads only src/domain. Each default is re-exported where it is
 * used, under the same name.
 */

/** Writes (every non-GET /v1 request) per caller per window: the defaults of SLUICE_WRITE_RATE_MAX / _WINDOW_MS. */
export const WRITE_RATE_MAX_DEFAULT = 1000;
export const WRITE_RATE_WINDOW_MS_DEFAULT = 10_000;
/** Reads (every GET /v1 request) per caller per window: the defaults of SLUICE_READ_RATE_MAX / _WINDOW_MS (a console polls a few a second). */
export const READ_RATE_MAX_DEFAULT = 5000;
export const READ_RATE_WINDOW_MS_DEFAULT = 10_000;

/** The largest request body: the default of SLUICE_BODY_LIMIT_BYTES. */
export const BODY_LIMIT_BYTES_DEFAULT = 65_536;

/** How long an API call waits on a workflow by default (SLUICE_API_WAIT_MS) before it answers 202. */
export const API_WAIT_MS_DEFAULT = 15_000;

/** Between two rounds of the reconciler, by default: a stranded hold waits at most about this long. */
export const RECONCILE_INTERVAL_MS_DEFAULT = 10_000;

/** The local server tried when DATABASE_URL is unset (trust auth on this machine kind). */
export const LOCAL_DATABASE_URL = 'postgres://postgres@127.0.0.1:5432/sluice';

/** World stripe accounts per currency (SLUICE_WORLD_STRIPES; migration 017). */
export const WORLD_STRIPES_DEFAULT = 8;

/** The database role the API and the worker run as (src/db/roles.ts). */
export const RUNTIME_ROLE_DEFAULT = 'sluice_app';
/** The database role for reading the ledger from outside: tails, dashboards, reporting. */
export const READONLY_ROLE_DEFAULT = 'sluice_readonly';
