-- Empty query strings and statements that are only comments or semicolons.
-- A step whose SQL is the line <empty> sends the empty string.

<empty>

;

;;

/* only a comment */

select 1;;select 2

begin

<empty>

;

commit

-- unnamed
<empty>

-- extended
<empty>

-- unnamed
/* nothing */
