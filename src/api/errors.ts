import { randomBytes } from 'node:crypto';
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { hasZodFastifySchemaValidationErrors } from 'fastify-type-provider-zod';
import type { ErrorCode } from '../domain/errors';
import { isConnectionLost } from '../db/pool';
import { asSluiceError, isTemporalUnavailable } from '../temporal/failures';
import { StillRunning } from '../services/deadline';
import { docUrlFor } from './errorReference';
import { plainIssue, type RequestPart, type SchemaIssue } from './validation';

/** One HTTP status per error code, in one place. */
export const HTTP_STATUS: Record<ErrorCode, number> = {
  invalid_request: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  idempotency_conflict: 409,
  payment_conflict: 409,
  ref_conflict: 409,
  job_conflict: 409,
  creation_failed: 422,
  already_exists: 409,
  hold_closed: 409,
  hold_expired: 409,
  insufficient_funds: 422,
  amount_exceeds_hold: 422,
  currency_mismatch: 422,
  refund_exceeds_payment: 422,
  rate_limited: 429,
  payload_too_large: 413,
  headers_too_large: 431,
  request_timeout: 408,
  limit_exceeded: 422,
  subaccount_not_live: 409,
  holds_open: 409,
  // a control that does not fit the stream's state: pausing a paused stream, topping up a closed one
  invalid_state: 409,
};

const body = (code: string, message: string, details: Record<string, unknown> = {}, param?: string) => ({ error: { code, message, details, ...(param ? { param } : {}) } });

/** The HTTP status of a code, counting the two that are no caller's error. */
export const statusOfCode = (code: ErrorCode | 'unavailable' | 'internal') => (code === 'unavailable' ? 503 : code === 'internal' ? 500 : HTTP_STATUS[code]);

/**
 * What every error answer carries besides its code and message: the request's id (the
 * same as its X-Request-Id header and its log lines) and the code's entry in the error
 * reference. A domain error that is about one input names it as `details.param`.
 */
function answered<B extends { error: { code: string; details: Record<string, unknown>; param?: string } }>(request: FastifyRequest, b: B) {
  const param = b.error.param ?? (typeof b.error.details.param === 'string' ? b.error.details.param : undefined);
  return { error: { ...b.error, ...(param ? { param } : {}), request_id: request.id, doc_url: docUrlFor(request, b.error.code) } };
}

/** Seconds a caller should wait before retrying through an outage. */
export const OUTAGE_RETRY_AFTER_S = 1;

/**
 * The database or Temporal went away under the request (a connection terminated, a
 * server restarting): neither the caller's fault nor a bug. Answered 503 with
 * Retry-After; every write is keyed (an idempotency key, a ref, a job or request
 * id), so the same request sent again does what it asked once.
 */
const isOutage = (error: unknown) => isConnectionLost(error) || isTemporalUnavailable(error);
const outageBody = () => body('unavailable', 'a service Sluice depends on is unavailable for a moment; retry the same request (with the same idempotency key)');

/** The 202 answer for a call still running. */
const stillRunningBody = (e: StillRunning) => ({ status: 'PENDING', statusUrl: e.statusUrl, message: e.message, ...e.details });

export interface Answer {
  status: number;
  body: ReturnType<typeof body> | ReturnType<typeof stillRunningBody>;
  retryAfterS?: number;
  /** PostgreSQL or Temporal went away (logged as such). */
  outage?: boolean;
}

/**
 * The one classification of errors, for the error handler and for the items of a batch:
 * undefined means a bug (answered 500 and logged by the caller).
 */
export function answerFor(error: unknown): Answer | undefined {
  // not an error: accepted, still running past the API's wait
  if (error instanceof StillRunning) return { status: 202, body: stillRunningBody(error) };
  const known = asSluiceError(error);
  if (known) {
    // a refusal that knows when it lifts (a rate limit) says so in Retry-After too
    const retryAfterS = typeof known.details.retryAfterSeconds === 'number' ? known.details.retryAfterSeconds : undefined;
    return { status: HTTP_STATUS[known.code], body: body(known.code, known.message, known.details), ...(retryAfterS !== undefined && { retryAfterS }) };
  }
  if (isOutage(error)) return { status: 503, body: outageBody(), retryAfterS: OUTAGE_RETRY_AFTER_S, outage: true };
  return undefined;
}

