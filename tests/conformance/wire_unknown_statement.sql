-- Errors for statements that do not exist name the client's statement, as
-- PostgreSQL does.

-- wire
parse s4 select 4
close S s4
sync
bind - s4
execute -
sync

-- wire
describe S nosuch
sync
bind - nosuch
execute -
sync
