import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import type { HaltReason } from '../src/domain/billing';
import type { GrantView } from '../src/domain/grants';
import type { SessionRequestTerms, SessionView } from '../src/domain/sessions';
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
  paused?: boolean;
}

/** Who pauses or resumes a stream: the payer, an operator for it, or the admin. */
export interface StreamControlBy {
  by: string;
  onBehalfOf?: string;
}

export const cancelStreamSignal = defineSignal<[CancelStream]>('cancelStream');
/** Completes once the stream's first tick has settled (or opening failed). */
export const streamOpenedUpdate = defineUpdate<StreamReceipt>('streamOpened');
export const streamViewQuery = defineQuery<StreamView>('streamView');
/** Pauses a streaming stream (no ticks until resumed); refused (invalid_state) unless it is running. */
export const pauseStreamUpdate = defineUpdate<StreamView, [StreamControlBy]>('pauseStream');
/** Resumes a paused stream, the tick numbering going on; refused (invalid_state) unless it is paused. */
export const resumeStreamUpdate = defineUpdate<StreamView, [StreamControlBy]>('resumeStream');

export interface CancelJob {
  /** Who asked: the payer, or `admin`. */
  by: string;
  reason?: string;
}

/** Completes once the job is decided (and, for a free job, reserved). */
export const jobDecidedUpdate = defineUpdate<GrantView>('jobDecided');
/** Pays a partial or gate job; returns the grant as reserved. Paying again returns the same grant. */
export const jobPaymentUpdate = defineUpdate<GrantView>('jobPayment');
/** Cancels a job before it settles (waiting for its payment, or working): the compensations run. */
export const cancelJobSignal = defineSignal<[CancelJob]>('cancelJob');
export const jobViewQuery = defineQuery<GrantView | undefined>('jobView');

/** The billing clock stopped billing a stream (it completed, ran out of funds, was partitioned past grace or refused): close it. */
export interface StreamHalted {
  reason: HaltReason;
}
export const streamHaltedSignal = defineSignal<[StreamHalted]>('streamHalted');
/** A stream of the shard has a tick due at this time (epoch ms): a clock sleeping past it wakes then. */
export const billingDueSignal = defineSignal<[number]>('billingDue');

/** Completes once the session is open (its balance funded); fails as the ledger refused it (insufficient funds…). */
export const sessionOpenedUpdate = defineUpdate<SessionView>('sessionOpened');
/**
 * A request to the session: decided and reserved, worked, settled (or failed and
 * compensated); returns its grant. Sending the same request id again returns the same
 * grant. Refused (invalid_state) once the session is closing or closed.
 */
export const sessionRequestUpdate = defineUpdate<GrantView, [SessionRequestTerms]>('sessionRequest');
/** Closes the session once its running requests end: what remains goes back to the payer. Returns the receipt. */
export const closeSessionUpdate = defineUpdate<SessionView>('closeSession');
