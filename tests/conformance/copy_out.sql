-- COPY TO STDOUT through tokio-postgres copy_out (extended protocol).

create table c (id int, name text)

insert into c select g, repeat('v', g % 50) from generate_series(1, 100000) g

-- copy-out
copy c to stdout

-- copy-out
copy (select id, name from c where id <= 3 order by id) to stdout with (format csv, header)

-- copy-out
copy c to stdout with (format binary)

begin

-- copy-out
copy (select auth.user_id()) to stdout

commit

-- copy-out
copy nosuch to stdout
