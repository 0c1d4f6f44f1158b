-- Batches written back to back without waiting for replies, as asyncpg's
-- executemany, psycopg's pipeline mode, JDBC batches and the Neon
-- serverless driver send them: autocommit queries, a transaction spread
-- over several batches, an error in the middle, and statements after it.

create table p (id int primary key, owner text default auth.user_id())

-- wire
query insert into p (id) values (1)
query insert into p (id) values (2)
parse - insert into p (id) values ($1)
bind - - 3
execute -
sync
query begin
query insert into p (id) values (4)
parse - select count(*), min(owner) = auth.user_id() from p
bind - -
execute -
sync
query commit
query select count(*) from p

-- wire
query insert into p (id) values (1)
query select count(*) from p
parse - select 1/0
bind - -
execute -
sync
parse - select count(*) from p
bind - -
execute -
sync
query begin
query select 1/0
query select 1
query rollback
query select auth.user_id() is not null
