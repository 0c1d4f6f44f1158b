-- Statement names as PostgreSQL keeps them: a second Parse of a name in
-- use fails (42P05), and DEALLOCATE by SQL removes a statement prepared
-- by protocol (what psycopg with libpq < 17 and other drivers send).

-- wire
parse dup select 1
sync

-- wire
parse dup select 2
bind - dup
execute -
sync

-- wire
query deallocate dup

-- wire
bind - dup
execute -
sync

-- wire
parse dup select 3
bind - dup
execute -
sync

-- (pg_prepared_statements lists rowgate's upstream names, by design: not compared)
select 1
