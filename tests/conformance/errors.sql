-- Errors as PostgreSQL reports them: SQLSTATE, message, position, detail,
-- hint, and what the transaction is afterwards.

select 1/0

selec 1

select nosuchcolumn from user_messages

select * from no_such_table

create table t (id int primary key, v text not null)

insert into t values (1, 'a'); insert into t values (1, 'b')

insert into t values (2, null)

select 'abc'::int

select 1; select 1/0; select 2

begin

select 1/0

select 1

-- extended
select 1

rollback

-- extended
-- param int4 0
select 10 / $1

-- extended
select $1::int + 'x'

-- unnamed
-- param int4 0
select 10 / $1

-- unnamed
selec 2

begin

-- extended
-- param int4 1
insert into t values ($1, 'again')

-- extended
-- param int4 1
insert into t values ($1, 'again')

commit

select * from t order by id

do $$ begin raise exception using errcode = 'P0001', message = 'custom', detail = 'some detail', hint = 'a hint'; end $$

select pg_sleep(0.01)::text, repeat('x', 3)
