-- PREPARE / EXECUTE / DEALLOCATE by SQL, across transactions.

prepare q1 (int) as select $1 * 10, auth.user_id()

execute q1 (4)

begin; execute q1 (5); commit

select name, statement, parameter_types::text from pg_prepared_statements where name like 'q%' order by name

deallocate q1

execute q1 (6)

prepare q2 as select 2; execute q2; deallocate q2

prepare q3 as select 3

prepare q3 as select 3

deallocate all

execute q3
