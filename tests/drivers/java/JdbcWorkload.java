// JDBC (pgjdbc, Debian's libpostgresql-jdbc-java) workload for tests/drivers.rs.
//
// usage: java -cp /usr/share/java/postgresql.jar JdbcWorkload.java \
//            HOST PORT DBNAME ITERATIONS MODE CLIENT...
//   MODE     direct (set app.user_id ourselves) or proxy (rowgate does)
//   CLIENT   user_id:login:password, one per concurrent client (a thread each)
//
// PreparedStatements are reused past prepareThreshold (5), so pgjdbc
// switches to named server-side statements; transactions use
// setAutoCommit(false); fetch sizes read through portals with row limits;
// batches pipeline many Bind/Execute before one Sync; large objects go
// through FunctionCall (Fastpath); COPY goes through CopyManager. Prints
// deterministic lines "c<k> <seq> ..." and "ERROR ..." on anything
// unexpected; exits non-zero then.

import java.io.ByteArrayOutputStream;
import java.io.StringReader;
import java.math.BigDecimal;
import java.sql.*;
import java.util.*;
import org.postgresql.PGConnection;
import org.postgresql.copy.CopyManager;
import org.postgresql.largeobject.LargeObject;
import org.postgresql.largeobject.LargeObjectManager;

public class JdbcWorkload {
    static final List<String> out = Collections.synchronizedList(new ArrayList<>());
    static final List<String> failed = Collections.synchronizedList(new ArrayList<>());

    public static void main(String[] args) throws Exception {
        String host = args[0], port = args[1], db = args[2], mode = args[4];
        int iterations = Integer.parseInt(args[3]);
        List<Thread> threads = new ArrayList<>();
        for (int k = 5; k < args.length; k++) {
            String[] spec = args[k].split(":", 3);
            int client = k - 5;
            Thread t = new Thread(() -> {
                try {
                    new Client(client, spec[0]).run(host, port, db, spec[1], spec[2], mode, iterations);
                } catch (Throwable e) {
                    java.io.StringWriter sw = new java.io.StringWriter();
                    e.printStackTrace(new java.io.PrintWriter(sw));
                    failed.add("client " + client + " failed: " + sw);
                }
            });
            threads.add(t);
            t.start();
        }
        for (Thread t : threads) t.join();
        List<String> lines = new ArrayList<>(out);
        Collections.sort(lines);
        for (String l : lines) System.out.println(l);
        for (String f : failed) System.out.println("ERROR " + f);
        System.exit(failed.isEmpty() ? 0 : 1);
    }

    static class Client {
        final int k;
        final String userId;
        int seq = 0;

        Client(int k, String userId) {
            this.k = k;
            this.userId = userId;
        }

        void emit(Object... parts) {
            StringBuilder sb = new StringBuilder(String.format("c%d %05d", k, ++seq));
            for (Object p : parts) {
                sb.append(' ');
                sb.append(p instanceof byte[] ? HexFormat.of().formatHex((byte[]) p) : String.valueOf(p));
            }
            out.add(sb.toString());
        }

        void check(String who, String what) {
            if (!userId.equals(who)) failed.add("LEAK client " + k + " (" + userId + ") saw " + who + " in " + what);
        }

        void run(String host, String port, String db, String login, String password, String mode, int iterations)
                throws Exception {
            Properties props = new Properties();
            props.setProperty("user", login);
            props.setProperty("password", password);
            props.setProperty("ApplicationName", "jdbc-" + k);
            String url = "jdbc:postgresql://" + host + ":" + port + "/" + db;
            try (Connection conn = DriverManager.getConnection(url, props)) {
                if (mode.equals("direct")) {
                    try (PreparedStatement ps = conn.prepareStatement("select set_config('app.user_id', ?, false)")) {
                        ps.setString(1, userId);
                        ps.executeQuery().close();
                    }
                }
                work(conn, iterations);
            }
        }

