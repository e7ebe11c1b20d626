import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync, mkdtempSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { canonicalJson } from '../../src/domain/canonical';
import { planScenario, planSimulation, scenarioFromFlags, type Command } from '../../src/domain/simulation';
import { loadScenario, parseScenario, ScenarioFileError } from '../../src/scenario';

const ROOT = resolve(__dirname, '../..');
const shipped = (name: string) => loadScenario(join(ROOT, 'scenarios', name));
const digest = (plan: Command[]) => createHash('sha256').update(canonicalJson(plan)).digest('hex').slice(0, 16);
const FLAGS = { buyers: 5, sellers: 5, rounds: 100, seed: 42 };

test.each([
  ['seed-42.yaml', false, 'e3b0831a77703c61'],
  ['seed-42-partition.yaml', true, '838554f097d65c1b'],
])('%s is the flags\' seed-42 market (partition %s): the same scenario, the same command sequence, the digest the flags always printed', async (file, partition, printed) => {
  const scenario = await shipped(file);
  expect(scenario).toEqual(scenarioFromFlags({ ...FLAGS, partition }));
  const plan = planScenario(scenario);
  expect(plan).toEqual(planSimulation({ ...FLAGS, partition }));
  // the digest the flags printed before scenario files existed (docs/streams.md): the refactor changed no command
  expect(digest(plan)).toBe(printed);
});

test('the same scenario file gives the same command sequence; another seed gives another', async () => {
  const scenario = await shipped('small-market.yaml');
  const plan = planScenario(scenario);
  expect(planScenario(await shipped('small-market.yaml'))).toEqual(plan);
  expect(planScenario({ ...scenario, seed: scenario.seed + 1 })).not.toEqual(plan);
});

test('a scenario\'s partitions silence the named parties for their window, and its events come at their rounds after the draws, on the streams they name', async () => {
  const scenario = await shipped('small-market.yaml');
  const plan = planScenario(scenario);
  const buyer = (name: string) => scenario.parties.buyers.findIndex((p) => p.name === name);
  const seller = (name: string) => scenario.parties.sellers.findIndex((p) => p.name === name);
  // partitions: from fromRound, for toRound − fromRound rounds after it (silent through toRound)
  expect(plan.filter((c) => c.kind === 'silence')).toEqual(
    scenario.partitions.flatMap((p) =>
      p.parties.map((name) => ({
        round: p.fromRound,
        kind: 'silence',
        party: buyer(name) >= 0 ? 'buyer' : 'seller',
        index: buyer(name) >= 0 ? buyer(name) : seller(name),
        rounds: p.toRound - p.fromRound,
      })),
    ),
  );
  // the named stream: opened at its round with its terms, paused and resumed by the file, cancelled by its payee
  const job = plan.find((c): c is Extract<Command, { kind: 'open' }> => c.kind === 'open' && c.round === 2 && c.maxTotal === 400)!;
  expect(job).toMatchObject({ buyer: buyer('alice'), seller: seller('gpu'), ratePerTick: 5, tickIntervalMs: 200, mode: 'escrow' });
  // (the mix may pause it too, in other rounds)
  expect(plan.filter((c) => 'stream' in c && c.stream === job.stream && c.kind !== 'open' && c.round >= 22)).toEqual([
    { round: 22, kind: 'pause', stream: job.stream },
    { round: 27, kind: 'resume', stream: job.stream },
    { round: 30, kind: 'cancel', stream: job.stream, by: 'payee' },
  ]);
  expect(plan).toContainEqual({ round: 18, kind: 'topup', buyer: buyer('bob'), amount: 150 });
  // streams are numbered in the order they are opened, rounds never go back
  const opens = plan.filter((c) => c.kind === 'open');
  expect(opens.map((c) => (c.kind === 'open' ? c.stream : -1))).toEqual(opens.map((_, i) => i));
  expect(plan.map((c) => c.round)).toEqual([...plan.map((c) => c.round)].sort((a, b) => a - b));
  // the drawn mix is there too, within its ranges
  for (const c of opens) if (c !== job && c.kind === 'open') expect([c.ratePerTick >= 2 && c.ratePerTick <= 10, [200, 300, 400].includes(c.tickIntervalMs)]).toEqual([true, true]);
  expect(new Set(plan.map((c) => c.kind))).toEqual(new Set(['open', 'cancel', 'topup', 'silence', 'pause', 'resume']));
});

