/**
 * Scenario files (`sluice simulate --scenario FILE.yaml`): YAML, checked against a
 * schema before anything is sent, each mistake reported with its path in the file
 * and the rule it breaks. The plan itself is src/domain/simulation.ts.
 */
import { readFile } from 'node:fs/promises';
import { parseDocument } from 'yaml';
import { z } from 'zod';
import { AMOUNT_UNITS_MAX } from './domain/money';
// the API's own bounds on a tick interval, a liveness timeout and a grace: a scenario the API would refuse is refused here first
import { TICK_INTERVAL_MS_MAX, TICK_INTERVAL_MS_MIN } from './api/limits';
import { scenarioFromFlags, ROUND_MS_DEFAULT, type Scenario, type ScenarioEvent, type ScenarioMix } from './domain/simulation';

const ROUNDS_MAX = 100_000;
const PARTIES_MAX = 1_000;
const PER_ROUND_MAX = 100;
const ROUND_MS_MAX = 60_000;
const EVENTS_MAX = 10_000;

/** A party's id is `<run tag>-<name>` (63 characters at most), so names stay short. */
const Name = z.string().regex(/^[a-z0-9][a-z0-9_.-]{0,31}$/, 'must be 1 to 32 lowercase letters, digits and _ . - (starting with a letter or digit)');
const Round = z.number().int().min(0);
const Units = z.number().int().positive().max(AMOUNT_UNITS_MAX);
const Share = z.number().min(0).max(1);
const Interval = z.number().int().min(TICK_INTERVAL_MS_MIN).max(TICK_INTERVAL_MS_MAX);
const range = (value: z.ZodNumber) =>
  z.strictObject({ min: value, max: value }).refine((r) => r.min <= r.max, { message: 'max must be at least min', path: ['max'] });

/** The flags' mix: what a sub-section of `mix` left out means. */
const FLAGS_MIX: ScenarioMix = scenarioFromFlags({ buyers: 1, sellers: 1, rounds: 1, seed: 0, partition: true }).mix;

const Mix = z.strictObject({
  perRound: z.number().int().min(0).max(PER_ROUND_MAX).default(1),
  shares: z
    .strictObject({ open: Share.default(0), cancel: Share.default(0), topup: Share.default(0), silence: Share.default(0), pause: Share.default(0), idle: Share.default(0) })
    .refine((s) => Math.abs(s.open + s.cancel + s.topup + s.silence + s.pause + s.idle - 1) <= 1e-9, {
      message: 'the shares (open, cancel, topup, silence, pause, idle) must sum to 1',
    }),
  open: z
    .strictObject({
      ratePerTick: range(Units),
      maxTotal: range(Units),
      tickIntervalMs: z
        .strictObject({ min: Interval, max: Interval, step: z.number().int().positive().default(1) })
        .refine((r) => r.min <= r.max, { message: 'max must be at least min', path: ['max'] }),
      escrowShare: Share,
    })
    .default(FLAGS_MIX.open),
  cancel: z.strictObject({ payerShare: Share }).default(FLAGS_MIX.cancel),
  topup: z.strictObject({ amountUnits: range(Units) }).default(FLAGS_MIX.topup),
  silence: z.strictObject({ buyerShare: Share, rounds: range(z.number().int().min(1).max(ROUNDS_MAX)) }).default(FLAGS_MIX.silence),
  pause: z.strictObject({ rounds: range(z.number().int().min(1).max(ROUNDS_MAX)) }).default(FLAGS_MIX.pause),
});

const Event = z
  .strictObject({
    round: Round,
    open: z
      .strictObject({
        name: Name,
        buyer: z.string(),
        seller: z.string(),
        ratePerTick: Units,
        maxTotal: Units,
        tickIntervalMs: Interval,
        mode: z.enum(['escrow', 'payg']).default('escrow'),
      })
      .optional(),
    cancel: z.strictObject({ stream: z.string(), by: z.enum(['payer', 'payee']) }).optional(),
    topup: z.strictObject({ buyer: z.string(), amountUnits: Units }).optional(),
    pause: z.strictObject({ stream: z.string(), rounds: z.number().int().min(1).max(ROUNDS_MAX) }).optional(),
  })
  .superRefine((e, ctx) => {
    const actions = (['open', 'cancel', 'topup', 'pause'] as const).filter((k) => e[k] !== undefined);
    if (actions.length !== 1) ctx.addIssue({ code: 'custom', message: `an event has exactly one of open, cancel, topup, pause (this one has ${actions.length ? actions.join(' and ') : 'none'})` });
  });

