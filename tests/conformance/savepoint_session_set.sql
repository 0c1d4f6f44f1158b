-- A session SET inside a transaction lasts after COMMIT even when an
-- error in between was rolled back to a savepoint; one made after a
-- savepoint is undone by rolling back to it; a rolled-back transaction
-- takes its SETs and RESETs with it. (ROLLBACK TO completes with the tag
-- ROLLBACK, like a real rollback.)

begin

set application_name = 'x'

savepoint a

select 1/0

rollback to savepoint a

commit

show application_name

begin

set application_name = 'y'

savepoint b

rollback to b

commit

show application_name

begin

savepoint c

set application_name = 'z'

rollback to c

commit

show application_name

set work_mem = '7MB'

begin

reset work_mem

rollback

show work_mem

begin

set myapp.custom = 'kept'

savepoint d

set myapp.custom = 'undone'

rollback to d

commit

show myapp.custom

begin; set application_name = 'gone'; select 1/0; commit

show application_name