test('a stream paused while paused stays paused until the later end; one resume, none past the last round', () => {
  const base = scenarioFromFlags({ buyers: 1, sellers: 1, rounds: 20, seed: 1, partition: false });
  const plan = planScenario({
    ...base,
    mix: { ...base.mix, perRound: 0 },
    events: [
      { round: 0, open: { name: 'x', buyer: 'b0', seller: 's0', ratePerTick: 1, maxTotal: 10, tickIntervalMs: 200, mode: 'escrow' } },
      { round: 1, pause: { stream: 'x', rounds: 5 } },
      { round: 3, pause: { stream: 'x', rounds: 10 } },
      { round: 14, pause: { stream: 'x', rounds: 1 } },
      { round: 16, pause: { stream: 'x', rounds: 50 } },
    ],
  });
  expect(plan.filter((c) => c.kind !== 'open')).toEqual([
    { round: 1, kind: 'pause', stream: 0 },
    { round: 13, kind: 'resume', stream: 0 },
    { round: 14, kind: 'pause', stream: 0 },
    { round: 15, kind: 'resume', stream: 0 },
    { round: 16, kind: 'pause', stream: 0 },
  ]);
});

const problems = (yaml: string): string[] => {
  try {
    parseScenario(yaml, 'x.yaml');
  } catch (error) {
    if (error instanceof ScenarioFileError) return error.problems;
    throw error;
  }
  return [];
};
const MARKET = `seed: 1\nrounds: 10\nparties:\n  buyers: [{ name: b0, fundsUnits: 100 }]\n  sellers: [{ name: s0 }]\n`;