export const ScenarioFileSchema = z
  .strictObject({
    seed: z.number().int().min(0).max(0xffff_ffff),
    rounds: z.number().int().min(1).max(ROUNDS_MAX),
    roundMs: z.number().int().min(10).max(ROUND_MS_MAX).default(ROUND_MS_DEFAULT),
    parties: z.strictObject({
      buyers: z.array(z.strictObject({ name: Name, fundsUnits: z.number().int().min(0).max(AMOUNT_UNITS_MAX) })).min(1).max(PARTIES_MAX),
      sellers: z.array(z.strictObject({ name: Name })).min(1).max(PARTIES_MAX),
    }),
    liveness: z.strictObject({ timeoutMs: Interval, graceMs: z.number().int().min(TICK_INTERVAL_MS_MIN).max(7 * TICK_INTERVAL_MS_MAX) }).optional(),
    mix: Mix.optional(),
    partitions: z.array(z.strictObject({ parties: z.array(z.string()).min(1), fromRound: Round, toRound: Round })).default([]),
    events: z.array(Event).max(EVENTS_MAX).default([]),
  })
  .superRefine((s, ctx) => {
    // the cross-references: names, rounds within the run, streams opened before they are used
    const at = (path: Array<string | number>, message: string) => ctx.addIssue({ code: 'custom', path, message });
    const buyers = new Map(s.parties.buyers.map((p, i) => [p.name, i]));
    const sellers = new Map(s.parties.sellers.map((p, i) => [p.name, i]));
    const seen = new Map<string, string>();
    for (const [side, list] of [['buyers', s.parties.buyers], ['sellers', s.parties.sellers]] as const) {
      list.forEach((p, i) => {
        const first = seen.get(p.name);
        if (first) at(['parties', side, i, 'name'], `${p.name} is already the name of ${first}: names are unique`);
        else seen.set(p.name, `parties.${side}[${i}]`);
      });
    }
    const inRun = (path: Array<string | number>, round: number) => round >= s.rounds && at(path, `round ${round} is past the last round (${s.rounds - 1}; rounds count from 0)`);
    s.partitions.forEach((p, i) => {
      p.parties.forEach((name, j) => !buyers.has(name) && !sellers.has(name) && at(['partitions', i, 'parties', j], `no party is named ${name}`));
      inRun(['partitions', i, 'fromRound'], p.fromRound);
      if (p.toRound < p.fromRound) at(['partitions', i, 'toRound'], `toRound (${p.toRound}) must be at least fromRound (${p.fromRound})`);
    });
    if (!s.liveness && (s.partitions.length > 0 || (s.mix && s.mix.perRound > 0 && s.mix.shares.silence > 0))) {
      at(['liveness'], 'partitions and silences need liveness (timeoutMs, graceMs): without heartbeats a silent party is not noticed');
    }
    // streams are opened in round order, in file order within a round
    const order = s.events.map((e, i) => ({ e, i })).sort((a, b) => a.e.round - b.e.round || a.i - b.i);
    const opened = new Map<string, number>();
    for (const { e, i } of order) {
      inRun(['events', i, 'round'], e.round);
      if (e.open) {
        if (!buyers.has(e.open.buyer)) at(['events', i, 'open', 'buyer'], `no buyer is named ${e.open.buyer}`);
        if (!sellers.has(e.open.seller)) at(['events', i, 'open', 'seller'], `no seller is named ${e.open.seller}`);
        if (opened.has(e.open.name)) at(['events', i, 'open', 'name'], `stream ${e.open.name} is already opened by events[${opened.get(e.open.name)}]: stream names are unique`);
        else opened.set(e.open.name, i);
      }
      for (const [kind, stream] of [['cancel', e.cancel?.stream], ['pause', e.pause?.stream]] as const) {
        if (stream !== undefined && !opened.has(stream)) at(['events', i, kind, 'stream'], `no event opens a stream named ${stream} before this one (by round ${e.round}, earlier in the file within a round)`);
      }
      if (e.topup && !buyers.has(e.topup.buyer)) at(['events', i, 'topup', 'buyer'], `no buyer is named ${e.topup.buyer}`);
    }
  });

