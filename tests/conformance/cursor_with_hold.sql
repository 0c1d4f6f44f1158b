-- A WITH HOLD cursor outlives its transaction and belongs to the session:
-- later transactions of the same client can fetch from it.

declare c4 cursor with hold for select g from generate_series(1, 5) g

fetch 2 from c4

begin; fetch 2 from c4; commit

fetch 2 from c4

close c4

select name, is_holdable from pg_cursors
