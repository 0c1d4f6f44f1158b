-- The unnamed statement: Parse/Bind/Describe/Execute/Sync in one go, in
-- and out of transactions, with errors.

-- unnamed
-- param int4 1
-- param text one
select $1 as a, $2 as b, auth.user_id()

-- unnamed
-- param - 42
select $1::int * 2

-- unnamed
-- param int8 NULL
select $1 is null

begin

-- unnamed
create table u (id int)

-- unnamed
-- param int4 5
insert into u values ($1)

-- unnamed
select * from u

-- unnamed
select * from nosuch

-- unnamed
select 1

rollback

-- unnamed
-- repeat 10
-- param int4 7
select $1 + 1, auth.user_id()

-- unnamed
begin

-- unnamed
select txid_current() > 0, auth.user_id()

-- unnamed
commit
