/**
 * The streams ledger, by concern: rows.ts (the stream row, its reads and its receipt),
 * ticks.ts (billing one tick, heartbeats), lifecycle.ts (open, members, close), quotas.ts
 * (a payer's open streams against its tier's quota). This
 * is its public face; the modules of src/ledger import the one they need.
 */
export {
  findStream,
  findStreamWithHistory,
  getStream,
  getStreamWithHistory,
  listStreams,
  receiptOf,
  streamParties,
  toReceipt,
  STREAMS_PAGE_MAX,
  type MemberRow,
  type StreamControl,
  type StreamListQuery,
  type StreamRow,
} from './rows';
export { billTick } from './ticks';
export { recordHeartbeat, HEARTBEAT_HISTORY_MS } from './heartbeats';
export { closeStream, insertMembers, openStream, CLOSE_SETTLE_TICKS_MAX } from './lifecycle';
export { openStreamsOf } from './quotas';
