-- COPY FROM STDIN through tokio-postgres copy_in: Bind/Execute/Sync, then
-- CopyData..., CopyDone, Sync (the server ignores the first Sync while in
-- copy mode).

create table c (id int primary key, name text)

-- copy-in
copy c from stdin
1	one
2	two
3	\N

select * from c order by id

-- copy-in-rows 100000
copy c from stdin

select count(*), sum(id), max(name) from c

begin

-- copy-in
copy c (id, name) from stdin with (format csv)
0,"zero, with comma"
-1,minus one

select count(*) from c

commit

-- copy-in
copy c from stdin
1	duplicate

-- copy-in
copy c from stdin
not-a-number	x

select count(*) from c
