/**
 * What the billing clock's workflows did in a window of bench:streams, read from their
 * histories: billDue's time and share of the window, its dispatch, the gaps between
 * back-to-back runs, the timers' lateness and the wake-ups.
 */
import { tsToMs } from '@temporalio/common/lib/time';
import { billingClockWorkflowId } from '../../src/domain/billing';
import { quantiles, type Quantiles } from '../support/measure';
import { activityName, eventsOf } from './histories';
import type { Stack } from './stack';

/** What the billing clock's workflows did in a window, from their histories (every run overlapping it). */
export interface ClockStats {
  /** billDue activities running at some point of the window, all shards; and those that timed out. */
  activities: number;
  timedOut: number;
  /** billDue execution time (SQL + planning), of those that started and ended in the window. */
  execMs: Quantiles;
  /** Time billDue ran inside the window / (window × shards): how much of the time a shard was billing. */
  execShare: number;
  scheduleToStartMs: Quantiles;
  /** One billDue's completion to the next one's scheduling, no timer between (a workflow task). */
  backToBackGapMs: Quantiles;
  /** A timer's firing past its due time (timerProcessorMaxTimeShift and the server's queues). */
  timerLateMs: Quantiles;
  /** A timer's firing (or a wake-up signal cancelling it) to the next billDue's start: a workflow task, then the dispatch. */
  wakeToActivityMs: Quantiles;
  /** billingDue signals received (stream opens), workflow tasks completed; runs (continue-as-new) seen. */
  signals: number;
  workflowTasks: number;
  runs: number;
}

export async function clockStats(s: Stack, fromMs: number, toMs: number): Promise<ClockStats> {
  const exec: number[] = [];
  const schedToStart: number[] = [];
  const gaps: number[] = [];
  const timerLate: number[] = [];
  const wakeToActivity: number[] = [];
  let activities = 0;
  let timedOut = 0;
  let busyMs = 0;
  let signals = 0;
  let workflowTasks = 0;
  let runs = 0;
  const inWindow = (at: number) => at >= fromMs && at < toMs;
  for (let shard = 0; shard < s.o.shards; shard++) {
    const id = billingClockWorkflowId(s.taskQueue, shard, s.o.shards);
    for await (const run of s.client.workflow.list({ query: `WorkflowId = '${id}'` })) {
      if (run.startTime.getTime() > toMs || (run.closeTime && run.closeTime.getTime() < fromMs)) continue;
      runs++;
      const scheduled = new Map<string, number>();
      const started = new Map<string, number>();
      const timers = new Map<string, { at: number; timeoutMs: number }>();
      let lastCompletion: number | undefined; // a billDue's end, no timer since
      let lastWake: number | undefined;
      const endedIds = new Set<string>();
      const ended = (schedId: string, at: number) => {
        endedIds.add(schedId);
        const startAt = started.get(schedId);
        if (startAt === undefined || startAt > toMs || at < fromMs) return;
        activities++;
        busyMs += Math.min(at, toMs) - Math.max(startAt, fromMs);
        if (startAt >= fromMs && at < toMs) exec.push(at - startAt);
      };
      for (const e of await eventsOf(s.client, id, run.runId)) {
        switch (e.kind) {
          case 'activityTaskScheduled':
            if (activityName(e) !== 'billDue') break;
            scheduled.set(e.id, e.at);
            if (lastCompletion !== undefined && inWindow(e.at)) gaps.push(e.at - lastCompletion);
            lastCompletion = undefined;
            break;
          case 'activityTaskStarted': {
            const sid = String(e.a.scheduledEventId);
            const schedAt = scheduled.get(sid);
            if (schedAt === undefined) break;
            started.set(sid, e.at);
            if (inWindow(e.at)) {
              schedToStart.push(e.at - schedAt);
              if (lastWake !== undefined) wakeToActivity.push(e.at - lastWake);
            }
            lastWake = undefined;
            break;
          }
          case 'activityTaskCompleted':
          case 'activityTaskFailed':
          case 'activityTaskTimedOut': {
            const sid = String(e.a.scheduledEventId);
            if (!started.has(sid)) break;
            ended(sid, e.at);
            if (e.kind === 'activityTaskTimedOut' && inWindow(e.at)) timedOut++;
            lastCompletion = e.at;
            break;
          }
          case 'timerStarted':
            timers.set(e.id, { at: e.at, timeoutMs: tsToMs(e.a.startToFireTimeout as Parameters<typeof tsToMs>[0]) });
            lastCompletion = undefined;
            break;
          case 'timerFired': {
            const t = timers.get(String(e.a.startedEventId));
            if (t && inWindow(e.at)) timerLate.push(e.at - (t.at + t.timeoutMs));
            lastWake = e.at;
            break;
          }
          case 'timerCanceled':
            lastWake = e.at; // woken early by a signal
            break;
          case 'workflowExecutionSignaled':
            if (inWindow(e.at)) signals++;
            break;
          case 'workflowTaskCompleted':
            if (inWindow(e.at)) workflowTasks++;
            break;
        }
      }
      // still running at the end of the history (a billDue in flight)
      // a billDue still running when the history was read (after the window) ran through its end
      for (const [sid, startAt] of started) if (!endedIds.has(sid) && startAt < toMs) ended(sid, toMs);
    }
  }
  return {
    activities,
    timedOut,
    execMs: quantiles(exec),
    execShare: busyMs / ((toMs - fromMs) * s.o.shards),
    scheduleToStartMs: quantiles(schedToStart),
    backToBackGapMs: quantiles(gaps),
    timerLateMs: quantiles(timerLate),
    wakeToActivityMs: quantiles(wakeToActivity),
    signals,
    workflowTasks,
    runs,
  };
}
