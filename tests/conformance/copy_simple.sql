-- COPY through the simple protocol (what psql, psycopg and JDBC's
-- CopyManager send): TO STDOUT, and FROM STDIN refused for lack of data is
-- not expressible here, so the simple side only copies out.

create table c (id int, name text, note text)

insert into c select g, 'name ' || g, case when g % 3 = 0 then null else 'n' end from generate_series(1, 1000) g

copy c to stdout

copy (select id, name from c where id < 5 order by id) to stdout with (format csv, header)

copy c to stdout with (format binary)

begin; copy (select 1) to stdout; select 2; commit

copy nosuch to stdout
