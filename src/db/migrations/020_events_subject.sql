-- GET /v1/events?subject= (one stream's, one job's, one account's events): the
-- subject's rows in tail order are one range of this index, however many other
-- subjects' events a tail from 0 would otherwise walk past.
create index events_subject_tail_idx on events (subject, xid, id);
