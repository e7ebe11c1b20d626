import { z } from 'zod';
import { CROWN_TICK_MAX, CROWN_UNITS_PER_TICK, DIRECTIONS } from '../../domain/crown';
import { DEFAULT_MARKET } from '../../ledger/markets';
import { rateService } from '../../services/rates';
import type { Api } from '../app';
import * as S from '../schemas';
import { CROWN_INTERVALS_SHOWN_MAX, CROWN_WINDOW_TICKS_MAX } from '../limits';

const errors = S.WriteErrors;
const readErrors = S.ReadErrors;

// a board tick is a second since the epoch; every one has a time to show
const Tick = z.number().int().min(0).max(CROWN_TICK_MAX);
const QueryTick = S.QueryInt(0, CROWN_TICK_MAX);

const MarketId = S.MarketId;
/** The market a rate event or a crown read is for (the `default` market when none is named). */
const MarketParam = MarketId.default(DEFAULT_MARKET).describe('the market (default: `default`, an ask market)');
const Direction = z.enum(DIRECTIONS as ['ask', 'bid']).describe('ask: the lowest rate holds the crown; bid: the highest');
const Market = z.object({ id: z.string(), direction: Direction, createdAt: z.string() });

/** A crown interval with its times: a person reads when, not a tick number. */
const Interval = z.object({ start: z.number().int(), end: z.number().int(), startAt: z.string(), endAt: z.string(), holders: z.array(z.string()), bestRate: z.number().int().nullable() });
/** The window a crown answer covers, in ticks and as times (GET /v1/crown and its timeline). */
const WindowView = z.object({
  market: z.string(),
  direction: Direction,
  from: z.number().int(),
  to: z.number().int(),
  fromAt: z.string().describe('when tick `from` begins (board ticks are seconds since the epoch)'),
  toAt: z.string(),
});

const RateEvent = z.object({
  id: z.number().int(),
  market: z.string(),
  seller: z.string(),
  tick: z.number().int(),
  rate: z.number().int().optional(),
  active: z.boolean().optional(),
  busy: z.boolean().optional(),
  createdAt: z.string(),
});

export function rateRoutes(app: Api) {
  const rates = rateService(app.deps, { windowTicksMax: CROWN_WINDOW_TICKS_MAX, intervalsShownMax: CROWN_INTERVALS_SHOWN_MAX });

  app.post('/v1/sellers/:id/rates', {
    schema: {
      tags: ['rates'],
      summary: "Post a seller's price per tick, effective from `atTick` (default: now); `accountId` names where routed streams pay it",
      params: z.object({ id: S.PartyId }),
      body: z.object({ ratePerTick: z.number().int().min(0).max(1e15), atTick: Tick.optional(), accountId: S.AccountId.optional(), market: MarketParam }),
      response: { 201: RateEvent, ...errors },
    },
    handler: async (req, reply) => reply.status(201).send(await rates.postRate(req.actor, req.params.id, req.body)),
  });

  app.post('/v1/sellers/:id/state', {
    schema: {
      tags: ['rates'],
      summary: "Post a seller's state (active/inactive, busy/idle), effective from `atTick` (default: now)",
      params: z.object({ id: S.PartyId }),
      body: z
        .object({ active: z.boolean().optional(), busy: z.boolean().optional(), atTick: Tick.optional(), market: MarketParam })
        .refine((b) => b.active !== undefined || b.busy !== undefined, 'give active, busy or both'),
      response: { 201: RateEvent, ...errors },
    },
    handler: async (req, reply) => reply.status(201).send(await rates.postState(req.actor, req.params.id, req.body)),
  });

  app.get('/v1/rates/events', {
    schema: {
      tags: ['rates'],
      summary: 'Tail the rate events by cursor (0, or the id of the last event of the previous page), in commit order: none is skipped or repeated',
      querystring: z.object({ after: S.PageAfter, limit: S.PageLimit('GET /v1/rates/events') }),
      response: { 200: z.object({ events: z.array(RateEvent) }), ...readErrors },
    },
    handler: async (req) => rates.events(req.query),
  });

  app.post('/v1/markets', {
    config: { auth: 'admin' },
    schema: {
      tags: ['rates'],
      summary: 'Create a market: sellers post to it, and it has its own crown; `ask` (lowest rate wins) or `bid` (highest wins), never changed (admin; an id already taken is a 409)',
      body: z.object({ id: MarketId, direction: Direction }),
      response: { 201: Market, ...errors },
    },
    handler: async (req, reply) => reply.status(201).send(await rates.openMarket(req.body)),
  });

  app.get('/v1/markets', {
    schema: {
      tags: ['rates'],
      summary: 'The markets with their direction, in id order, a page at a time',
      querystring: z.object({ after: MarketId.optional().describe('the last id of the previous page (its next)'), limit: S.PageLimit('GET /v1/markets') }),
      response: { 200: z.object({ markets: z.array(Market), next: z.string().optional().describe('pass as `after` for the next page; left out on the last') }), ...readErrors },
    },
    handler: async (req) => rates.markets(req.query),
  });

  app.post('/v1/crown/rewards', {
    config: { auth: 'admin' },
    schema: {
      tags: ['rates'],
      summary: "Pay a budget from the rewards account to sellers in proportion to the default market's crown time over [from, to), a window that is over, once (admin; overlapping windows are refused)",
      body: z.object({ from: Tick, to: Tick, budget: S.Units }),
      response: {
        200: z.object({ from: z.number().int(), to: z.number().int(), budget: z.number().int(), paid: z.number().int(), shares: z.record(z.string(), z.number().int()), alreadyPaid: z.boolean() }),
        ...errors,
      },
    },
    handler: async (req) => rates.payRewards(req.body),
  });

  app.get('/v1/crown', {
    schema: {
      tags: ['rates'],
      summary: "A market's crown time per seller over ticks [from, to) (default: the last hour), the intervals, and the holders now",
      querystring: z.object({ market: MarketParam, from: QueryTick.optional(), to: QueryTick.optional() }),
      response: {
        200: WindowView.extend({
          crownTime: z.record(z.string(), z.number()).describe('ticks per seller (a shared tick split evenly, so possibly fractional)'),
          crownUnits: z.record(z.string(), z.number().int()).describe(`the same, exact: ${CROWN_UNITS_PER_TICK} units to a tick`),
          unitsPerTick: z.number().int(),
          intervalCount: z.number().int().describe(`intervals in the window; at most ${CROWN_INTERVALS_SHOWN_MAX} are listed`),
          intervals: z.array(Interval),
          current: z.object({ tick: z.number().int(), at: z.string(), holders: z.array(z.string()), bestRate: z.number().int().nullable() }),
        }),
        ...readErrors,
      },
    },
    handler: async (req) => rates.crown(req.query),
  });

  app.get('/v1/crown/timeline', {
    schema: {
      tags: ['rates'],
      summary: "Who held a market's crown when over ticks [from, to) (default: the last hour): its intervals, a page at a time, from the replay GET /v1/crown totals",
      querystring: z.object({
        market: MarketParam,
        from: QueryTick.optional(),
        to: QueryTick.optional(),
        after: QueryTick.optional().describe('`next` of the previous page (the start of its last interval); none: from `from`'),
        limit: S.PageLimit('GET /v1/crown/timeline'),
      }),
      response: {
        200: WindowView.extend({
          intervals: z.array(Interval).describe('maximal runs of ticks with the same holders, in order; together, the pages tile [from, to)'),
          next: z.number().int().optional().describe('pass as `after` for the next page; left out on the last'),
        }),
        ...readErrors,
      },
    },
    handler: async (req) => rates.timeline(req.query),
  });
}
