-- Large objects through SQL functions (drivers' LO APIs use the same
-- functions, or FunctionCall: see tests/drivers.rs for JDBC).

begin

select lo_create(0) > 0

create temp table lo_ids on commit drop as select lo_from_bytea(0, 'hello large object') as id

select lo_get(id) from lo_ids

select lo_put(id, 6, 'LARGE') from lo_ids

select convert_from(lo_get(id), 'UTF8') from lo_ids

select lo_unlink(id) from lo_ids

commit

select lo_get(123456789)
