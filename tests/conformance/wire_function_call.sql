-- FunctionCall (the fast path JDBC's large objects use): results, errors,
-- inside transactions and failed ones. 177 is int4pl, 154 int4div, 1258
-- textcat, 715 lo_create.

-- wire
fcall 177 1 2

-- wire
fcall 1258 abc NULL

-- wire
fcall 154 1 0

-- wire
fcall 999999 1

-- wire
query begin
fcall 715 424242
query select auth.user_id(), count(*) > 0 from pg_largeobject_metadata
query select 1/0
fcall 177 1 2
query rollback

select auth.user_id(), count(*) from pg_largeobject_metadata
