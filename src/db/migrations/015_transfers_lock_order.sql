-- Transfers take their locks in the one order (src/ledger/accounts.ts): the accounts
-- of the statement ascending by id, then the holds it captures. The trigger of 011
-- updated the holds first and the accounts in the order of an aggregate; Sluice's
-- writers lock their accounts before they insert, so they never met it, but a writer
-- that did not (a migration, an operator's script) could deadlock with one that did.
create or replace function apply_transfers() returns trigger language plpgsql as $$
declare
  holds_named integer;
  holds_captured integer;
  bad record;
begin
  -- the one lock order (src/ledger/accounts.ts): the statement's accounts first,
  -- ascending by id, then its holds. Sluice's own writers locked them already (this
  -- re-lock is then free); any other writer cannot take a hold or an account out of order.
  perform 1 from accounts
    where id in (select debit_account_id from new_transfers union select credit_account_id from new_transfers)
    order by id for no key update;

  select count(*) into holds_named from (select distinct hold_id, debit_account_id from new_transfers where hold_id is not null) h;
  if holds_named > 0 then
    with c as (select hold_id, debit_account_id, sum(amount) as amount, count(*) as n
                 from new_transfers where hold_id is not null group by hold_id, debit_account_id),
         u as (update holds h
                  set captured = h.captured + c.amount, capture_count = h.capture_count + c.n,
                      status = case when h.captured + c.amount + h.released = h.amount then 'captured' else h.status end,
                      resolved_at = case when h.captured + c.amount + h.released = h.amount then now() else h.resolved_at end
                 from c
                where h.id = c.hold_id and h.account_id = c.debit_account_id and h.status = 'open'
                returning h.id)
    select count(*) into holds_captured from u;
    if holds_captured <> holds_named then
      select t.hold_id, t.debit_account_id into bad from new_transfers t
       where t.hold_id is not null
         and not exists (select 1 from holds h where h.id = t.hold_id and h.account_id = t.debit_account_id and h.status in ('open', 'captured'))
       limit 1;
      raise exception 'hold % is not open on account %', coalesce(bad.hold_id::text, '(several captures)'), coalesce(bad.debit_account_id, '')
        using errcode = 'check_violation';
    end if;
  end if;

  select t.kind, da.currency as debit_currency, ca.currency as credit_currency, da.kind as debit_kind, ca.kind as credit_kind into bad
    from new_transfers t join accounts da on da.id = t.debit_account_id join accounts ca on ca.id = t.credit_account_id
   where da.currency <> ca.currency or ((da.kind = 'world' or ca.kind = 'world') and t.kind not in ('deposit', 'withdrawal'))
   limit 1;
  if found then
    if bad.debit_currency <> bad.credit_currency then
      raise exception 'transfer between % and % accounts', bad.debit_currency, bad.credit_currency using errcode = 'check_violation';
    end if;
    raise exception 'a % transfer cannot touch the world account', bad.kind using errcode = 'check_violation';
  end if;

  update accounts a set balance = a.balance + d.delta
    from (select account_id, sum(delta) as delta
            from (select debit_account_id as account_id, -amount as delta from new_transfers
                  union all
                  select credit_account_id, amount from new_transfers) m
           group by account_id) d
   where a.id = d.account_id and d.delta <> 0;
  return null;
end $$;

