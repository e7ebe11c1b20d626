/**
 * Workflow histories read back after a phase of bench:streams: their events, and
 * where a call (an open, a bare start, a cancel) spent its time, segment by segment.
 */
import type { Client } from '@temporalio/client';
import { tsToMs } from '@temporalio/common/lib/time';
import { mapConcurrently, quantiles, type Quantiles } from '../support/measure';

/** One history event: its kind (the attributes' name, e.g. `activityTaskScheduled`), time and attributes. */
export interface Ev {
  id: string;
  kind: string;
  at: number;
  a: Record<string, unknown>;
}

export async function eventsOf(client: Client, workflowId: string, runId?: string): Promise<Ev[]> {
  const history = await client.workflow.getHandle(workflowId, runId).fetchHistory();
  const out: Ev[] = [];
  for (const e of (history.events ?? []) as unknown as Record<string, unknown>[]) {
    // the one attributes field that is set names the event type
    const key = Object.keys(e).find((k) => k.endsWith('EventAttributes') && e[k] != null);
    if (!key) continue;
    out.push({ id: String(e.eventId), kind: key.slice(0, -'EventAttributes'.length), at: tsToMs(e.eventTime as Parameters<typeof tsToMs>[0]), a: e[key] as Record<string, unknown> });
  }
  return out;
}

export const activityName = (e: Ev) => (e.a.activityType as { name?: string } | undefined)?.name;

/** A call timed on this process's clock (epoch ms), for one workflow. */
export interface Call {
  workflowId: string;
  sentAt: number;
  doneAt: number;
}

/** Each segment of a path, p50/p99 in ms, over the sampled calls. */
export type Breakdown = Record<string, Quantiles>;

/**
 * The times of `kinds` in order in a history, each the first of its kind after the
 * previous one (from index `from`); undefined if the history does not have them all.
 */
function chain(ev: Ev[], from: number, kinds: string[]): number[] | undefined {
  const out: number[] = [];
  let i = from;
  for (const kind of kinds) {
    while (i < ev.length && ev[i]!.kind !== kind) i++;
    if (i >= ev.length) return undefined;
    out.push(ev[i]!.at);
    i++;
  }
  return out;
}

/** p50/p99 of each segment over the sampled calls, in insertion order. */
async function breakdown(client: Client, calls: Call[], segmentsOf: (ev: Ev[], c: Call) => Record<string, number> | undefined): Promise<Breakdown> {
  const seg = new Map<string, number[]>();
  await mapConcurrently(calls, 8, async (c) => {
    const s = segmentsOf(await eventsOf(client, c.workflowId), c);
    if (s) for (const [k, v] of Object.entries(s)) seg.set(k, [...(seg.get(k) ?? []), v]);
  });
  return Object.fromEntries([...seg.entries()].map(([k, v]) => [k, quantiles(v)]));
}

const WFT = ['workflowTaskScheduled', 'workflowTaskStarted', 'workflowTaskCompleted'];
const ACT = ['activityTaskScheduled', 'activityTaskStarted', 'activityTaskCompleted'];

/**
 * Where an update-with-start until the first activity's answer spends its time (an
 * open, or a bare start), from the workflow's history: the start reaching the server,
 * the first workflow task waiting for the worker and in it, the activity's dispatch
 * and execution, the second workflow task (which completes the update), the answer back.
 */
export function openBreakdown(client: Client, calls: Call[], activity: string): Promise<Breakdown> {
  return breakdown(client, calls, (ev, c) => {
    const t = chain(ev, 0, ['workflowExecutionStarted', ...WFT, ...ACT, ...WFT, 'workflowExecutionUpdateCompleted']);
    if (!t) return undefined;
    const [started, , w1s, w1c, as, ast, ac, , w2s, w2c, updated] = t as [number, number, number, number, number, number, number, number, number, number, number];
    // the workflow's own tasks before anything else happened to it (a cancel, a termination)
    const end = ev.findIndex((e) => e.kind === 'workflowExecutionSignaled' || e.kind === 'workflowExecutionTerminated');
    const tasks = (end < 0 ? ev : ev.slice(0, end)).filter((e) => e.kind === 'workflowTaskCompleted').length;
    return {
      'workflow tasks (count)': tasks,
      'start → workflow started': started - c.sentAt,
      'task 1 queued': w1s - started,
      'task 1 in worker': w1c - w1s,
      'activity dispatch': ast - as,
      [`${activity} execution`]: ac - ast,
      'task 2 queued': w2s - ac,
      'task 2 in worker': w2c - w2s,
      'update completed → answer': c.doneAt - updated,
    };
  });
}

/** Where a cancel spends its time: the signal, the workflow task, closeStream's dispatch and execution, the workflow task that ends the run, the result back. */
export function cancelBreakdown(client: Client, calls: Call[]): Promise<Breakdown> {
  return breakdown(client, calls, (ev, c) => {
    const at = ev.findIndex((e) => e.kind === 'workflowExecutionSignaled' && e.a.signalName === 'cancelStream');
    if (at < 0) return undefined;
    const t = chain(ev, at, ['workflowExecutionSignaled', ...WFT, ...ACT, ...WFT, 'workflowExecutionCompleted']);
    if (!t) return undefined;
    const [signaled, , w1s, w1c, as, ast, ac, , w2s, w2c, completed] = t as [number, number, number, number, number, number, number, number, number, number, number];
    return {
      'signal → signaled': signaled - c.sentAt,
      'task 1 queued': w1s - signaled,
      'task 1 in worker': w1c - w1s,
      'closeStream dispatch': ast - as,
      'closeStream execution': ac - ast,
      'task 2 queued': w2s - ac,
      'task 2 in worker': w2c - w2s,
      'run completed → result': c.doneAt - completed,
    };
  });
}

/** Every k-th of the calls, at most n. */
export const sample = <T>(items: T[], n: number) => items.filter((_, i) => i % Math.max(1, Math.floor(items.length / n)) === 0).slice(0, n);
