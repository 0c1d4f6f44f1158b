-- DDL and DML round trips, in explicit transactions and in autocommit,
-- through both protocols, with every command tag compared.

create table items (id int primary key, name text not null, qty int default 0, owner text default auth.user_id())

begin;
insert into items (id, name) values (1, 'one'), (2, 'two');
update items set qty = qty + 5 where id = 1;
select id, name, qty, owner from items order by id;
commit;

begin

-- extended
-- param int4 3
-- param text three
insert into items (id, name) values ($1, $2) returning id, name, owner

-- extended
-- param int4 3
update items set qty = 7 where id = $1

select * from items order by id

rollback

select id, name, qty, owner, auth.user_id() from items order by id

start transaction read write;
alter table items add column note text;
create index items_name on items (name);
delete from items where id = 2;
end;

select column_name, data_type from information_schema.columns where table_name = 'items' order by ordinal_position

begin;
create table scratch (x int);
insert into scratch select generate_series(1, 10);
select count(*), sum(x) from scratch;
rollback;

select count(*) from pg_class where relname = 'scratch'

truncate items; drop table items

select auth.user_id(), current_setting('app.user_id', true)

-- RLS on the migrated example table: user_a's rows only.
insert into user_messages (message) values ('mine 1'), ('mine 2') returning user_id, message

-- extended
select user_id, message from user_messages order by id

-- extended
-- param text user_b
insert into user_messages (user_id, message) values ($1, 'not mine')
