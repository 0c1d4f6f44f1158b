-- COPY FROM STDIN through the extended protocol, as tokio-postgres (and
-- any client sending Bind/Execute/Sync before the data) does: the server
-- ignores the Sync while in copy mode and answers after the next one.

create table c (id int, v text)

-- wire
parse - copy c from stdin
bind - -
execute -
sync

-- wire
copydata 1	one
copydata 2	two
copydone
sync

select * from c order by id

-- wire
parse - copy c from stdin
bind - -
execute -
sync

-- wire
copyfail stop
sync

select count(*) from c
