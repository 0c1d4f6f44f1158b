-- Named statements prepared once and reused across many transactions, with
-- a second client using the pool in between, so the statement must exist
-- on whichever upstream connection the client gets.

create table counter (id int primary key, n int not null default 0, owner text default auth.user_id())

insert into counter (id) select generate_series(1, 5)

-- extended
-- repeat 30
-- param int4 3
update counter set n = n + 1 where id = $1 returning id, n, owner, auth.user_id()

-- extended
-- repeat 10
select id, n from counter order by id

begin

-- extended
-- repeat 5
-- param int4 1
update counter set n = n + 10 where id = $1 returning n

commit

-- extended
-- repeat 20
-- param int4 2
-- param text x
select $1::int + 1, $2 || auth.user_id()

begin; select 1; commit

-- extended
-- param int4 2
-- param text x
select $1::int + 1, $2 || auth.user_id()

-- extended
-- repeat 3
-- param int4 2
select * from counter where id = $1
