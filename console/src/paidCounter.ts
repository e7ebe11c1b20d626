import type { StreamView } from './api';
import { h, units } from './dom';

/**
 * "Paid so far" that flows between ticks instead of jumping once a tick. Each poll snaps
 * it to the API's figures: paid (billed) plus what has accrued since the last tick; between
 * polls it adds ratePerTick per tickIntervalMs on the page's own clock (performance.now,
 * so a wrong wall clock on either side does not matter), and never shows more than the
 * next tick will pay: the rate, or what is left under the cap.
 */
export function paidCounter() {
  const el = h('span', { 'data-test': 'stream-paid-live' }, '—');
  let from = { paid: 0, accrued: 0, at: 0, rate: 0, intervalMs: 1, nextTick: 0, running: false };
  let frame = 0;

  const value = () => {
    if (!from.running) return from.paid;
    const accrued = from.accrued + (from.rate * (performance.now() - from.at)) / from.intervalMs;
    return from.paid + Math.min(from.nextTick, Math.floor(accrued));
  };
  const draw = () => {
    el.textContent = units(value());
  };
  // stops by itself once the page has drawn another counter (or left the stream)
  const animate = () => {
    frame = 0;
    if (!el.isConnected || !from.running) return;
    draw();
    frame = requestAnimationFrame(animate);
  };

  function snap(s: StreamView) {
    const capLeft = s.maxTotal === undefined ? Infinity : Math.max(0, s.maxTotal - s.totalPaid);
    from = {
      paid: s.totalPaid,
      accrued: s.accruedUnbilled,
      at: performance.now(),
      rate: s.ratePerTick,
      intervalMs: s.tickIntervalMs,
      nextTick: Math.min(s.ratePerTick, capLeft),
      running: s.status === 'STREAMING',
    };
    draw();
    if (from.running && !frame) frame = requestAnimationFrame(animate);
  }

  return { el, snap };
}
