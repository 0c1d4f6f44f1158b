-- BEGIN ISOLATION LEVEL ..., SET TRANSACTION, START TRANSACTION with modes,
-- and the identity inside each.

begin isolation level serializable

select current_setting('transaction_isolation'), auth.user_id()

commit

begin isolation level repeatable read, read only

select current_setting('transaction_isolation'), current_setting('transaction_read_only'), auth.user_id()

create table nope (x int)

rollback

begin

set transaction isolation level serializable

select current_setting('transaction_isolation'), auth.user_id()

set transaction isolation level read committed

commit

start transaction isolation level read committed read write, deferrable

select current_setting('transaction_isolation'), auth.user_id()

commit

set transaction isolation level serializable

begin; set transaction read only; select current_setting('transaction_read_only'), auth.user_id(); commit

-- extended
begin isolation level serializable

-- extended
select current_setting('transaction_isolation'), auth.user_id()

-- extended
commit

begin isolation level repeatable read

select auth.user_id()

commit and chain

select current_setting('transaction_isolation'), auth.user_id()

rollback and chain

select current_setting('transaction_isolation'), auth.user_id()

commit

select auth.user_id()
