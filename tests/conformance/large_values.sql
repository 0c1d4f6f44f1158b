-- A 20 MB text value in both directions: as a result and as a parameter.

create table big (id int, v text)

select length(repeat('x', 20 * 1024 * 1024)), md5(repeat('x', 20 * 1024 * 1024))

select repeat('ab', 10 * 1024 * 1024)

-- extended
-- param int4 1
-- param text @repeat 20971520 y
insert into big values ($1, $2)

-- unnamed
-- param int4 2
-- param text @repeat 20971520 z
insert into big values ($1, $2) returning id, length(v)

select id, length(v), md5(v) from big order by id

-- extended
select v from big order by id

begin; update big set v = v || v where id = 1; select id, length(v) from big order by id; commit
