import { temporal } from '@temporalio/proto';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { Worker } from '@temporalio/worker';
import { SEARCH_ATTRIBUTES } from '../../workflows/searchAttributes';
import { resolveTool, sdkExecutable, TEMPORAL_TEST_SERVER } from '../../src/temporal/tools';
import { quietTemporalRuntime } from './temporalRuntime';

/**
 * The time-skipping test server (the Java test server, resolved by globalSetup or
 * src/temporal/tools.ts) with Sluice's search attributes registered, and a worker
 * running the workflow bundle under test on it.
 */
export async function startTimeSkippingEnv(): Promise<TestWorkflowEnvironment> {
  quietTemporalRuntime();
  const path = process.env.SLUICE_TEST_TIME_SKIPPING_SERVER;
  const executable = path ? ({ type: 'existing-path', path } as const) : sdkExecutable(resolveTool(TEMPORAL_TEST_SERVER));
  const env = await TestWorkflowEnvironment.createTimeSkipping({ server: { executable } });
  // The test server refuses unregistered search attributes ("search attribute SluiceStatus is
  // not defined"), which fails the workflows' upserts over and over. createTimeSkipping has no
  // searchAttributes option (only the dev server config does) and the test server does not
  // implement ListSearchAttributes (so registerSearchAttributes, which lists first, cannot be
  // used), but it does implement AddSearchAttributes.
  await env.connection.operatorService.addSearchAttributes({
    namespace: env.namespace ?? 'default',
    searchAttributes: Object.fromEntries(SEARCH_ATTRIBUTES.map((k) => [k.name, temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD])),
  });
  return env;
}

/** A worker for the bundle globalSetup built (or workflows/ bundled here), running until `stop()`. */
export async function startBundleWorker(env: TestWorkflowEnvironment, taskQueue: string, activities: object) {
  const bundle = process.env.SLUICE_TEST_WORKFLOW_BUNDLE;
  const worker = await Worker.create({
    connection: env.nativeConnection,
    namespace: env.namespace ?? 'default',
    taskQueue,
    ...(bundle ? { workflowBundle: { codePath: bundle } } : { workflowsPath: require.resolve('../../workflows') }),
    activities,
  });
  const running = worker.run();
  return {
    worker,
    async stop() {
      worker.shutdown();
      await running;
    },
  };
}

/** A hang (e.g. a workflow task failing in a loop) becomes a readable failure. */
export function within<T>(ms: number, promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms (run with TEST_TEMPORAL_LOG_LEVEL=WARN to see why)`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}