export class ScenarioFileError extends Error {
  constructor(
    readonly file: string,
    readonly problems: string[],
  ) {
    super(`${file}: ${problems.length === 1 ? problems[0] : `${problems.length} problems:\n  ${problems.join('\n  ')}`}`);
  }
}

const got = (input: unknown) => (input === undefined ? '' : ` (got ${JSON.stringify(input)})`);

/** The rule an input breaks, said as a rule (zod's default for the rest). */
function ruleBroken(issue: z.core.$ZodRawIssue): string | undefined {
  const bound = (b: unknown) => (typeof b === 'bigint' ? b.toString() : String(b));
  switch (issue.code) {
    case 'invalid_type':
      return issue.input === undefined ? `is required (${issue.expected})` : `must be ${issue.expected === 'int' ? 'a whole number' : `a ${issue.expected}`}${got(issue.input)}`;
    case 'too_small':
      return issue.origin === 'array'
        ? `must have at least ${bound(issue.minimum)} item(s)`
        : `must be ${issue.inclusive === false ? 'more than' : 'at least'} ${bound(issue.minimum)}${got(issue.input)}`;
    case 'too_big':
      return issue.origin === 'array'
        ? `must have at most ${bound(issue.maximum)} items`
        : `must be ${issue.inclusive === false ? 'less than' : 'at most'} ${bound(issue.maximum)}${got(issue.input)}`;
    case 'invalid_value':
      return `must be one of ${issue.values.map((v) => String(v)).join(', ')}${got(issue.input)}`;
    default:
      return undefined;
  }
}

/** `events[2].open.buyer`: the path as it reads in the file. */
const pathOf = (path: ReadonlyArray<PropertyKey>) =>
  path.reduce<string>((acc, key) => (typeof key === 'number' ? `${acc}[${key}]` : acc ? `${acc}.${String(key)}` : String(key)), '');

/** A scenario from a YAML text; `file` names it in the errors. */
export function parseScenario(text: string, file: string): Scenario {
  const doc = parseDocument(text);
  if (doc.errors.length > 0) {
    throw new ScenarioFileError(
      file,
      doc.errors.map((e) => `${e.linePos ? `line ${e.linePos[0].line}, column ${e.linePos[0].col}: ` : ''}not valid YAML: ${e.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '')}`),
    );
  }
  const parsed = ScenarioFileSchema.safeParse(doc.toJS(), { error: ruleBroken });
  if (!parsed.success) {
    throw new ScenarioFileError(
      file,
      parsed.error.issues.map((issue) => {
        const path = pathOf(issue.path);
        const keys = issue.code === 'unrecognized_keys' ? `: ${issue.keys.join(', ')} ${issue.keys.length === 1 ? 'is' : 'are'} not a field here` : '';
        return keys ? `${path || '(top level)'}${keys}` : `${path || '(top level)'}: ${issue.message}`;
      }),
    );
  }
  const { mix, events, liveness, ...rest } = parsed.data;
  return {
    ...rest,
    ...(liveness ? { liveness } : {}),
    // no mix: the scenario's events alone, nothing drawn
    mix: mix ?? { ...FLAGS_MIX, perRound: 0 },
    events: events.map(({ round, open, cancel, topup, pause }): ScenarioEvent =>
      open ? { round, open } : cancel ? { round, cancel } : topup ? { round, topup } : { round, pause: pause! },
    ),
  };
}

export async function loadScenario(file: string): Promise<Scenario> {
  const text = await readFile(file, 'utf8').catch((error: NodeJS.ErrnoException) => {
    throw new ScenarioFileError(file, [`cannot read it (${error.code ?? error.message})`]);
  });
  return parseScenario(text, file);
}