/** The 500 answer: no internals; what was asked may be sent again under the same key (or ref). */
export const internalBody = (retryWith: string) => body('internal', `internal error; the ${retryWith}`);

/**
 * Every error leaves as `{error: {code, message, details}}`. Errors the caller
 * caused keep their 4xx; anything unexpected is logged and answered 500 without
 * internals (a 5xx is a bug to fix, never a way to report bad input).
 */
export function errorHandler(error: FastifyError | Error, request: FastifyRequest, reply: FastifyReply) {
  // the router's own refusals come here before any hook has set it
  reply.header('x-request-id', request.id);
  if (hasZodFastifySchemaValidationErrors(error)) {
    const part = (error.validationContext ?? 'body') as RequestPart;
    const issues = error.validation.map((v) => plainIssue(v as unknown as SchemaIssue, part, partOf(request, part)));
    return reply.status(400).send(answered(request, body('invalid_request', issues.map((i) => i.message).join('; '), { issues }, issues[0]?.param || undefined)));
  }
  const answer = answerFor(error);
  if (answer?.outage) request.log.warn({ err: error }, 'outage');
  if (answer?.retryAfterS !== undefined) reply.header('retry-after', String(answer.retryAfterS));
  if (answer) return reply.status(answer.status).send('error' in answer.body ? answered(request, answer.body) : answer.body);
  const status = (error as FastifyError).statusCode;
  if (status && status >= 400 && status < 500) {
    // Fastify's own 4xx: malformed JSON, body too large, unsupported media type…
    const code = status === 413 ? 'payload_too_large' : status === 429 ? 'rate_limited' : 'invalid_request';
    return reply.status(status).send(answered(request, body(code, error.message, status === 413 ? { limitBytes: request.server.initialConfig.bodyLimit } : {})));
  }
  request.log.error({ err: error }, 'unhandled error');
  return reply.status(500).send(answered(request, internalBody('request may be retried with the same idempotency key')));
}

export function notFoundHandler(request: FastifyRequest, reply: FastifyReply) {
  return reply.status(404).send(answered(request, body('not_found', `no route ${request.method} ${request.url.split('?')[0]}`)));
}

/**
 * A request Node's HTTP parser refused before Fastify saw it (a control byte in a
 * header, a space in the request line, headers too large, a timeout): answered in the
 * one error shape on the raw socket, then the connection is closed, since the rest of
 * its bytes cannot be trusted to frame a next request.
 */
/** The part of the request a schema refused, as it arrived. */
const partOf = (request: FastifyRequest, part: RequestPart): unknown =>
  part === 'querystring' ? request.query : part === 'params' ? request.params : part === 'headers' ? request.headers : request.body;

/** A request's id: random, so ids from several API processes never collide in one log. */
export const newRequestId = () => `req_${randomBytes(8).toString('hex')}`;

/** A caller's own X-Request-Id is kept when it is a plain token, so its logs and ours join up. */
const CALLER_REQUEST_ID = /^[A-Za-z0-9._:-]{8,64}$/;

/** Fastify's genReqId: the caller's X-Request-Id where it is a plain token, else a new one. */
export function requestIdOf(req: { headers: Record<string, string | string[] | undefined> }): string {
  const given = req.headers['x-request-id'];
  return typeof given === 'string' && CALLER_REQUEST_ID.test(given) ? given : newRequestId();
}

export function clientErrorHandler(error: Error & { code?: string }, socket: import('node:net').Socket): void {
  if (error.code === 'ECONNRESET' || socket.destroyed) return;
  const [code, reason, message]: [ErrorCode, string, string] =
    error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
      ? ['request_timeout', 'Request Timeout', 'the request was not received in time']
      : error.code === 'HPE_HEADER_OVERFLOW'
        ? ['headers_too_large', 'Request Header Fields Too Large', 'the request headers are too large']
        : ['invalid_request', 'Bad Request', `malformed HTTP request (${error.code ?? 'unparseable'}): check the request line, and that no header value holds a control character`];
  const status = HTTP_STATUS[code];
  // no request was parsed, so no Host to link from: the reference's path alone
  const requestId = newRequestId();
  const payload = JSON.stringify({ error: { ...body(code, message).error, request_id: requestId, doc_url: `/errors#${code}` } });
  socket.end(
    `HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(payload)}\r\nX-Request-Id: ${requestId}\r\nConnection: close\r\n\r\n${payload}`,
  );
}