test.each([
  ['not YAML', 'seed: [1\n', /^line \d+, column \d+: not valid YAML: /],
  ['a missing field', 'seed: 1\nparties: { buyers: [], sellers: [] }\n', /^rounds: is required \(number\)$/],
  ['a field the format has not', `${MARKET}sede: 2\n`, /^\(top level\): sede is not a field here$/],
  ['a fraction where whole numbers go', MARKET.replace('rounds: 10', 'rounds: 2.5'), /^rounds: must be a whole number \(got 2.5\)$/],
  ['a negative funding', MARKET.replace('fundsUnits: 100', 'fundsUnits: -1'), /^parties\.buyers\[0\]\.fundsUnits: must be at least 0 \(got -1\)$/],
  ['a party name that is no id', MARKET.replace('name: s0', 'name: "S 0"'), /^parties\.sellers\[0\]\.name: must be 1 to 32 lowercase letters/],
  ['a name used twice', MARKET.replace('name: s0', 'name: b0'), /^parties\.sellers\[0\]\.name: b0 is already the name of parties\.buyers\[0\]/],
  ['shares that do not sum to 1', `${MARKET}mix: { shares: { open: 0.5, cancel: 0.6 } }\n`, /^mix\.shares: the shares .* must sum to 1$/],
  ['a range upside down', `${MARKET}mix: { shares: { open: 1 }, topup: { amountUnits: { min: 9, max: 1 } } }\n`, /^mix\.topup\.amountUnits\.max: max must be at least min$/],
  ['a tick interval the API refuses', `${MARKET}events: [{ round: 0, open: { name: x, buyer: b0, seller: s0, ratePerTick: 1, maxTotal: 5, tickIntervalMs: 10 } }]\n`, /^events\[0\]\.open\.tickIntervalMs: must be at least 100 \(got 10\)$/],
  ['a mode that is none', `${MARKET}events: [{ round: 0, open: { name: x, buyer: b0, seller: s0, ratePerTick: 1, maxTotal: 5, tickIntervalMs: 200, mode: prepaid } }]\n`, /^events\[0\]\.open\.mode: must be one of escrow, payg \(got "prepaid"\)$/],
  ['an event with two actions', `${MARKET}events: [{ round: 0, topup: { buyer: b0, amountUnits: 1 }, cancel: { stream: x, by: payer } }]\n`, /^events\[0\]: an event has exactly one of open, cancel, topup, pause \(this one has cancel and topup\)$/],
  ['a cancel by a third side', `${MARKET}events: [{ round: 0, cancel: { stream: x, by: admin } }]\n`, /^events\[0\]\.cancel\.by: must be one of payer, payee \(got "admin"\)$/],
  ['a cancel of a stream not opened yet', `${MARKET}events:\n  - { round: 5, open: { name: x, buyer: b0, seller: s0, ratePerTick: 1, maxTotal: 5, tickIntervalMs: 200 } }\n  - { round: 4, cancel: { stream: x, by: payee } }\n`, /^events\[1\]\.cancel\.stream: no event opens a stream named x before this one/],
  ['an open to a buyer', `${MARKET}events: [{ round: 0, open: { name: x, buyer: b0, seller: b0, ratePerTick: 1, maxTotal: 5, tickIntervalMs: 200 } }]\n`, /^events\[0\]\.open\.seller: no seller is named b0$/],
  ['an event past the last round', `${MARKET}events: [{ round: 10, topup: { buyer: b0, amountUnits: 1 } }]\n`, /^events\[0\]\.round: round 10 is past the last round \(9; rounds count from 0\)$/],
  ['a partition of a stranger', `${MARKET}liveness: { timeoutMs: 700, graceMs: 2000 }\npartitions: [{ parties: [zed], fromRound: 1, toRound: 2 }]\n`, /^partitions\[0\]\.parties\[0\]: no party is named zed$/],
  ['a window that ends before it starts', `${MARKET}liveness: { timeoutMs: 700, graceMs: 2000 }\npartitions: [{ parties: [s0], fromRound: 3, toRound: 2 }]\n`, /^partitions\[0\]\.toRound: toRound \(2\) must be at least fromRound \(3\)$/],
  ['partitions without liveness', `${MARKET}partitions: [{ parties: [s0], fromRound: 1, toRound: 2 }]\n`, /^liveness: partitions and silences need liveness/],
])('a bad file is refused with the path and the rule: %s', (_what, yaml, expected) => {
  const found = problems(yaml);
  expect(found).toContainEqual(expect.stringMatching(expected));
});

test('a good file without a mix plays its events alone', () => {
  const scenario = parseScenario(`${MARKET}events: [{ round: 3, topup: { buyer: b0, amountUnits: 7 } }]\n`, 'x.yaml');
  expect(planScenario(scenario)).toEqual([{ round: 3, kind: 'topup', buyer: 0, amount: 7 }]);
});

test('sluice simulate --scenario with a bad file exits 2, names the problem, and sends nothing to the API', async () => {
  let requests = 0;
  const server = createServer((_req, res) => {
    requests++;
    res.writeHead(500).end();
  });
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  const port = (server.address() as { port: number }).port;
  const dir = mkdtempSync(join(tmpdir(), 'scenario-'));
  const file = join(dir, 'bad.yaml');
  writeFileSync(file, readFileSync(join(ROOT, 'scenarios/seed-42.yaml'), 'utf8').replace('escrowShare: 0.7', 'escrowShare: 1.7'));
  const result = await new Promise<{ code: number | null; stderr: string }>((done) => {
    const child = execFile(process.execPath, ['--import', 'tsx', join(ROOT, 'src/cli.ts'), 'simulate', '--api', `http://127.0.0.1:${port}`, '--scenario', file], { cwd: ROOT }, (_e, _out, stderr) =>
      done({ code: child.exitCode, stderr }),
    );
  });
  server.close();
  expect(result.stderr).toContain(`${file}: mix.open.escrowShare: must be at most 1 (got 1.7)`);
  expect(result.code).toBe(2);
  expect(requests).toBe(0);
});
