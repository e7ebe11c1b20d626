import { get, isOpen, type StreamView } from './api';
import { ago, card, dateTime, duration, h, stat, statusBadge, table, time, units, when } from './dom';
import { payeeOf, temporalLink } from './links';
import { paidChart, paidHistory } from './paidChart';
import { paidCounter } from './paidCounter';
import type { Context, Page } from './pages';
import { streamActions } from './streamActions';

/**
 * One stream: the money moving while it runs (a counter that flows between ticks, paid
 * over time as a chart), its controls, and the receipt once it has closed. The counter
 * and the actions are made once and kept across polls: the counter animates, the
 * actions hold what the operator typed.
 */
export function streamPage(ctx: Context, ref: string): Page {
  const counter = paidCounter();
  const history = paidHistory(ref);
  const actions = streamActions(ctx, ref);
  const page: Page = {
    title: `Stream ${ref}`,
    everyMs: 1000,
    async load() {
      const [s, points] = await Promise.all([get<StreamView>(`/v1/streams/${encodeURIComponent(ref)}`), history.read()]);
      const open = isOpen(s);
      // a closed stream's receipt is final: read again only after an action asks to
      page.everyMs = open ? untilNextRead(s) : undefined;
      counter.snap(s);
      return h(
        'div', {},
        card(
          `Stream ${s.ref}`,
          h('p', { class: 'lede' }, party(s.payer, s.fromAccountId), ' → ', party(payeeOf(s), s.toAccountId), ` · ${s.mode} · opened `, when(s.openedAt), ' · ', statusBadge(s.status), ' ',
            temporalLink(ctx.config, 'workflow in Temporal', `workflows/${encodeURIComponent(s.workflowId)}`)),
          figures(s, counter.el),
          s.maxTotal ? h('div', { class: 'bar', title: `${Math.round(Math.min(1, s.totalPaid / s.maxTotal) * 100)}% of the cap` },
            h('div', { class: 'bar-fill', style: `width:${(Math.min(1, s.totalPaid / s.maxTotal) * 100).toFixed(1)}%` })) : null,
          s.members ? table(['Member', 'Party', 'Weight', 'Received'], s.members.map((m) => [m.accountId, m.party, m.weight, units(m.received)]), { numeric: [2, 3] }) : null,
        ),
        actions.update(s),
        card('Paid over time', paidChart(s, points), h('p', { class: 'hint' }, 'Each step is a billed tick, at the total paid once it was billed.')),
        open ? null : receipt(s),
      );
    },
  };
  return page;
}

/**
 * Read again just after the next tick is due (billing it takes a moment), at most a second
 * later and no sooner than 250 ms: the counter waits at the next tick's amount until a read
 * brings that tick, so reading soon after it keeps the wait short.
 */
const untilNextRead = (s: StreamView) => (s.nextTickAt ? Math.min(1000, Math.max(250, Date.parse(s.nextTickAt) - Date.now() + 150)) : 1000);

function figures(s: StreamView, paidNow: Node) {
  const open = isOpen(s);
  const left = s.depletion;
  return h(
    'div', { class: 'stats' },
    h('div', { class: 'stat' },
      h('div', { class: 'stat-label' }, 'Paid so far'),
      h('div', { class: 'stat-value' }, open ? paidNow : units(s.totalPaid)),
      h('div', { class: 'stat-hint' }, h('span', { 'data-test': 'stream-paid' }, units(s.totalPaid)), ' billed', s.maxTotal ? ` · cap ${units(s.maxTotal)}` : ' · open-ended')),
    stat('Ticks billed', s.ticks, 'stream-ticks', `every ${duration(s.tickIntervalMs)}`),
    stat('Rate per tick', units(s.ratePerTick), 'stream-rate', s.rates && s.rates.length > 1 ? `changed ${ago(s.rates.at(-1)!.at)}` : undefined),
    stat('Next tick', s.status === 'PAUSED' ? 'paused' : open ? time(s.nextTickAt) : '—', 'stream-next', s.pausedAt ? `paused since ${time(s.pausedAt)}` : undefined),
    stat('Cap', s.maxTotal === undefined ? 'open-ended' : units(s.maxTotal), 'stream-cap', s.deposited ? `${units(s.deposited)} of it from top-ups` : undefined),
    stat('Accrued, not billed', units(s.accruedUnbilled)),
    left ? stat('Money left', units(left.funds), 'stream-funds', `${units(left.ticksLeft)} ticks${left.at ? `, until ${time(left.at)}` : ''} · ${left.limitedBy}`) : null,
  );
}

/** A party with the account the stream uses (`alice (alice.w)`). */
const party = (name: string, account?: string) => h('span', {}, name, account ? ` (${account})` : null);

function receipt(s: StreamView) {
  return card(
    'Receipt',
    h('dl', { class: 'receipt', 'data-test': 'receipt' },
      ...([
        ['Status', statusBadge(s.status)],
        ['Total paid', units(s.totalPaid)],
        ['Ticks', String(s.ticks)],
        // a closed escrow stream: what its escrow gave back to the payer (the cap less what was paid)
        ...(s.escrowReturned !== undefined ? [['Escrow returned', `${units(s.escrowReturned)} to ${s.fromAccountId ?? s.payer}`]] : []),
        ['Reason', s.reason ?? s.failure ?? '—'],
        ['Closed by', s.closedBy ?? '—'],
        ['Opened', dateTime(s.openedAt)],
        ['Closed', dateTime(s.closedAt)],
      ] as Array<[string, string | Node]>).flatMap(([k, v]) => [h('dt', {}, k), h('dd', { 'data-test': `receipt-${k.toLowerCase().replace(/ /g, '-')}` }, v)]),
    ),
  );
}
