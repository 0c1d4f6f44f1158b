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

-- After DISCARD ALL the direct run's identity (a session setting) is gone,
-- while rowgate sets it in every transaction: compared without it.
discard all

-- extended
-- param int4 1
select $1 + 2

-- extended
-- param int4 1
select $1 + 3

begin

discard all

rollback

discard plans

discard sequences

discard temp

select 'after discard'
