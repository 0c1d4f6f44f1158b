-- Extended-protocol message sequences written by hand, as drivers send
-- them: named and unnamed statements, portals with row limits, Flush
-- pipelines, errors mid-pipeline, Close and reuse of names, Describe.

create table w (id int primary key, v text)

-- wire
parse s1 insert into w values ($1, $2)
bind - s1 1 one
execute -
bind - s1 2 two
execute -
sync

-- wire
parse s2 select id, v, auth.user_id() from w order by id
describe S s2
bind p1 s2
execute p1 1
execute p1 1
execute p1 0
sync

-- wire
bind - s2
describe P -
execute -
sync

-- wire
parse - select $1::int * 2
bind - - 21
describe P -
execute -
flush

-- wire
sync

-- wire
parse s3 select 1/0
bind - s3
execute -
sync
bind - s2
execute -
sync

-- wire
bind - s1 1 duplicate
execute -
bind - s1 3 three
execute -
sync
bind - s1 3 three
execute -
sync

-- wire
query begin
parse s4 select auth.user_id(), count(*) from w
bind - s4
execute -
sync
bind - s4
execute -
sync
query commit

-- wire
close S s4
sync

-- wire
parse s4 select 'reused name'
bind - s4
execute -
close S s4
sync

-- wire
execute noportal
sync

-- wire
sync

-- wire
close S never_prepared
close P never_bound
sync

-- wire
parse - begin
bind - -
execute -
parse - select auth.user_id()
bind - -
execute -
parse - commit
bind - -
execute -
sync

-- wire
parse s5 select $1::text || auth.user_id()
flush

-- wire
bind - s5 hello
execute -
flush

-- wire
sync

-- wire
query select count(*) from w
parse s6 select v from w where id = $1
bind - s6 2
execute -
sync
