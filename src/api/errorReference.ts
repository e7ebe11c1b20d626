import type { ErrorCode } from '../domain/errors';

/**
 * The error reference: what each error code means and what to do about it, in one
 * place. Every error answer links its code's entry (`doc_url`, GET /errors#<code>);
 * the page is served by the API itself, so the link works wherever the API runs.
 */
export type AnsweredCode = ErrorCode | 'unavailable' | 'internal';

export const ERROR_REFERENCE: Record<AnsweredCode, string> = {
  invalid_request: 'The request does not fit its schema or names something it cannot (a cursor that is no row, an account of the wrong kind). `param` names the field; fix it and send again.',
  unauthorized: 'No key, or a key Sluice does not know. Send `Authorization: Bearer <key>`: the admin key, or the key `POST /v1/parties` returned.',
  forbidden: "The key is valid but may not do this: another party's resource, or an admin-only route.",
  not_found: 'Nothing by that id or ref (or route).',
  idempotency_conflict: 'This Idempotency-Key was used before with another request. Use a new key for a new request; resend the same request to get its first answer.',
  payment_conflict: 'A payment with this ref exists with other terms.',
  ref_conflict: 'A stream with this ref exists with other terms.',
  job_conflict: 'A job with this id exists with other terms.',
  creation_failed: 'The subaccount could not be created; its saga rolled back whatever it had taken. `details` says which step failed.',
  already_exists: 'That id is taken.',
  hold_closed: 'The hold was captured or released already.',
  hold_expired: 'The hold expired; its money is available again.',
  insufficient_funds: 'The account has not enough available (balance less held) for this amount.',
  amount_exceeds_hold: 'The capture is more than what remains on the hold.',
  currency_mismatch: 'The two accounts hold different currencies.',
  refund_exceeds_payment: 'The refunds would add up to more than the payment.',
  rate_limited: 'Too many requests from this caller; wait the seconds in `Retry-After` and send the same request again.',
  payload_too_large: 'The body is larger than the API accepts (`details.limitBytes`).',
  headers_too_large: 'The request headers are larger than the server accepts.',
  request_timeout: 'The request was not received in time; send it again.',
  limit_exceeded: "A limit of the entity or party is reached (its subaccount cap, its creations per hour); `details` gives the limit and when a slot frees.",
  subaccount_not_live: 'The subaccount is not active (pending, failed or eliminated).',
  holds_open: 'The account still has open holds.',
  invalid_state: "The action does not fit the resource's state: pausing a paused stream, topping up a closed one.",
  unavailable: 'PostgreSQL or Temporal is unavailable for a moment (a 503, with `Retry-After`). Send the same request again with the same idempotency key: it takes effect once.',
  internal: 'A bug in Sluice (a 500). The request may be sent again with the same idempotency key; the `request_id` finds it in the logs.',
};

/** Where a code is explained, for the answer to `request` (same host and scheme the caller used). */
export const docUrlFor = (request: { protocol: string; host: string }, code: string) => `${request.protocol}://${request.host}/errors#${code}`;

const escape = (s: string) => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);

/** The reference as one small HTML page, an anchor per code. */
export function errorReferenceHtml(status: (code: AnsweredCode) => number): string {
  const rows = (Object.entries(ERROR_REFERENCE) as [AnsweredCode, string][])
    .map(([code, text]) => `<tr id="${code}"><td><a href="#${code}"><code>${code}</code></a></td><td>${status(code)}</td><td>${escape(text).replace(/`([^`]+)`/g, '<code>$1</code>')}</td></tr>`)
    .join('\n');
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>Sluice errors</title>
<style>body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem}td{padding:.35rem .6rem;vertical-align:top;border-top:1px solid #ddd}tr:target{background:#fff6d5}</style></head>
<body><h1>Sluice errors</h1><p>Every error answers <code>{"error": {"code", "message", "details", "param", "request_id", "doc_url"}}</code>, and the <code>X-Request-Id</code> header carries the same <code>request_id</code>.</p>
<table><thead><tr><th>code</th><th>HTTP</th><th>meaning and what to do</th></tr></thead><tbody>
${rows}
</tbody></table></body></html>`;
}
