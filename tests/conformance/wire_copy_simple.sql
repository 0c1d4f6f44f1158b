-- COPY FROM STDIN through the simple protocol (psql, psycopg, asyncpg,
-- JDBC's CopyManager): the data follows the Query, success and failure.

create table c (id int primary key, v text)

-- wire
query copy c from stdin
copydata 1	one
copydata 2	two
copydone

-- wire
query copy c from stdin
copydata 3	three
copydata x	bad
copydone

-- wire
query copy c from stdin
copydata 4	four
copyfail client gave up

-- wire
query begin
query copy c from stdin
copydata 5	five
copydone
query select auth.user_id(), count(*) from c
query commit

-- wire
query copy c from stdin with (format csv)
copydata 6,"six, with comma"
copydone
query select * from c order by id
