-- ParameterStatus for client_encoding carries PostgreSQL's canonical name
-- (UTF8, LATIN1, EUC_JP), whatever spelling the client's SET used: drivers
-- pick their decoder by that name. (Each SET changes the value: PostgreSQL
-- 13 also repeats unchanged values, which later versions and rowgate do not.)

set client_encoding = 'latin1'

show client_encoding

set client_encoding to 'euc-jp'

show client_encoding

set client_encoding = 'UTF-8'

show client_encoding
