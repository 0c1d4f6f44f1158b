-- NOTICEs and WARNINGs arrive in order with the rows around them.

do $$ begin raise notice 'hello %', 42; end $$

do $$ begin raise warning 'careful' using detail = 'd', hint = 'h'; end $$

create table if not exists n1 (x int); create table if not exists n1 (x int)

drop table if exists does_not_exist

begin; do $$ begin raise notice 'inside'; end $$; select 1; commit

begin

begin

commit

commit

rollback

create function noisy(i int) returns int language plpgsql as $$ begin raise notice 'row %', i; return i; end $$

select noisy(g) from generate_series(1, 5) g

-- extended
-- param int4 3
select noisy($1)
