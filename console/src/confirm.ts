import { h } from './dom';

export interface Confirmation {
  title: string;
  /** What will happen, in a sentence or two: the operator reads this before money moves. */
  body: string;
  confirm: string;
  /** The way out, worded as what stays as it is ("Keep it streaming"). */
  dismiss: string;
  danger?: boolean;
}

/**
 * Asks before a write: a modal <dialog> the operator must accept. Resolves true only on
 * the confirm button; Escape, the dismiss button or a click outside all resolve false.
 * The dialog hangs off <body>, outside the page the poll redraws every second, so a
 * redraw cannot take it away while it is open.
 */
export function confirmAction(c: Confirmation): Promise<boolean> {
  return new Promise((resolve) => {
    const dialog = h('dialog', { class: 'confirm', 'data-test': 'confirm' }) as HTMLDialogElement;
    const close = (ok: boolean) => {
      dialog.close();
      dialog.remove();
      resolve(ok);
    };
    // the content fills the dialog, so a click that lands on the dialog itself is on the backdrop
    dialog.append(h('div', { class: 'confirm-inner' },
      h('h2', {}, c.title),
      h('p', {}, c.body),
      h('div', { class: 'confirm-buttons' },
        h('button', { type: 'button', class: 'secondary', 'data-test': 'confirm-dismiss', onclick: () => close(false) }, c.dismiss),
        h('button', { type: 'button', class: c.danger ? 'danger' : undefined, 'data-test': 'confirm-accept', onclick: () => close(true) }, c.confirm)),
    ));
    dialog.addEventListener('cancel', (e) => {
      e.preventDefault();
      close(false);
    });
    dialog.addEventListener('click', (e) => e.target === dialog && close(false));
    document.body.append(dialog);
    dialog.showModal();
    (dialog.querySelector('[data-test=confirm-dismiss]') as HTMLElement).focus();
  });
}