        void work(Connection conn, int iterations) throws Exception {
            String copyTable = "copy_c" + k;
            PreparedStatement who = conn.prepareStatement("select auth.user_id()");
            PreparedStatement insert = conn.prepareStatement(
                    "insert into items (n, label, data, price, meta, created) values (?, ?, ?, ?, ?::jsonb, ?) "
                            + "returning owner, n, label, data, price, meta::text, created");
            PreparedStatement count = conn.prepareStatement("select count(*), sum(n), auth.user_id() from items");
            for (int i = 0; i < iterations; i++) {
                // Autocommit: reused past prepareThreshold, so named statements.
                conn.setAutoCommit(true);
                for (int j = 0; j < 7; j++) {
                    try (ResultSet rs = who.executeQuery()) {
                        rs.next();
                        check(rs.getString(1), "autocommit select " + j);
                    }
                }
                emit("who", userId);

                conn.setAutoCommit(false);
                insert.setInt(1, i);
                insert.setString(2, userId + "-" + i);
                insert.setBytes(3, new byte[] {(byte) i, 0, (byte) 255});
                insert.setBigDecimal(4, new BigDecimal("12.50").add(BigDecimal.valueOf(i)));
                insert.setString(5, "{\"i\": " + i + ", \"who\": \"" + userId + "\"}");
                insert.setDate(6, java.sql.Date.valueOf(String.format("2024-01-%02d", i % 28 + 1)));
                try (ResultSet rs = insert.executeQuery()) {
                    rs.next();
                    check(rs.getString(1), "insert returning");
                    emit("inserted", rs.getString(1), rs.getInt(2), rs.getString(3), rs.getBytes(4),
                            rs.getBigDecimal(5), rs.getString(6), rs.getDate(7));
                }
                conn.commit();

                // Savepoint that rolls back, then a count in the same transaction.
                try (PreparedStatement up = conn.prepareStatement("update items set n = n + 1000 where n = ?")) {
                    up.setInt(1, i);
                    emit("updated", up.executeUpdate());
                }
                Savepoint sp = conn.setSavepoint();
                try (Statement st = conn.createStatement()) {
                    st.executeUpdate("insert into items (n, label) values (-1, null)");
                } catch (SQLException e) {
                    emit("savepoint error", e.getSQLState());
                    conn.rollback(sp);
                }
                for (int j = 0; j < 6; j++) {
                    try (ResultSet rs = count.executeQuery()) {
                        rs.next();
                        check(rs.getString(3), "transaction");
                        if (j == 0) emit("txn", rs.getLong(1), rs.getLong(2));
                    }
                }
                conn.commit();

                // An error aborts the transaction; rollback brings it back.
                try (PreparedStatement div = conn.prepareStatement("select 1 / ?")) {
                    div.setInt(1, 0);
                    div.executeQuery();
                } catch (SQLException e) {
                    emit("error", e.getSQLState());
                }
                try (ResultSet rs = count.executeQuery()) {
                    emit("not aborted?");
                } catch (SQLException e) {
                    emit("aborted", e.getSQLState());
                }
                conn.rollback();

                // A batch: many Bind/Execute before one Sync.
                try (PreparedStatement b = conn.prepareStatement("insert into items (n, label) values (?, ?)")) {
                    for (int j = 0; j < 3; j++) {
                        b.setInt(1, 10000 + i * 10 + j);
                        b.setString(2, "batch-" + j);
                        b.addBatch();
                    }
                    emit("batch", Arrays.toString(b.executeBatch()));
                }
                conn.commit();

                // Fetch size: a portal read three rows at a time.
                try (PreparedStatement q = conn.prepareStatement("select owner, n from items order by n")) {
                    q.setFetchSize(3);
                    long total = 0;
                    int rows = 0;
                    try (ResultSet rs = q.executeQuery()) {
                        while (rs.next()) {
                            check(rs.getString(1), "fetch size");
                            total += rs.getLong(2);
                            rows++;
                        }
                    }
                    emit("fetched", rows, total);
                }
                conn.commit();

                // Large objects (FunctionCall through Fastpath), in a transaction.
                LargeObjectManager lom = conn.unwrap(PGConnection.class).getLargeObjectAPI();
                long oid = lom.createLO(LargeObjectManager.READWRITE);
                try (LargeObject lo = lom.open(oid, LargeObjectManager.WRITE)) {
                    lo.write(("large object " + userId + " " + i).getBytes());
                }
                try (LargeObject lo = lom.open(oid, LargeObjectManager.READ)) {
                    emit("large object", new String(lo.read(lo.size())));
                }
                lom.delete(oid);
                conn.commit();

                // Notices arrive as warnings.
                try (Statement st = conn.createStatement()) {
                    st.execute("do $$ begin raise notice 'iteration %', " + i + "; end $$");
                    SQLWarning w = st.getWarnings();
                    emit("notice", w == null ? null : w.getMessage());
                }
                conn.commit();

                // COPY in and out on a table without RLS.
                CopyManager copy = conn.unwrap(PGConnection.class).getCopyAPI();
                StringBuilder data = new StringBuilder();
                for (int j = 0; j < 5; j++) data.append(i * 100 + j).append("\tcopied ").append(j).append('\n');
                emit("copy in", copy.copyIn("copy " + copyTable + " (n, label) from stdin", new StringReader(data.toString())));
                conn.commit();
                ByteArrayOutputStream buf = new ByteArrayOutputStream();
                emit("copy out", copy.copyOut("copy (select n, label from " + copyTable + " order by n) to stdout", buf),
                        buf.size());
                conn.commit();

                // Several statements in one execute.
                try (Statement st = conn.createStatement()) {
                    st.execute("select auth.user_id(); select count(*) from items");
                    try (ResultSet rs = st.getResultSet()) {
                        rs.next();
                        check(rs.getString(1), "multi");
                    }
                    st.getMoreResults();
                    try (ResultSet rs = st.getResultSet()) {
                        rs.next();
                        emit("multi", rs.getLong(1));
                    }
                }
                conn.commit();
            }
            conn.setAutoCommit(true);
            try (Statement st = conn.createStatement();
                    ResultSet rs = st.executeQuery(
                            "select owner, n, label, data, price, meta::text, created from items order by n, label")) {
                while (rs.next()) {
                    check(rs.getString(1), "final listing");
                    emit("final", rs.getString(1), rs.getInt(2), rs.getString(3), rs.getBytes(4), rs.getBigDecimal(5),
                            rs.getString(6), rs.getDate(7));
                }
            }
        }
    }
}
