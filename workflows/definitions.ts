import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import type { StreamReceipt, StreamStatus } from '../src/domain/streams';

/**
 * Signals, updates and queries, defined once: the workflows and the API import
 * these, so names and payload types cannot drift apart.
 */
export interface CancelStream {
  /** The party that asked (payer or payee). */
  by: string;
  reason?: string;
}

export interface StreamView {
  status: StreamStatus;
  paid: number;
  ticks: number;
  lastTick: number;
  nextTickAtMs?: number;
}

export const cancelStreamSignal = defineSignal<[CancelStream]>('cancelStream');
/** Completes once the stream's first tick has settled (or opening failed). */
export const streamOpenedUpdate = defineUpdate<StreamReceipt>('streamOpened');
export const streamViewQuery = defineQuery<StreamView>('streamView');
