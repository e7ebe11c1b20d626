import { readdirSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { Worker, type ReplayWorkerOptions } from '@temporalio/worker';
import { DeterminismViolationError } from '@temporalio/workflow';
import * as workflows from '../../workflows';
import { quietTemporalRuntime } from '../support/temporalRuntime';

/**
 * Every history recorded in test/histories/ (npm run record:histories) must replay
 * against today's workflow code: a change that would break running workflows fails
 * here, not in production. See test/histories/README.md.
 */
const HISTORIES_DIR = join(__dirname, '..', 'histories');

interface Recorded {
  name: string;
  workflowType: string;
  history: { events: Array<Record<string, any>> };
}

const recorded: Recorded[] = readdirSync(HISTORIES_DIR)
  .filter((f) => f.endsWith('.json'))
  .sort()
  .map((file) => {
    const history = JSON.parse(readFileSync(join(HISTORIES_DIR, file), 'utf8'));
    return {
      name: basename(file, '.json'),
      workflowType: history.events[0].workflowExecutionStartedEventAttributes.workflowType.name,
      history,
    };
  });

// the bundle globalSetup built from workflows/ (the code under test); bundled here if run without it
const current: ReplayWorkerOptions = process.env.SLUICE_TEST_WORKFLOW_BUNDLE
  ? { workflowBundle: { codePath: process.env.SLUICE_TEST_WORKFLOW_BUNDLE } }
  : { workflowsPath: require.resolve('../../workflows') };

beforeAll(() => quietTemporalRuntime());

describe('recorded workflow histories replay against the current workflow code', () => {
  test('every workflow type in workflows/index.ts has at least one recorded history', () => {
    const types = Object.entries(workflows)
      .filter(([, v]) => typeof v === 'function')
      .map(([k]) => k)
      .sort();
    expect(types.length).toBeGreaterThan(0);
    expect([...new Set(recorded.map((r) => r.workflowType))].sort()).toEqual(types);
  });

  test.each(recorded.map((r) => [r.name, r] as const))('%s replays without a determinism violation', async (_name, { name, history }) => {
    await expect(Worker.runReplayHistory(current, history, `replay-${name}`)).resolves.toBeUndefined();
  });

  test('the check has teeth: a paymentWorkflow with an extra timer is rejected as non-deterministic', async () => {
    const paid = recorded.find((r) => r.name === 'payment-success');
    expect(paid).toBeDefined();
    const divergent: ReplayWorkerOptions = { workflowsPath: require.resolve('../fixtures/divergent-payment') };
    const replay = Worker.runReplayHistory(divergent, paid!.history, 'replay-divergent');
    await expect(replay).rejects.toBeInstanceOf(DeterminismViolationError);
    await expect(replay).rejects.toThrow(/nondetermin/i);
  });

  test('the check has teeth for streams: a streamWorkflow that continues as new one tick later is rejected', async () => {
    const continued = recorded.find((r) => r.name === 'stream-continued-first-run');
    expect(continued).toBeDefined();
    expect(continued!.history.events.at(-1)!.eventType).toMatch(/CONTINUED_AS_NEW/);
    const divergent: ReplayWorkerOptions = { workflowsPath: require.resolve('../fixtures/divergent-stream') };
    const replay = Worker.runReplayHistory(divergent, continued!.history, 'replay-divergent-stream');
    await expect(replay).rejects.toBeInstanceOf(DeterminismViolationError);
    await expect(replay).rejects.toThrow(/nondetermin/i);
  });
});
