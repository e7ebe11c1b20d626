-- Crown rewards: a budget paid from the rewards account to sellers in proportion to
-- their crown time over a window, once per window (the primary key); windows never
-- overlap (the exclusion constraint), so no tick of crown time is paid twice.
insert into accounts (id, owner_id, kind, currency) values ('sluice.rewards', 'sluice', 'user', 'UNIT');

create table crown_rewards (
  window_from bigint not null,
  window_to   bigint not null check (window_to > window_from),
  budget      bigint not null check (budget > 0),
  paid        bigint not null check (paid between 0 and budget),
  shares      jsonb not null,
  created_at  timestamptz not null default now(),
  primary key (window_from, window_to),
  constraint crown_rewards_windows_disjoint exclude using gist (int8range(window_from, window_to) with &&)
);
