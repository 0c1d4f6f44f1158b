-- SQL cursors: DECLARE / FETCH / MOVE / CLOSE in a transaction, and what
-- happens to them at its end.

begin

declare c1 cursor for select g, auth.user_id() from generate_series(1, 100) g

fetch 5 from c1

move forward 50 in c1

fetch next from c1

fetch all from c1

close c1

-- extended
declare c2 cursor for select g from generate_series(1, 10) g

-- extended
fetch 3 from c2

commit

fetch 1 from c2

declare c3 cursor for select 1

select name, is_holdable from pg_cursors
