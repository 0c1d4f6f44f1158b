-- BEGIN with an isolation level and the statements of the transaction in
-- one Query string, as psql -c and some ORMs send it.

begin transaction isolation level repeatable read; select current_setting('transaction_isolation'), auth.user_id(); commit

begin isolation level serializable, read only; select auth.user_id(); commit

start transaction isolation level serializable; select current_setting('transaction_isolation'); commit
