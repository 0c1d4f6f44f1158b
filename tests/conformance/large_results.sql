-- Large results: 100 000 rows through both protocols, and wide rows.

select g, 'row ' || g, g * 2.5 from generate_series(1, 100000) g

-- extended
-- param int4 100000
select g, 'row ' || g from generate_series(1, $1) g

-- unnamed
select g::text, md5(g::text) from generate_series(1, 100000) g

begin; select g from generate_series(1, 100000) g; select count(*) from generate_series(1, 100000); commit

select g, repeat('w', 1000) from generate_series(1, 2000) g
