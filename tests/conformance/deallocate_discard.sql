-- DEALLOCATE ALL and DISCARD ALL sent by the client: afterwards the
-- client's own named statements are gone, exactly as on PostgreSQL, and
-- new ones work.

-- extended
-- param int4 1
select $1 + 1, auth.user_id()

deallocate all

-- extended
-- param int4 1
select $1 + 1, auth.user_id()

-- extended
-- param int4 1
select $1 + 2, auth.user_id()

discard all

-- extended
-- param int4 1
select $1 + 2, auth.user_id()

-- extended
-- param int4 1
select $1 + 3, auth.user_id()

begin

discard all

rollback

discard plans

discard sequences

discard temp

select auth.user_id()
