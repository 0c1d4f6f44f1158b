-- Several statements in one Query: transaction boundaries inside the
-- string, errors midway, identity in each transaction. (A statement after
-- COMMIT in the same string runs without identity through rowgate, by
-- design, so these strings read identity only before one.)

select auth.user_id(); select 2; select auth.user_id()

begin; select auth.user_id(); commit; select 'after'

create table m (x int); insert into m values (1); begin; insert into m values (2); rollback; select array_agg(x) from m

select 1; begin; select 1/0; select 2

rollback

begin; select auth.user_id(); commit; begin; select 2; commit

insert into m values (3); select 1/0; insert into m values (4)

select array_agg(x order by x) from m

vacuum m

vacuum m; select 1

begin; vacuum m

rollback

select 1; vacuum m

select auth.user_id(); commit; select 'after commit'

commit; begin; select 3; commit
