-- A named statement whose result type changes under it (ALTER TABLE):
-- PostgreSQL refuses to run it (0A000, cached plan must not change result
-- type), so the client never decodes rows with the RowDescription it got
-- at prepare time. The client alternates between two pooled connections.

create table t (id int primary key, v text)

insert into t values (1, 'one')

-- extended
-- param int4 1
select * from t where id = $1

alter table t add column extra int default 7

-- extended
-- param int4 1
select * from t where id = $1

-- extended
-- param int4 1
select * from t where id = $1

alter table t alter column v type int using length(v)

-- extended
-- param int4 1
select * from t where id = $1

-- extended
-- param int4 1
select * from t where id = $1
