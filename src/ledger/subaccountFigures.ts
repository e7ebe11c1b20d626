/**
 * Each subaccount's figures as the dashboard and the debt ledger both read them, in one
 * place: its balance and held (its account's), its open streams either way, what it has
 * paid (as a stream's payer) and received (as a payee). `where` selects the subaccounts,
 * a condition on `s` (its values bound by the caller's query).
 */
export const subaccountFigures = (where: string) => `
  select s.id, s.entity_id, s.seq, s.status, s.account_id, s.hold_id,
         coalesce(a.balance, 0) as balance, coalesce(a.held, 0) as held,
         coalesce(o.open, 0) + coalesce(i.open, 0) as open_streams, coalesce(o.paid, 0) as paid, coalesce(i.paid, 0) as received
    from subaccounts s
    left join accounts a on a.id = s.account_id
    left join lateral (select count(*) filter (where x.status = 'open') as open, sum(x.paid) as paid
                         from streams x where x.payer_account_id = s.account_id) o on s.account_id is not null
    left join lateral (select count(*) filter (where x.status = 'open') as open, sum(x.paid) as paid
                         from streams x where x.payee_account_id = s.account_id) i on s.account_id is not null
   where ${where}`;
