-- Savepoints: release, rollback to, errors inside, identity throughout.

create table s (id int primary key)

begin

insert into s values (1)

savepoint a

insert into s values (2)

rollback to savepoint a

savepoint b

insert into s values (1)

select 1

rollback to b

select auth.user_id(), array_agg(id order by id) from s

savepoint c; insert into s values (3); release savepoint c

release a

commit

select array_agg(id order by id) from s

begin; savepoint x; select 1/0; rollback to x; select auth.user_id(); commit

rollback to savepoint nowhere

savepoint outside

begin

-- extended
savepoint e1

-- extended
-- param int4 9
insert into s values ($1)

-- extended
rollback to savepoint e1

commit

select array_agg(id order by id) from s
