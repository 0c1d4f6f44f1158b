-- rowgate-answers
-- Messages PostgreSQL rejects as malformed (a Flush or Sync with a body)
-- or ignores (copy messages outside COPY), between transactions and inside
-- one. rowgate must answer as
-- PostgreSQL does and never hand the pooled connection on out of step:
-- the harness's other client uses the pool between steps.

-- wire
raw H junk
sync

-- wire
raw S junk

-- wire
query begin
raw H junk
sync

-- wire
query rollback

-- wire
query begin
query select 1
raw S junk

-- wire
query rollback

-- wire
raw c junk
sync

-- wire
raw d junk
raw f junk
query select 2
