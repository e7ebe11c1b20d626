import { DISTRIBUTION_MEMBERS_MAX } from '../domain/streams';
import { ACCOUNTS_PAGE_MAX } from '../ledger/accounts';
import { DASHBOARD_ROWS_MAX, DELIVERIES_PAGE_MAX, SUBACCOUNTS_PAGE_MAX } from '../ledger/entities';
import { EVENTS_PAGE_MAX } from '../ledger/events';
import { IDEMPOTENCY_KEY_CHARS_MAX } from '../ledger/idempotency';
import { GRANTS_PAGE_MAX } from '../ledger/operators';
import { JOB_GRANTS_PAGE_MAX } from '../ledger/grants';
import { STREAMS_PAGE_MAX } from '../ledger/streams';
import { STREAM_TICKS_PAGE_MAX } from '../ledger/streamTicks';
import { PARTIES_PAGE_MAX } from '../ledger/partyList';
import { ENTITIES_PAGE_MAX } from '../ledger/entityList';
import { CROWN_TIMELINE_PAGE_MAX, RATE_EVENTS_PAGE_MAX } from '../ledger/rates';
import { MARKETS_PAGE_MAX } from '../ledger/markets';
import { API_KEYS_ACTIVE_MAX, API_KEYS_PAGE_MAX } from '../ledger/apiKeys';

/**
 * Every limit the HTTP API puts on a caller, each named with its unit, in one
 * table: the routes, their OpenAPI schemas (maximum, maxItems) and the tests take
 * them from here. A limit the ledger enforces as well (a page its SQL clamps, a key
 * column's width) is defined next to that SQL and listed here under the same name.
 */

/** Writes (every non-GET /v1 request) and reads (GET /v1) per caller per window, and the largest body: the defaults, kept with config's (src/domain/settings.ts). */
export { BODY_LIMIT_BYTES_DEFAULT, READ_RATE_MAX_DEFAULT, READ_RATE_WINDOW_MS_DEFAULT, WRITE_RATE_MAX_DEFAULT, WRITE_RATE_WINDOW_MS_DEFAULT } from '../domain/settings';


export { IDEMPOTENCY_KEY_CHARS_MAX };

/** Rows a list route returns when the caller gives no `limit`. */
export const PAGE_ROWS_DEFAULT = 100;

/** The largest `limit` of each list route; a larger one is refused (400), never clamped in silence. */
export const PAGE_ROWS_MAX = {
  'GET /v1/parties': PARTIES_PAGE_MAX,
  'GET /v1/accounts': ACCOUNTS_PAGE_MAX,
  'GET /v1/events': EVENTS_PAGE_MAX,
  'GET /v1/rates/events': RATE_EVENTS_PAGE_MAX,
  'GET /v1/markets': MARKETS_PAGE_MAX,
  'GET /v1/crown/timeline': CROWN_TIMELINE_PAGE_MAX,
  'GET /v1/parties/:id/operators': GRANTS_PAGE_MAX,
  'GET /v1/entities': ENTITIES_PAGE_MAX,
  'GET /v1/entities/:id/subaccounts': SUBACCOUNTS_PAGE_MAX,
  'GET /v1/entities/:id/deliveries': DELIVERIES_PAGE_MAX,
  'GET /v1/entities/:id/dashboard': DASHBOARD_ROWS_MAX,
  'GET /v1/streams': STREAMS_PAGE_MAX,
  'GET /v1/streams/:ref/ticks': STREAM_TICKS_PAGE_MAX,
  'GET /v1/grants': JOB_GRANTS_PAGE_MAX,
  'GET /v1/keys': API_KEYS_PAGE_MAX,
  'GET /v1/parties/:id/keys': API_KEYS_PAGE_MAX,
} as const;

/** Active API keys a party holds at once (a third is 422 limit_exceeded: revoke one first); migration 027 keeps it. */
export { API_KEYS_ACTIVE_MAX };

/** A stream's tick interval (and its liveness timeout and grace, which are counted in the same unit), in ms. */
export const TICK_INTERVAL_MS_MIN = 100;
export const TICK_INTERVAL_MS_MAX = 86_400_000;
/** Items of one POST /v1/streams/batch. */
export const STREAM_BATCH_ITEMS_MAX = 100;
/** Live members of one distribution stream (and members named in one request). */
export const STREAM_MEMBERS_MAX = DISTRIBUTION_MEMBERS_MAX;
/** Webhook URLs of one entity. */
export const WEBHOOK_URLS_MAX = 5;
/** Characters of one webhook URL. */
export const WEBHOOK_URL_CHARS_MAX = 500;
/** Intervals GET /v1/crown lists (its totals always cover the whole window). */
export const CROWN_INTERVALS_SHOWN_MAX = 1000;
/** Ticks of the longest window GET /v1/crown and POST /v1/crown/rewards replay in one call (about 115 days). */
export const CROWN_WINDOW_TICKS_MAX = 10_000_000;
