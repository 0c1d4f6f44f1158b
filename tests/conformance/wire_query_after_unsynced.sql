-- A simple Query after extended-protocol messages with no Sync between
-- (what rowgate itself sends: its identity statement, then the client's
-- Query). PostgreSQL 13-17 commit the implicit transaction at the end of
-- the Query; PostgreSQL 18 keeps it open until a Sync.

-- wire
parse - select 1
bind - -
execute -
query select 2

-- wire
query select 3
