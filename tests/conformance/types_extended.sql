-- Typed parameters in binary and text format, and binary results, through
-- the extended protocol.

-- extended
-- param bool true
-- param int2 -7
-- param int4 2147483647
-- param int8 -9223372036854775808
-- param float8 3.25
-- param text héllo wörld
select $1, $2, $3, $4, $5, $6, pg_typeof($6)::text

-- extended
-- param numeric 12345.678900
-- param json {"a": [1, 2]}
-- param jsonb {"b": null}
-- param date 2024-02-29
-- param timestamptz 2024-01-01 12:00:00+00
-- param interval 1 day 02:00:00
-- param uuid 0e2a5e9e-4a3c-4b1e-9f3e-2b7c1d9e8f01
select $1, $2, $3, $4, $5::text, $6, $7

-- extended
-- param int4[] {1,2,NULL,4}
-- param text[] {a,"b c",NULL}
-- param bytea \x00ff10
select $1, $2, $3, array_length($1, 1)

-- extended
-- param - 5
-- param - abc
select $1::int + 1, upper($2)

-- extended
-- param text NULL
-- param int4 NULL
select $1, $2, coalesce($1, 'was null')

-- unnamed
-- param numeric NaN
-- param float8 -0.5
select $1::numeric, $2 * 2

-- extended
select 1::int2, 2::int4, 3::int8, 4.5::float4, 5.5::float8, 6.25::numeric, 'x'::char(3), 'y'::varchar(5), 'z'::name, true, '\x01'::bytea, '{}'::jsonb, 'a=>b'::text, '(1,2)'::point, now() > '2000-01-01', null::text

-- extended
-- param int4 abc
select $1
